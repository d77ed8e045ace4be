"""A preview grid of pairs: one row per pair, input | background mask | reference pose | target | target pose."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image


def pair_grid(pairs: Sequence[dict[str, Any]], height: int = 128) -> np.ndarray | None:
    """HxWx3 uint8 grid of decoded pairs (the arrays of ``torch_reader.decode_pair``); None if empty."""
    rows = []
    for p in pairs:
        mask = np.repeat((np.asarray(p["background_mask"], np.uint8) * 255)[..., None], 3, axis=2)
        tiles = [p["input_image"], mask, p["reference_pose_image"], p["target_image"], p["target_pose_image"]]
        rows.append(np.hstack([_fit(t, height) for t in tiles]))
    if not rows:
        return None
    width = max(r.shape[1] for r in rows)
    return np.vstack([np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows])


def _fit(image: np.ndarray, height: int) -> np.ndarray:
    h, w = image.shape[:2]
    width = max(1, round(w * height / h))
    tile = np.asarray(Image.fromarray(np.asarray(image, np.uint8)).resize((width, height), Image.Resampling.BILINEAR))
    return np.pad(tile, ((0, 0), (0, 2), (0, 0)), constant_values=255)
