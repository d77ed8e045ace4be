"""The canonical standard skeleton: the one target pose every character is standardized to.

The paper's standard view is a front-facing A-pose with the face at fixed rows. Rather than the
skeleton of whichever character came first, the target is defined here, in head heights below the
head top (y) and from the body's centre line (x, the character's right on the image's left), with
adult proportions of 7.5 heads and arms ``arm_angle`` degrees below horizontal. The head spans the
rows ``head_top``..``chin`` of the frame (the render stage's standard-view rows), so a face always
lands at the same place.

Trained from a lake, a standardizer's target is instead :func:`mean_skeleton` of the training characters'
rendered standard views: the render stage's frame and proportions, measured rather than assumed. Either
way one skeleton, drawn once at the model's size, is the target of every pair in training, validation,
the ablation and inference; it is saved with each standardizer (``standard_keypoints.json``).
"""

from __future__ import annotations

import math

import numpy as np

from serialgen.storage.schemas import KEYPOINT_NAMES, NUM_KEYPOINTS

#: COCO-18 points of the trunk and head as (x, y) in head heights; limbs are added from the angles below.
_HEAD_AND_TRUNK = {
    "nose": (0.0, 0.62), "neck": (0.0, 1.25), "r_shoulder": (-0.85, 1.4), "l_shoulder": (0.85, 1.4),
    "r_hip": (-0.5, 3.9), "r_knee": (-0.5, 5.6), "r_ankle": (-0.5, 7.3),
    "l_hip": (0.5, 3.9), "l_knee": (0.5, 5.6), "l_ankle": (0.5, 7.3),
    "r_eye": (-0.2, 0.45), "l_eye": (0.2, 0.45), "r_ear": (-0.42, 0.5), "l_ear": (0.42, 0.5),
}
UPPER_ARM, FOREARM = 1.3, 1.1  # head heights


def canonical_skeleton(width: int, height: int, head_top: float = 0.06, chin: float = 0.18,
                       arm_angle: float = 45.0) -> np.ndarray:
    """(18, 3) float32 COCO-18 keypoints (x, y pixels, visibility 1) of the standard A-pose in a ``width`` x ``height`` frame."""
    points = dict(_HEAD_AND_TRUNK)
    down, out = math.sin(math.radians(arm_angle)), math.cos(math.radians(arm_angle))
    for side, sign in (("r", -1.0), ("l", 1.0)):
        sx, sy = points[f"{side}_shoulder"]
        points[f"{side}_elbow"] = (sx + sign * UPPER_ARM * out, sy + UPPER_ARM * down)
        points[f"{side}_wrist"] = (sx + sign * (UPPER_ARM + FOREARM) * out, sy + (UPPER_ARM + FOREARM) * down)
    head = (chin - head_top) * height
    xy = np.array([points[name] for name in KEYPOINT_NAMES], np.float32) * head
    xy += (width / 2, head_top * height)
    return np.concatenate([xy, np.ones((NUM_KEYPOINTS, 1), np.float32)], 1)


def mean_skeleton(keypoints: np.ndarray, sizes: np.ndarray, width: int, height: int) -> np.ndarray:
    """(18, 3) mean of N skeletons (N, 18, 3) drawn in frames of ``sizes`` (N, 2: width, height), rescaled to a
    ``width`` x ``height`` frame; a point is visible where it is in at least half of them."""
    keypoints = np.asarray(keypoints, np.float32).reshape(-1, NUM_KEYPOINTS, 3)
    scale = np.array([width, height], np.float32) / np.asarray(sizes, np.float32).reshape(-1, 1, 2)
    visible = keypoints[..., 2] > 0
    xy = keypoints[..., :2] * scale
    mean = (xy * visible[..., None]).sum(0) / np.maximum(visible.sum(0), 1)[:, None]
    return np.concatenate([mean, (visible.mean(0) >= 0.5)[:, None]], 1).astype(np.float32)
