"""Character importers (GLB/glTF, FBX, .blend) and normalisation into the one convention.

After :func:`normalize`: metres, Z up, facing -Y, feet on z = 0, centred on the hips, rest pose,
one armature object ``Armature`` whose mapped bones carry canonical Mixamo names, and the meshes it
deforms parented to it; everything else is deleted. Files are read by :func:`serialgen.blender_io.import_file`
(script auto-execution off: no embedded script ever runs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serialgen.assets.retarget import hierarchy, upright_correction
from serialgen.blender_io import import_file
from serialgen.synthetic import skeleton

#: Formats a character file may have.
FORMATS = ("glb", "gltf", "fbx", "blend")


class CharacterLoadError(Exception):
    """The file could not be read as a character (corrupt, truncated, wrong format)."""


@dataclass
class Character:
    """An imported character in the current scene."""

    armature: object | None
    meshes: list = field(default_factory=list)       # meshes deformed by the armature
    others: list = field(default_factory=list)       # meshes not deformed by it
    mapping: dict[str, str] = field(default_factory=dict)  # canonical name -> rig bone name


def load_file(path: str | Path) -> None:
    """Import ``path`` into a fresh scene; :class:`CharacterLoadError` if the importer fails."""
    import_file(path, FORMATS, CharacterLoadError)


def _deforming_armature(obj):
    for mod in obj.modifiers:
        if mod.type == "ARMATURE" and mod.object is not None:
            return mod.object
    return obj.parent if obj.parent is not None and obj.parent_type == "ARMATURE" else None


def find_character() -> Character:
    """Pick the armature with the most canonical bones and the meshes it deforms."""
    import bpy

    armatures = [o for o in bpy.context.scene.objects if o.type == "ARMATURE"]
    meshes = [o for o in bpy.context.scene.objects if o.type == "MESH"]
    if not armatures:
        return Character(None, [], meshes)
    maps = {a.name: skeleton.map_bones([b.name for b in hierarchy(a)]) for a in armatures}
    arm = max(armatures, key=lambda a: (len(maps[a.name]), len(a.data.bones)))
    deformed = [m for m in meshes if _deforming_armature(m) == arm and _has_weights(m, arm)]
    return Character(arm, deformed, [m for m in meshes if m not in deformed], maps[arm.name])


def _has_weights(mesh, armature) -> bool:
    bones = {b.name for b in armature.data.bones}
    groups = {g.index for g in mesh.vertex_groups if g.name in bones}
    return any(ge.group in groups and ge.weight > 0 for v in mesh.data.vertices for ge in v.groups)


def normalize(char: Character) -> dict:
    """Bring ``char`` into the convention in place; returns notes (unit scale, yaw, height)."""
    import bpy
    from mathutils import Matrix

    arm, meshes = char.armature, char.meshes
    keep = {arm, *meshes}
    for obj in keep:
        world = obj.matrix_world.copy()
        obj.parent = None
        obj.matrix_world = world
    for obj in [o for o in bpy.context.scene.objects if o not in keep]:
        bpy.data.objects.remove(obj, do_unlink=True)
    if arm.animation_data:
        arm.animation_data_clear()
    for pb in arm.pose.bones:
        pb.rotation_mode = "QUATERNION"
        pb.location, pb.rotation_quaternion, pb.scale = (0, 0, 0), (1, 0, 0, 0), (1, 1, 1)
    for m in meshes:
        if m.data.shape_keys:
            for kb in m.data.shape_keys.key_blocks:
                kb.value = 0.0
    bpy.context.view_layer.update()

    upright = Matrix(upright_correction(arm, char.mapping).tolist()).to_4x4()
    points = _world_points(meshes) @ np.array(upright.to_3x3()).T
    height = float(np.ptp(points[:, 2])) if len(points) else 0.0
    scale = 0.01 if height > 20 else 1.0  # centimetre files (FBX from some tools)
    lo = points.min(0) * scale if len(points) else np.zeros(3)
    hips = np.array(upright.to_3x3()) @ (np.array(arm.matrix_world @ arm.data.bones[char.mapping["Hips"]].head_local)
                                      if "Hips" in char.mapping else np.zeros(3)) * scale
    fix = Matrix.Translation((-hips[0], -hips[1], -lo[2])) @ Matrix.Scale(scale, 4) @ upright
    for obj in keep:
        obj.matrix_world = fix @ obj.matrix_world
    bpy.ops.object.select_all(action="DESELECT")
    for obj in keep:
        obj.select_set(True)
    bpy.context.view_layer.objects.active = arm
    bpy.ops.object.transform_apply(location=True, rotation=True, scale=True)
    for obj in meshes:
        obj.parent = arm
        mod = next((m for m in obj.modifiers if m.type == "ARMATURE"), None)
        mod = mod or obj.modifiers.new("Armature", "ARMATURE")
        mod.object = arm
    for canon, name in char.mapping.items():
        arm.data.bones[name].name = skeleton.PREFIX + canon  # renames the vertex groups too
    char.mapping = {canon: skeleton.PREFIX + canon for canon in char.mapping}
    arm.name = arm.data.name = skeleton.ARMATURE_NAME
    bpy.context.view_layer.update()
    angle = np.degrees(upright.to_quaternion().angle)
    return {"unit_scale": scale, "upright_rotation_degrees": round(float(angle), 2),
            "height_m": round(height * scale, 4)}


def _world_points(meshes) -> np.ndarray:
    chunks = []
    for m in meshes:
        co = np.empty(len(m.data.vertices) * 3, dtype=np.float64)
        m.data.vertices.foreach_get("co", co)
        mw = np.array(m.matrix_world)
        chunks.append(co.reshape(-1, 3) @ mw[:3, :3].T + mw[:3, 3])
    return np.concatenate(chunks) if chunks else np.zeros((0, 3))


def world_triangles(meshes) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (N, 3), triangles (M, 3)) of all ``meshes`` in world space, at rest."""
    verts, tris, offset = [], [], 0
    for m in meshes:
        pts = _world_points([m])
        m.data.calc_loop_triangles()
        idx = np.empty(len(m.data.loop_triangles) * 3, dtype=np.int64)
        m.data.loop_triangles.foreach_get("vertices", idx)
        verts.append(pts)
        tris.append(idx.reshape(-1, 3) + offset)
        offset += len(pts)
    if not verts:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    return np.concatenate(verts), np.concatenate(tris)


def import_character(path: str | Path) -> Character:
    """Load a (normalised) character file into a fresh scene: the render stage's entry point."""
    load_file(path)
    return find_character()
