"""Per-pair augmentation parameters, drawn from a seed so a pair is reproducible anywhere.

Geometry is one similarity transform without rotation, ``p' = scale * p + offset``, in continuous
pixel coordinates (x right, y down, pixel (i, j) covers [i, i+1) x [j, j+1)). The kernel warps the
RGBA with exactly this map and moves the keypoints with it, so mask, keypoints and pixels agree.

Where the render's own frame cuts the figure (a bust, a head shot, a cut-off framing), that edge stays on
the canvas's edge: a photograph's bust ends at the border, it does not float in the scene.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

import numpy as np

from serialgen.compositing.estimator_noise import EstimatorNoise, sample_estimator_noise
from serialgen.config import CompositeSettings


@dataclass(frozen=True)
class Augmentation:
    """Everything random about one pair (stored as JSON in ``pairs.augmentation``)."""

    scale: float
    offset: tuple[float, float]             # (tx, ty) pixels on the canvas
    cut_side: str | None                    # left/right/top/bottom when the frame cuts the character
    background_crop: tuple[float, float, float]        # (u, v, size): place in the free range, share of max crop
    background_flip: bool
    background_gain: tuple[float, float, float]        # per-channel gain of the background (colour cast)
    background_saturation: float
    shadow_offset: tuple[float, float]      # pixels
    shadow_sigma: float                     # blur, pixels
    shadow_opacity: float                   # 0 = no shadow
    brightness: float                       # global, after compositing
    contrast: float
    estimator: EstimatorNoise | None = None  # segmenter/pose-estimator errors on the input side; None: exact

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def pair_rng(seed: int, pair_id: str, epoch: int = 0) -> np.random.Generator:
    """A generator that depends only on (seed, pair, epoch): batching and workers do not matter."""
    digest = int.from_bytes(hashlib.sha256(pair_id.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, digest, epoch])


def alpha_bbox(alpha: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), exclusive ends, of the pixels with alpha > 0; None for an empty alpha."""
    cols, rows = np.flatnonzero(alpha.any(axis=0)), np.flatnonzero(alpha.any(axis=1))
    if cols.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def frame_edges(bbox: tuple[int, int, int, int], canvas: tuple[int, int]) -> frozenset[str]:
    """The sides of the frame (left/right/top/bottom) that the figure's box reaches: where the render cut it."""
    width, height = canvas
    x0, y0, x1, y1 = bbox
    return frozenset(side for side, cut in (("left", x0 <= 0), ("right", x1 >= width), ("top", y0 <= 0),
                                            ("bottom", y1 >= height)) if cut)


def sample_augmentation(rng: np.random.Generator, bbox: tuple[int, int, int, int],
                        canvas: tuple[int, int], cfg: CompositeSettings) -> Augmentation:
    """Draw one pair's augmentation for a character occupying ``bbox`` on a render of the canvas's size
    (width, height); sides of ``bbox`` on the render's border stay on the canvas's border."""
    width, height = canvas
    x0, y0, x1, y1 = bbox
    bw, bh = x1 - x0, y1 - y0
    edges = frame_edges(bbox, canvas)
    cut_side = None
    if rng.random() < cfg.crop_probability:
        cut_side = ("left", "right", "top", "bottom")[rng.integers(4)]
    # Relative to the character, not the render frame: renders may frame the figure loosely.
    scale = float(rng.uniform(*cfg.scale_range)) * height / bh
    cut = float(rng.uniform(0.1, cfg.max_cut))  # share of the figure pushed out on the cut side
    axes = (("left", "right", width, bw), ("top", "bottom", height, bh))
    if cut_side is None:  # the whole character must fit, except along an axis the render already cut on both sides
        scale = min([scale] + [extent / size for low, high, extent, size in axes if _out(edges, None, low, high) < 2])
    for low, high, extent, size in axes:
        if _out(edges, cut_side, low, high) == 2:  # past both borders: cover the canvas, and by the cut beyond it
            scale = max(scale, extent / size / (1 - cut if cut_side in (low, high) else 1))
    sw, sh = scale * bw, scale * bh
    # Where the scaled bbox's left/top edge goes: inside the frame, on its border, or pushed out on the cut side.
    left = _place(rng, width, sw, edges, cut_side, cut, "left", "right")
    top = _place(rng, height, sh, edges, cut_side, cut, "top", "bottom")
    offset = (left - scale * x0, top - scale * y0)

    j = cfg.background_jitter
    shadow = rng.random() < cfg.shadow_probability
    aug = Augmentation(
        scale=scale,
        offset=(float(offset[0]), float(offset[1])),
        cut_side=cut_side,
        background_crop=(float(rng.random()), float(rng.random()), float(rng.uniform(0.5, 1.0))),
        background_flip=bool(rng.random() < 0.5),
        background_gain=tuple(float(g) for g in rng.uniform(1 - j, 1 + j, size=3)),
        background_saturation=float(rng.uniform(1 - 2 * j, 1 + j)),
        shadow_offset=(float(rng.uniform(-0.08, 0.08) * width), float(rng.uniform(0.0, 0.05) * height)),
        shadow_sigma=float(rng.uniform(0.01, 0.04) * min(width, height)),
        shadow_opacity=float(rng.uniform(0.3, 0.6)) if shadow else 0.0,
        brightness=float(rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)),
        contrast=float(rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)),
    )
    # Drawn last, so pairs made before estimator noise existed keep their other parameters.
    if rng.random() < cfg.estimator_noise_probability:
        aug = replace(aug, estimator=sample_estimator_noise(rng, canvas, cfg))
    return aug


def _out(edges: frozenset[str], cut_side: str | None, low_side: str, high_side: str) -> int:
    """How many sides of one axis the figure leaves the canvas by (render edge or drawn cut)."""
    return sum(side in edges or side == cut_side for side in (low_side, high_side))


def _place(rng: np.random.Generator, extent: float, size: float, edges: frozenset[str], cut_side: str | None,
           cut: float, low_side: str, high_side: str) -> float:
    """The leading edge of a ``size``-long object on an axis of length ``extent``."""
    if cut_side == low_side:
        return -cut * size
    if cut_side == high_side:
        return extent - size + cut * size
    if _out(edges, cut_side, low_side, high_side) == 2:  # the render cut both sides (the scale made size >= extent)
        return float(rng.uniform(extent - size, 0.0)) if size > extent else 0.0
    if low_side in edges:
        return 0.0
    if high_side in edges:
        return extent - size
    if size >= extent:  # cut on the other axis but too large on this one: centre it
        return (extent - size) / 2
    return float(rng.uniform(0.0, extent - size))


def transform_keypoints(keypoints: np.ndarray, scale: np.ndarray, offset: np.ndarray,
                        canvas: tuple[int, int]) -> np.ndarray:
    """(B, 18, 3) keypoints moved by ``p' = scale * p + offset``; points leaving the canvas get visibility 0."""
    kp = np.array(keypoints, dtype=np.float32, copy=True)
    scale, offset = np.asarray(scale, np.float32), np.asarray(offset, np.float32)
    kp[..., :2] = kp[..., :2] * scale[:, None, None] + offset[:, None, :]
    width, height = canvas
    inside = (kp[..., 0] >= 0) & (kp[..., 0] < width) & (kp[..., 1] >= 0) & (kp[..., 1] < height)
    kp[..., 2] = np.where(inside & (kp[..., 2] > 0), kp[..., 2], 0.0)
    return kp
