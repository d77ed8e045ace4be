"""Test data for the composite stage: `renders` and `standards` rows drawn with numpy.

A figure is antialiased discs (joints, head) and capsules (limbs, torso) around COCO-18 keypoints at
known body points, so the transformed alpha can be checked against the transformed keypoints.
Also used by benchmarks/bench_composite.py.
"""

from __future__ import annotations

import numpy as np

from serialgen.pose_drawing import draw_pose
from serialgen.storage import Lake
from serialgen.storage.images import encode_mask, encode_png
from serialgen.synthetic.skeleton import LIMBS

#: A standing figure on a unit canvas (x, y), COCO-18 order.
STANDING = np.array([
    (0.50, 0.12), (0.50, 0.22), (0.40, 0.23), (0.35, 0.37), (0.33, 0.50), (0.60, 0.23), (0.65, 0.37),
    (0.67, 0.50), (0.44, 0.52), (0.43, 0.70), (0.43, 0.88), (0.56, 0.52), (0.57, 0.70), (0.57, 0.88),
    (0.48, 0.10), (0.52, 0.10), (0.46, 0.11), (0.54, 0.11),
], np.float32)


def figure_keypoints(rng: np.random.Generator, width: int, height: int, jitter: float = 0.03) -> np.ndarray:
    """(18, 3) keypoints in pixels: the standing figure, each point jittered (a 'pose')."""
    xy = (STANDING + rng.normal(0, jitter, STANDING.shape)) * (width, height)
    return np.concatenate([xy, np.ones((18, 1))], axis=1).astype(np.float32)


def disc_alpha(keypoints: np.ndarray, width: int, height: int, radius: float) -> np.ndarray:
    """Antialiased discs of ``radius`` around each visible keypoint, float32 HxW in [0, 1].

    Pixel (i, j) is sampled at its centre (i + 0.5, j + 0.5): the convention of the kernel.
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    alpha = np.zeros((height, width), np.float32)
    for x, y, v in keypoints:
        if v > 0:
            alpha = np.maximum(alpha, np.clip(radius + 0.5 - np.hypot(xx - x, yy - y), 0, 1))
    return alpha


def figure_rgba(keypoints: np.ndarray, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """An RGBA character: limb capsules and joint discs in per-character colours, HxWx4 uint8."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    thickness = 0.035 * width
    alpha = disc_alpha(keypoints, width, height, radius=thickness * 1.2)
    rgb = np.zeros((height, width, 3), np.float32)
    colours = rng.uniform(0.1, 0.9, (len(LIMBS), 3))
    for (a, b), colour in zip(LIMBS, colours):
        p, q = keypoints[a, :2], keypoints[b, :2]
        d = q - p
        t = np.clip(((xx - p[0]) * d[0] + (yy - p[1]) * d[1]) / max(float(d @ d), 1e-6), 0, 1)
        dist = np.hypot(xx - (p[0] + t * d[0]), yy - (p[1] + t * d[1]))
        limb = np.clip(thickness + 0.5 - dist, 0, 1)
        rgb = np.where(limb[..., None] > 0, colour, rgb)
        alpha = np.maximum(alpha, limb)
    rgb = np.where(rgb.sum(-1, keepdims=True) == 0, rng.uniform(0.2, 0.8, 3), rgb)
    return np.dstack([(rgb * 255).round(), (alpha * 255).round()]).astype(np.uint8)


def render_row(character_id: str, pose_id: str, view_id: int, rgba: np.ndarray, keypoints: np.ndarray) -> dict:
    height, width = rgba.shape[:2]
    return {
        "character_id": character_id, "pose_id": pose_id, "view_id": view_id,
        "rgba": encode_png(rgba), "mask": encode_mask(rgba[..., 3] >= 128), "keypoints": keypoints.tolist(),
        "pose_image": encode_png(draw_pose(keypoints, width, height)), "camera": [0.0] * 14,
        "expression": "neutral", "framing": "full", "width": width, "height": height, "seed": 0, "render_seconds": 0.0,
    }


def standard_row(character_id: str, width: int, height: int, rng: np.random.Generator) -> dict:
    keypoints = figure_keypoints(rng, width, height, jitter=0.0)
    rgba = figure_rgba(keypoints, width, height, rng)
    a = rgba[..., 3:].astype(np.float32) / 255
    image = (rgba[..., :3] * a + 255 * (1 - a)).round().astype(np.uint8)
    return {
        "character_id": character_id, "image": encode_png(image), "mask": encode_mask(rgba[..., 3] >= 128),
        "keypoints": keypoints.tolist(), "pose_image": encode_png(draw_pose(keypoints, width, height)),
        "width": width, "height": height,
    }


def write_characters(lake: Lake, n_characters: int, poses: int, width: int = 64, height: int = 96,
                     seed: int = 0, run_id: str = "test-render") -> list[str]:
    """``n_characters`` x ``poses`` renders (one view) and one standard each; returns the character ids."""
    rng = np.random.default_rng(seed)
    ids = [f"char{seed}-{i:03d}" for i in range(n_characters)]
    renders, standards = [], []
    for cid in ids:
        standards.append(standard_row(cid, width, height, rng))
        for p in range(poses):
            kp = figure_keypoints(rng, width, height)
            renders.append(render_row(cid, f"pose{p:03d}", 0, figure_rgba(kp, width, height, rng), kp))
    lake.upsert("standards", standards, run_id)
    lake.upsert("renders", renders, run_id)
    return ids
