"""Masks and poses as inference sees them: estimator-like errors on exact training labels.

At inference the reference mask comes from a segmenter (rembg) and the reference pose from a pose
estimator; in training both are exact. For a configurable share of pairs the composer replaces them
with what those tools typically return, so the standardizer learns to cope with their mistakes:

* mask: the silhouette grown or shrunk by a few pixels, holes where the segmenter took the character
  for background, and a cast shadow counted as foreground;
* keypoints: a confidence per point (lower when the point is occluded, near the frame edge, or the
  figure is small) and points below the detection threshold dropped -- occluded points whose
  confidence clears it are reported at their hidden position, as estimators do; the rest jittered in
  proportion to the figure; left and right swapped on back views (estimators assume a front view).

Pure numpy/scipy, drawn from the pair's seed: the static stage and the dynamic loader get the same errors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt

from serialgen.config import CompositeSettings

#: COCO-18 (right, left) index pairs an estimator confuses on a back view.
LEFT_RIGHT = ((2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13), (14, 15), (16, 17))
#: Face points (nose, eyes, ears) and extremities (wrists, ankles): small parts, detected less surely.
SMALL_PARTS = frozenset({0, 4, 7, 10, 13, 14, 15, 16, 17})
#: Neighbours along the skeleton (COCO-18): an occluded neighbour means the point is likely half hidden.
NEIGHBOURS = {0: (1, 14, 15), 1: (0, 2, 5, 8, 11), 2: (1, 3), 3: (2, 4), 4: (3,), 5: (1, 6), 6: (5, 7), 7: (6,),
              8: (1, 9), 9: (8, 10), 10: (9,), 11: (1, 12), 12: (11, 13), 13: (12,), 14: (0, 16), 15: (0, 17),
              16: (14,), 17: (15,)}
#: A keypoint counts as detected above this confidence (DWPose's usual 0.3).
DETECTION_THRESHOLD = 0.3


@dataclass(frozen=True)
class EstimatorNoise:
    """The segmenter and pose-estimator errors of one pair (stored inside ``pairs.augmentation``)."""

    seed: int                   # hole placement and per-keypoint draws
    mask_grow: float            # pixels: > 0 dilates the mask, < 0 erodes it
    mask_holes: int             # blobs of the character called background
    shadow_threshold: float     # shadow darkness above which it counts as foreground (> 1: never)
    keypoint_jitter: float      # standard deviation, as a share of the figure's height
    swap_left_right: bool       # on a back view, report left as right


def sample_estimator_noise(rng: np.random.Generator, canvas: tuple[int, int],
                           cfg: CompositeSettings) -> EstimatorNoise:
    """Draw one pair's estimator errors; the sizes scale with the canvas."""
    grow = cfg.mask_grow_max * min(canvas)
    return EstimatorNoise(
        seed=int(rng.integers(2**31)),
        mask_grow=float(rng.uniform(-grow, grow)),
        mask_holes=int(rng.integers(0, cfg.mask_holes_max + 1)),
        shadow_threshold=float(rng.uniform(0.1, 0.3)) if rng.random() < 0.5 else 2.0,
        keypoint_jitter=float(rng.uniform(0.0, cfg.keypoint_jitter_max)),
        swap_left_right=bool(rng.random() < cfg.left_right_swap_probability),
    )


def degrade_mask(background: np.ndarray, shadow: np.ndarray, noise: EstimatorNoise) -> np.ndarray:
    """A segmenter-like background mask (True = background) from the exact one and the cast shadow."""
    foreground = ~background | (shadow > noise.shadow_threshold)
    if noise.mask_grow >= 0.5:
        foreground = distance_transform_edt(~foreground) <= noise.mask_grow
    elif noise.mask_grow <= -0.5:
        foreground = distance_transform_edt(foreground) > -noise.mask_grow
    rows, cols = np.nonzero(foreground)
    if noise.mask_holes and rows.size:
        rng = np.random.default_rng([noise.seed, 1])
        extent = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
        yy, xx = np.ogrid[:background.shape[0], :background.shape[1]]
        for _ in range(noise.mask_holes):
            centre = rng.integers(rows.size)
            ry, rx = rng.uniform(0.02, 0.07, size=2) * extent
            foreground &= ((yy - rows[centre]) / ry) ** 2 + ((xx - cols[centre]) / rx) ** 2 > 1
    return ~foreground


def confidence(keypoints: np.ndarray, known: np.ndarray, canvas: tuple[int, int],
               rng: np.random.Generator) -> np.ndarray:
    """(18,) estimator-like confidences of exact keypoints (visibility 0/1) on a ``canvas`` (width, height).

    Visible points start near 0.9 and lose confidence when a skeleton neighbour is occluded, near the
    frame edge and, for small parts, when the figure is small; occluded points sit near 0.15 (so a few
    are still reported); points that are unknown or outside the frame get 0.
    """
    width, height = canvas
    xy, visible = keypoints[:, :2], keypoints[:, 2] > 0
    inside = known & (xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)
    seen = xy[visible] if visible.sum() >= 2 else xy[inside]
    figure = float(np.ptp(seen[:, 1]) if len(seen) >= 2 else 0.1 * height) or 0.1 * height
    conf = np.where(visible, 0.9, 0.15)
    half_hidden = np.array([any(not visible[j] and inside[j] for j in NEIGHBOURS[i]) for i in range(18)])
    conf = conf - 0.25 * half_hidden
    edge = np.minimum.reduce([xy[:, 0], width - xy[:, 0], xy[:, 1], height - xy[:, 1]])
    conf = conf * np.clip(edge / (0.04 * figure + 1e-6), 0.3, 1.0)
    small = np.array([i in SMALL_PARTS for i in range(18)])
    conf = conf * np.where(small, np.clip(figure / (0.35 * height), 0.3, 1.0), 1.0)
    conf = conf + rng.normal(0.0, 0.12, 18)
    return np.where(inside, np.clip(conf, 0.0, 1.0), 0.0)


def degrade_keypoints(keypoints: np.ndarray, known: np.ndarray, canvas: tuple[int, int],
                      noise: EstimatorNoise) -> np.ndarray:
    """Pose-estimator-like (18, 3) keypoints from exact ones (``known``: the rig has the point)."""
    rng = np.random.default_rng([noise.seed, 2])
    kp = np.array(keypoints, np.float32, copy=True)
    detected = confidence(kp, known, canvas, rng) > DETECTION_THRESHOLD
    visible_y = kp[kp[:, 2] > 0, 1]
    figure = float(np.ptp(visible_y)) if visible_y.size >= 2 else 0.1 * canvas[1]
    kp[:, :2] += rng.normal(0.0, noise.keypoint_jitter * figure, (18, 2))
    kp[:, 0] = np.clip(kp[:, 0], 0, canvas[0] - 1e-3)
    kp[:, 1] = np.clip(kp[:, 1], 0, canvas[1] - 1e-3)
    kp[:, 2] = detected
    kp[~detected, :2] = 0.0
    if noise.swap_left_right and is_back_view(keypoints, known):
        right, left = (list(side) for side in zip(*LEFT_RIGHT))
        kp[right + left] = kp[left + right]
    return kp


def is_back_view(keypoints: np.ndarray, known: np.ndarray) -> bool:
    """The figure faces away: its right shoulder is on the image's right (exact positions, hidden or not)."""
    if not (known[2] and known[5]):
        return False
    right, left = keypoints[2, :2], keypoints[5, :2]
    return bool(right[0] - left[0] > 0.25 * np.hypot(*(right - left)))
