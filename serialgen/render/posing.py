"""Posing a loaded character: ``poses`` rows, the standard A-pose, and expression shape keys."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import bpy
import numpy as np
from mathutils import Matrix, Vector

from serialgen.assets.characters import Character
from serialgen.assets.retarget import Rig
from serialgen.synthetic.expressions import expression_keys


def pose_bone(character: Character, name: str) -> bpy.types.PoseBone | None:
    """The pose bone of a canonical bone name (without prefix), or None when the rig lacks it."""
    rig_name = character.mapping.get(name)
    return character.armature.pose.bones.get(rig_name) if rig_name else None


def rest(character: Character) -> None:
    """Every bone back to its rest transform, rotations as quaternions (bulk writes: once per item)."""
    bones = character.armature.pose.bones
    for pb in bones:
        if pb.rotation_mode != "QUATERNION":
            pb.rotation_mode = "QUATERNION"
    n = len(bones)
    bones.foreach_set("rotation_quaternion", np.tile(np.array([1.0, 0.0, 0.0, 0.0], np.float32), n))
    bones.foreach_set("location", np.zeros(3 * n, np.float32))
    bones.foreach_set("scale", np.ones(3 * n, np.float32))
    character.armature.update_tag()  # bulk writes skip the per-property update that re-evaluates the pose


def apply_pose(character: Character, rig: Rig, bones: Sequence[str], rotations: Sequence[Sequence[float]]) -> None:
    """Pose the character with a ``poses`` row (canonical local rotations, retargeted by ``rig``, built once)."""
    rest(character)
    rig.write(list(bones), rotations)
    bpy.context.view_layer.update()


def _aim(character: Character, pb: bpy.types.PoseBone, direction_world: Vector) -> None:
    """Rotate ``pb`` about its head so it points along ``direction_world`` (its parent already posed)."""
    to_armature = character.armature.matrix_world.to_3x3().inverted()
    current = (pb.tail - pb.head).normalized()
    turn = current.rotation_difference((to_armature @ direction_world).normalized()).to_matrix().to_4x4()
    head = Matrix.Translation(pb.head)
    pb.matrix = head @ turn @ head.inverted() @ pb.matrix
    bpy.context.view_layer.update()


def apply_a_pose(character: Character, arm_angle_deg: float = 45.0) -> None:
    """The standard A-pose: rest pose with straight arms ``arm_angle_deg`` below horizontal."""
    rest(character)
    bpy.context.view_layer.update()
    down = math.radians(arm_angle_deg)
    for side, sign in (("Left", 1.0), ("Right", -1.0)):
        direction = Vector((sign * math.cos(down), 0.0, -math.sin(down)))
        for part in ("Arm", "ForeArm", "Hand"):
            pb = pose_bone(character, side + part)
            if pb is not None:
                _aim(character, pb, direction)


def expressions(character: Character, allowed: Sequence[str], prefixes: Sequence[str]) -> list[str]:
    """The character's expression shape keys (allow-listed names only; body and clothing morphs are not), sorted."""
    names = set()
    for mesh in character.meshes:
        if mesh.data.shape_keys is not None:
            names.update(k.name for k in mesh.data.shape_keys.key_blocks[1:])
    return expression_keys(names, allowed, prefixes)


def set_expression(character: Character, weights: Mapping[str, float], keys: Sequence[str]) -> None:
    """Expression ``keys`` at ``weights`` (0 where not given, so ``{}`` is neutral); other shape keys untouched."""
    managed = set(keys)
    for mesh in character.meshes:
        if mesh.data.shape_keys is not None:
            for key in mesh.data.shape_keys.key_blocks[1:]:
                if key.name in managed:
                    key.value = weights.get(key.name, 0.0)
