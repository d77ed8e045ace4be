"""The Blender scene of one character: GLB import, lights and world colour.

One scene per process: importing the next character (:func:`serialgen.assets.characters.import_character`)
resets the scene first (:func:`serialgen.blender_io.reset_scene`).
The three lights are created once per character and every property is set again for each item.
"""

from __future__ import annotations

import os
import tempfile

import bpy
import numpy as np
from mathutils import Vector

from serialgen.assets.characters import Character, CharacterLoadError, import_character

LIGHT_NAMES = ("serialgen_key", "serialgen_fill", "serialgen_rim")


def load_character(glb: bytes) -> Character:
    """Reset the scene and import a normalised character from GLB bytes (via a temporary file the importer needs)."""
    fd, path = tempfile.mkstemp(suffix=".glb")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(glb)
        character = import_character(path)
    finally:
        os.unlink(path)
    if character.armature is None or not character.meshes:
        raise CharacterLoadError("no armature with skinned meshes in the GLB")
    for obj in [character.armature, *character.others]:
        obj.hide_render = True
    return character


def _world(color: tuple[float, float, float], strength: float) -> None:
    scene = bpy.context.scene
    world = scene.world or bpy.data.worlds.new("serialgen_world")
    scene.world = world
    background = world.node_tree.nodes.get("Background")
    background.inputs["Color"].default_value = (*color, 1.0)
    background.inputs["Strength"].default_value = strength


def _area_light(name: str, location: Vector, target: Vector, energy: float,
                color: tuple[float, float, float], size: float) -> None:
    """Set area light ``name`` (created on first use, then reused: every property is set each time)."""
    obj = bpy.data.objects.get(name)
    if obj is None:
        obj = bpy.data.objects.new(name, bpy.data.lights.new(name, "AREA"))
        bpy.context.scene.collection.objects.link(obj)
    obj.data.energy = energy
    obj.data.color = color
    obj.data.size = size
    obj.location = location
    obj.rotation_euler = (target - location).to_track_quat("-Z", "Y").to_euler()


def _around(target: Vector, distance: float, azimuth_deg: float, elevation_deg: float) -> Vector:
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    return target + distance * Vector((np.sin(az) * np.cos(el), -np.cos(az) * np.cos(el), np.sin(el)))


def random_lighting(rng: np.random.Generator, target: Vector, scale: float, camera_azimuth_deg: float) -> None:
    """Key, fill and rim area lights around the camera direction, plus a random environment colour."""
    def tint(spread: float) -> tuple[float, float, float]:
        return tuple(float(c) for c in np.clip(1.0 - spread * rng.random(3), 0.0, 1.0))

    power = scale ** 2  # light falls off with the square of the character's size
    key_az = camera_azimuth_deg + rng.uniform(-70, 70)
    _area_light(LIGHT_NAMES[0], _around(target, 2.5 * scale, key_az, rng.uniform(10, 60)), target,
                rng.uniform(150, 400) * power, tint(0.25), 0.5 * scale)
    _area_light(LIGHT_NAMES[1], _around(target, 2.5 * scale, key_az + rng.choice([-1, 1]) * rng.uniform(60, 120),
                                      rng.uniform(0, 40)), target, rng.uniform(40, 150) * power, tint(0.25), scale)
    _area_light(LIGHT_NAMES[2], _around(target, 2.5 * scale, camera_azimuth_deg + 180 + rng.uniform(-40, 40),
                                     rng.uniform(20, 60)), target, rng.uniform(100, 300) * power, tint(0.25), 0.4 * scale)
    _world(tint(0.8), float(rng.uniform(0.2, 0.8)))


def standard_lighting(target: Vector, scale: float) -> None:
    """The fixed, neutral studio lighting of the standard render: frontal key, soft fill, white environment."""
    power = scale ** 2
    _area_light(LIGHT_NAMES[0], _around(target, 2.5 * scale, 25, 30), target, 150 * power, (1, 1, 1), 1.0 * scale)
    _area_light(LIGHT_NAMES[1], _around(target, 2.5 * scale, -40, 10), target, 60 * power, (1, 1, 1), 1.5 * scale)
    _area_light(LIGHT_NAMES[2], target, target + Vector((0.0, 1.0, 0.0)), 0.0, (1, 1, 1), scale)  # no rim
    _world((1.0, 1.0, 1.0), 0.3)
