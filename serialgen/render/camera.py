"""Cameras: random perspective viewpoints around a posed character, and the standard front view.

Characters stand on z=0 facing -Y (Blender convention), so azimuth 0 looks at the face.
The standard camera is orthographic, so the head-top and chin rows are exact for every character.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import bpy
import numpy as np
from mathutils import Vector

SENSOR_WIDTH_MM = 36.0


@dataclass(frozen=True)
class Viewpoint:
    """A random viewpoint: where the camera sits relative to the character and its lens."""

    azimuth_deg: float      # around the vertical axis; 0 = in front of the character
    elevation_deg: float    # above (+) or below (-) the look-at point
    distance_scale: float   # camera distance as a multiple of the distance that just frames the figure
    focal_mm: float         # lens, 36 mm sensor


def sample_viewpoint(rng: np.random.Generator) -> Viewpoint:
    """Azimuth over the full circle, elevation -15..40 deg, distance 0.95..1.5 x fit (may crop), lens 24..85 mm."""
    return Viewpoint(
        azimuth_deg=float(rng.uniform(0.0, 360.0)),
        elevation_deg=float(rng.uniform(-15.0, 40.0)),
        distance_scale=float(rng.uniform(0.95, 1.5)),
        focal_mm=float(rng.uniform(24.0, 85.0)),
    )


#: Canonical bones whose joints a close-up frames: (bones framed head and tail, bones framed at their head only).
CLOSE_UPS = {
    "head": (("Head", "HeadTop_End"), ()),
    "bust": (("Head", "HeadTop_End", "Neck", "Spine2", "LeftShoulder", "RightShoulder"), ("LeftArm", "RightArm")),
}
#: Which side a cut-off removes, and how often (legs out of frame is the common photo).
CUT_SIDES = (("bottom", 0.6), ("top", 0.1), ("left", 0.15), ("right", 0.15))
#: Top and side cut-offs remove at most this share: beyond it little but a hand or the feet would remain.
MAX_OTHER_CUT = 0.6


@dataclass(frozen=True)
class Framing:
    """What a render shows: the whole figure, a bust or a head close-up, or a figure cut off by the frame."""

    mode: str                 # full | bust | head | cutoff
    cut_side: str | None = None
    cut: float = 0.0          # share of the figure's extent out of frame on ``cut_side`` (asked, then measured)

    @property
    def fit(self) -> str:
        """The image axes the kept part must fit: a cut-off fits only the cut axis (the rest may overflow)."""
        if self.mode != "cutoff":
            return "xy"
        return "y" if self.cut_side in ("top", "bottom") else "x"

    def __str__(self) -> str:
        return f"cutoff-{self.cut_side}-{self.cut:.2f}" if self.mode == "cutoff" else self.mode


def sample_framing(rng: np.random.Generator, bust: float, head: float, cutoff: float, max_cut: float) -> Framing:
    """Bust, head and cut-off framings with the given shares (the rest full figures)."""
    u = rng.random()
    if u < bust:
        return Framing("bust")
    if u < bust + head:
        return Framing("head")
    if u < bust + head + cutoff:
        sides, weights = zip(*CUT_SIDES)
        side = str(rng.choice(sides, p=weights))
        return Framing("cutoff", side, float(rng.uniform(0.2, max_cut if side == "bottom" else min(max_cut, MAX_OTHER_CUT))))
    return Framing("full")


def frame_view(view: Viewpoint, framing: Framing) -> Viewpoint:
    """Close-ups look from the front half at eye level (a face from behind or above standardizes nothing);
    cut-offs frame the kept part tightly."""
    if framing.mode in CLOSE_UPS:
            return replace(view, azimuth_deg=(view.azimuth_deg / 360.0 * 200.0 - 100.0) % 360.0,
                       elevation_deg=(view.elevation_deg + 15.0) / 55.0 * 35.0 - 10.0,
                       distance_scale=0.95 + (view.distance_scale - 0.95) / 0.55 * 0.2)
    if framing.mode == "cutoff":  # tight on the part kept, so the rest is pushed out
        return replace(view, distance_scale=0.9 + (view.distance_scale - 0.95) / 0.55 * 0.1)
    return view


def kept_points(points: np.ndarray, framing: Framing, view: Viewpoint) -> np.ndarray:
    """The part of ``points`` a cut-off frames: the figure minus ``cut`` of its extent on ``cut_side``,
    measured along the image axes of a camera looking from ``view``."""
    if framing.mode != "cutoff":
        return points
    az, el = math.radians(view.azimuth_deg), math.radians(view.elevation_deg)
    forward = -Vector((math.sin(az) * math.cos(el), -math.cos(az) * math.cos(el), math.sin(el)))
    axes = np.asarray(forward.to_track_quat("-Z", "Y").to_matrix(), np.float64)   # columns: right, up, back
    local = np.asarray(points, np.float64) @ axes
    t = {"bottom": local[:, 1], "top": -local[:, 1], "left": local[:, 0], "right": -local[:, 0]}[framing.cut_side]
    return points[t >= t.min() + framing.cut * np.ptp(t)]


def measured_cut(cam: bpy.types.Object, framing: Framing, joints: np.ndarray) -> Framing:
    """``framing`` with ``cut`` replaced by the share of the joints' image extent beyond the cut side."""
    if framing.mode != "cutoff":
        return framing
    scene = bpy.context.scene
    width, height = scene.render.resolution_x, scene.render.resolution_y
    axes = np.asarray(cam.rotation_euler.to_matrix(), np.float64)
    local = (np.asarray(joints, np.float64) - np.asarray(cam.location)) @ axes
    depth = np.maximum(-local[:, 2], 1e-6)
    tan_x, tan_y = _half_fov_tangents(cam.data.lens, width, height)
    u = 0.5 + local[:, 0] / (depth * 2 * tan_x)
    v = 0.5 - local[:, 1] / (depth * 2 * tan_y)          # image rows: 0 at the top
    beyond = {"left": -u.min(), "right": u.max() - 1, "top": -v.min(), "bottom": v.max() - 1}[framing.cut_side]
    extent = np.ptp(u) if framing.cut_side in ("left", "right") else np.ptp(v)
    return replace(framing, cut=float(np.clip(beyond / max(extent, 1e-9), 0.0, 1.0)))


def _half_fov_tangents(focal_mm: float, width: int, height: int) -> tuple[float, float]:
    """tan of the half field of view across and up the image (AUTO sensor fit: the sensor spans the longer side)."""
    tan_long = SENSOR_WIDTH_MM / (2 * focal_mm)
    return (tan_long, tan_long * height / width) if width >= height else (tan_long * width / height, tan_long)


def ensure_camera() -> bpy.types.Object:
    """The scene's camera, created on first use."""
    scene = bpy.context.scene
    if scene.camera is None:
        cam = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
        scene.collection.objects.link(cam)
        scene.camera = cam
    scene.camera.data.sensor_width = SENSOR_WIDTH_MM
    scene.camera.data.sensor_fit = "AUTO"
    return scene.camera


def look_at(cam: bpy.types.Object, location: Vector, target: Vector) -> None:
    cam.location = location
    cam.rotation_euler = (target - location).to_track_quat("-Z", "Y").to_euler()


def place_viewpoint(cam: bpy.types.Object, view: Viewpoint, target: Vector, points: np.ndarray,
                    fit: str = "xy") -> None:
    """Aim a perspective camera at ``target`` from ``view``, at ``distance_scale`` x the distance that frames
    ``points`` across (``x``) and/or up (``y``) the image."""
    scene = bpy.context.scene
    cam.data.type = "PERSP"
    cam.data.sensor_fit = "AUTO"
    cam.data.lens = view.focal_mm
    az, el = math.radians(view.azimuth_deg), math.radians(view.elevation_deg)
    offset = Vector((math.sin(az) * math.cos(el), -math.cos(az) * math.cos(el), math.sin(el)))
    look_at(cam, target + offset, target)
    # Points in camera axes relative to the target; the camera looks down -Z from distance d along +Z.
    axes = np.asarray(cam.rotation_euler.to_matrix(), np.float64)  # matrix_world is stale until a depsgraph update
    local = (np.asarray(points, np.float64) - np.asarray(target)) @ axes
    width, height = scene.render.resolution_x, scene.render.resolution_y
    tan_x, tan_y = _half_fov_tangents(view.focal_mm, width, height)
    needed = {"x": np.max(local[:, 2] + np.abs(local[:, 0]) / tan_x),
              "y": np.max(local[:, 2] + np.abs(local[:, 1]) / tan_y)}
    distance = view.distance_scale * float(max(needed[axis] for axis in fit))
    look_at(cam, target + distance * offset, target)
    extent = float(np.max(np.linalg.norm(local, axis=1)))
    cam.data.clip_start = 0.01 * extent
    cam.data.clip_end = distance + 10.0 * extent


def place_standard(cam: bpy.types.Object, head_top: Vector, chin: Vector, top_row: float, chin_row: float) -> None:
    """An orthographic front camera with the head top on row ``top_row`` and the chin on ``chin_row``.

    Rows are fractions of the image height from the top; the face is centred horizontally.
    """
    height_world = (head_top.z - chin.z) / (chin_row - top_row)   # world units the frame height spans
    cam.data.type = "ORTHO"
    cam.data.sensor_fit = "VERTICAL"
    cam.data.ortho_scale = height_world
    centre_z = head_top.z - (0.5 - top_row) * height_world
    look_at(cam, Vector((chin.x, chin.y - 10.0 * height_world, centre_z)), Vector((chin.x, chin.y, centre_z)))
    cam.data.clip_start = 0.01 * height_world   # fixed, whatever the previous viewpoint left
    cam.data.clip_end = 20.0 * height_world


def camera_vector(cam: bpy.types.Object) -> list[float]:
    """The ``renders.camera`` column: 3x4 camera-to-world matrix (row major), focal length and sensor width in mm."""
    m = cam.matrix_world
    return [float(m[r][c]) for r in range(3) for c in range(4)] + [float(cam.data.lens), float(cam.data.sensor_width)]
