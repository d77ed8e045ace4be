"""A preview grid of pairs: one row per pair, input | background mask | reference pose | target | target pose."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from serialgen.imaging import fit_height, grid


def pair_grid(pairs: Sequence[dict[str, Any]], height: int = 128) -> np.ndarray | None:
    """HxWx3 uint8 grid of decoded pairs (the arrays of ``torch_reader.decode_pair``); None if empty."""
    rows = [[fit_height(t, height, Image.Resampling.BILINEAR) for t in
             (p["input_image"], np.asarray(p["background_mask"], np.uint8) * 255, p["reference_pose_image"],
              p["target_image"], p["target_pose_image"])] for p in pairs]
    return grid(rows, gutter=2) if rows else None
