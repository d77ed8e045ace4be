"""OpenPose pose images from COCO-18 keypoints, drawn the way ControlNet/DWPose users expect (numpy/PIL only).

Mirrors ``controlnet_aux.open_pose.util.draw_bodypose``: black canvas, each limb a filled ellipse in
60 % of its OpenPose colour, each joint a full-colour disc on top. Stick width and joint radius scale
with the canvas (4 px at 512 px, as a detector draws on an image of that size), not with the figure.
Used by the render stage, and by the composite and standardize stages to redraw transformed poses.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from serialgen.storage.images import on_white
from serialgen.synthetic.skeleton import COLORS, LIMBS

#: Stick half-width and joint radius in pixels at a 512-pixel short side (controlnet_aux's constants).
STICK_WIDTH_AT_512 = 4.0


def _sizes(width: int, height: int) -> tuple[float, float]:
    scale = min(width, height) / 512.0
    return max(1.0, STICK_WIDTH_AT_512 * scale), max(1.0, STICK_WIDTH_AT_512 * scale)


#: Unit circle of the limb polygons (24 points, like cv2.ellipse2Poly at a 15 degree step).
_CIRCLE = np.stack([np.cos(np.linspace(0, 2 * np.pi, 24, endpoint=False)),
                    np.sin(np.linspace(0, 2 * np.pi, 24, endpoint=False))], axis=1)


def _ellipses(p: np.ndarray, q: np.ndarray, half_width: float) -> np.ndarray:
    """Polygons (n x 24 x 2) of the ellipses spanning p[i]..q[i] with the given half-width."""
    axis = q - p
    length = np.hypot(axis[:, 0], axis[:, 1])
    along = np.where(length[:, None] > 0, axis / np.where(length > 0, length, 1.0)[:, None], [1.0, 0.0])
    across = np.stack([-along[:, 1], along[:, 0]], axis=1)
    return ((p + q) / 2)[:, None] + (_CIRCLE[:, 0] * length[:, None] / 2)[..., None] * along[:, None] \
        + (_CIRCLE[:, 1] * half_width)[None, :, None] * across[:, None]


def draw_pose_on(canvas: Image.Image, keypoints: np.ndarray) -> Image.Image:
    """Draw ``keypoints`` (18 x (x, y, visibility), pixels) onto an RGB PIL image in place; returns it.

    A keypoint with visibility <= 0 is not drawn, nor any limb that touches it; points outside the
    canvas are clipped by it.
    """
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3)
    stick, radius = _sizes(canvas.width, canvas.height)
    draw = ImageDraw.Draw(canvas)
    visible = kp[:, 2] > 0
    limbs = [(a, b, color) for (a, b), color in zip(LIMBS, COLORS) if visible[a] and visible[b]]
    if limbs:
        ends = np.array([(a, b) for a, b, _ in limbs])
        for polygon, (_, _, color) in zip(_ellipses(kp[ends[:, 0], :2], kp[ends[:, 1], :2], stick).tolist(), limbs):
            draw.polygon([tuple(v) for v in polygon], fill=tuple(int(c * 0.6) for c in color))
    for (x, y, v), color in zip(kp, COLORS):
        if v > 0:
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=color)
    return canvas


def draw_pose(keypoints: np.ndarray, width: int, height: int) -> np.ndarray:
    """The OpenPose image of ``keypoints`` on a black ``width`` x ``height`` canvas, HxWx3 uint8 RGB."""
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    return np.asarray(draw_pose_on(canvas, keypoints))


def overlay_pose(image: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """``image`` (RGB or RGBA, drawn over white where transparent) with the pose drawn on top, for contact sheets."""
    return np.asarray(draw_pose_on(Image.fromarray(on_white(image)), keypoints))
