"""Character thumbnails: Cycles on CPU, a few samples (the assets stage tiles them into a contact sheet)."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np


def _look_at(obj, target) -> None:
    from mathutils import Vector

    direction = Vector(target) - obj.location
    obj.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()


def render_thumbnail(meshes, width: int = 96, height: int = 144, samples: int = 4) -> bytes:
    """A PNG (RGBA, transparent background) of ``meshes`` seen from the front, slightly from the side."""
    import bpy

    scene = bpy.context.scene
    points = np.array([(o.matrix_world @ v.co)[:] for o in meshes for v in o.data.vertices] or [(0.0, 0.0, 0.0)])
    lo, hi = points.min(0), points.max(0)
    centre, tall = (lo + hi) / 2, max(hi[2] - lo[2], 1e-3)
    cam_data = bpy.data.cameras.new("thumb_cam")
    cam_data.lens, cam_data.sensor_width = 50.0, 36.0
    fov = 2 * math.atan(cam_data.sensor_width / 2 / cam_data.lens) * min(1.0, height / width)
    distance = 0.62 * tall / math.tan(fov / 2)
    cam = bpy.data.objects.new("thumb_cam", cam_data)
    scene.collection.objects.link(cam)
    added = [cam]
    cam.location = (centre[0] + 0.35 * distance, centre[1] - distance, centre[2] + 0.1 * tall)
    _look_at(cam, centre)
    scene.camera = cam
    for name, energy, loc in (("key", 3.0, (2, -3, 4)), ("fill", 1.0, (-3, -2, 2))):
        light = bpy.data.objects.new(f"thumb_{name}", bpy.data.lights.new(name, "SUN"))
        added.append(light)
        light.data.energy = energy
        scene.collection.objects.link(light)
        light.location = loc
        _look_at(light, centre)
    world = scene.world or bpy.data.worlds.new("thumb_world")
    scene.world = world
    world.color = (0.6, 0.6, 0.6)
    render = scene.render
    render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    render.resolution_x, render.resolution_y, render.resolution_percentage = width, height, 100
    render.film_transparent = True
    render.image_settings.file_format = "PNG"
    render.image_settings.color_mode = "RGBA"
    render.threads_mode, render.threads = "FIXED", 1
    with tempfile.TemporaryDirectory() as tmp:
        render.filepath = str(Path(tmp) / "thumb.png")
        bpy.ops.render.render(write_still=True)
        data = Path(render.filepath).read_bytes()
    for obj in added:
        bpy.data.objects.remove(obj)
    return data
