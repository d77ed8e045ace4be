"""Cameras: random perspective viewpoints around a posed character, and the standard front view.

Characters stand on z=0 facing -Y (Blender convention), so azimuth 0 looks at the face.
The standard camera is orthographic, so the head-top and chin rows are exact for every character.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


def place_viewpoint(cam: bpy.types.Object, view: Viewpoint, target: Vector, points: np.ndarray) -> None:
    """Aim a perspective camera at ``target`` from ``view``, at ``distance_scale`` x the distance that frames ``points``."""
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
    tan_long = SENSOR_WIDTH_MM / (2 * view.focal_mm)  # AUTO fit: the sensor spans the longer side
    tan_x, tan_y = (tan_long, tan_long * height / width) if width >= height else (tan_long * width / height, tan_long)
    fit = max(np.max(local[:, 2] + np.abs(local[:, 0]) / tan_x), np.max(local[:, 2] + np.abs(local[:, 1]) / tan_y))
    distance = view.distance_scale * float(fit)
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
    cam.data.clip_end = 20.0 * height_world


def camera_vector(cam: bpy.types.Object) -> list[float]:
    """The ``renders.camera`` column: 3x4 camera-to-world matrix (row major), focal length and sensor width in mm."""
    m = cam.matrix_world
    return [float(m[r][c]) for r in range(3) for c in range(4)] + [float(cam.data.lens), float(cam.data.sensor_width)]
