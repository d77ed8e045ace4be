"""Pose sampling and deduplication (pure numpy).

Two poses are one when every canonical joint rotation of one is within ``threshold`` radians of
the other's (the distance is the largest per-joint angle). Deduplication is greedy in a fixed
order (poses already in the library first, then clips by id and frame), so reruns give the same set.
"""

from __future__ import annotations

import hashlib

import numpy as np


def dedup(candidates: np.ndarray, threshold: float, library: np.ndarray | None = None) -> np.ndarray:
    """Mask of ``candidates`` (N, bones, 4) to keep: farther than ``threshold`` from the library and earlier keeps."""
    cos_half = np.cos(threshold / 2)
    kept = np.zeros((len(candidates) + (0 if library is None else len(library)), *candidates.shape[1:]), np.float32)
    n = 0
    if library is not None and len(library):
        kept[: len(library)] = library
        n = len(library)
    keep = np.zeros(len(candidates), dtype=bool)
    for i, pose in enumerate(candidates.astype(np.float32)):
        if n:
            dots = np.abs(np.einsum("kbj,bj->kb", kept[:n], pose))
            if (dots.min(axis=1) >= cos_half).any():
                continue
        kept[n] = pose
        n += 1
        keep[i] = True
    return keep


def pose_id(motion_id: str, frame: int) -> str:
    """Stable id of frame ``frame`` of clip ``motion_id``."""
    return hashlib.sha256(f"{motion_id}#{frame}".encode()).hexdigest()[:16]
