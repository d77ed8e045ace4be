"""Seeded procedural humanoids built in Blender: rigged (canonical Mixamo skeleton), skinned, clothed, written as GLB.

The generator is the embedded default character source and the tests' fixture factory. Each
character goes through the same GLB importer as user assets. Spec, rest layout and meshes are plain
numpy (:mod:`serialgen.synthetic.character_spec`, :mod:`serialgen.synthetic.body_mesh`); this module
makes them the armature object ``Armature``, the meshes ``Body`` and ``Face`` and their materials.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from serialgen.blender_io import export_glb, reset_scene
from serialgen.synthetic import skeleton
from serialgen.synthetic.body_mesh import BodyMeshes
from serialgen.synthetic.character_spec import CharacterSpec, fabric_pixels, rest_layout, sample_spec
from serialgen.synthetic.meshkit import MeshBuilder


def _material(name: str, colour, roughness: float = 0.6, image=None):
    import bpy

    mat = bpy.data.materials.new(name)
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Base Color"].default_value = (*colour, 1.0)
    bsdf.inputs["Roughness"].default_value = roughness
    if image is not None:
        tex = mat.node_tree.nodes.new("ShaderNodeTexImage")
        tex.image = image
        mat.node_tree.links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    return mat


def _fabric_image(name: str, spec: CharacterSpec):
    """The top's fabric as a small image; packed so GLB embeds it."""
    import bpy

    pixels = fabric_pixels(spec)
    image = bpy.data.images.new(name, pixels.shape[1], pixels.shape[0], alpha=False)
    image.pixels.foreach_set(pixels.ravel())
    image.pack()
    return image


def mesh_object(builder: MeshBuilder, name: str, materials: list, armature):
    """The bpy mesh object of ``builder``'s parts, skinned to ``armature`` by their weights."""
    import bpy

    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata([tuple(v) for v in builder.verts], [], builder.faces)
    uv_layer = mesh.uv_layers.new(name="UVMap")
    uv_layer.data.foreach_set("uv", np.asarray(builder.uvs, dtype=np.float32).ravel())
    mesh.polygons.foreach_set("material_index", np.asarray(builder.materials, dtype=np.int32))
    mesh.polygons.foreach_set("use_smooth", np.ones(len(builder.faces), dtype=bool))
    for mat in materials:
        mesh.materials.append(mat)
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    groups: dict[tuple[str, float], list[int]] = {}
    for i, w in enumerate(builder.weights):
        total = sum(w.values())
        for bone, value in w.items():
            groups.setdefault((bone, round(value / total, 4)), []).append(i)
    for (bone, value), idx in groups.items():
        group = obj.vertex_groups.get(bone) or obj.vertex_groups.new(name=bone)
        group.add(idx, value, "REPLACE")
    if builder.shape_offsets:
        obj.shape_key_add(name="Basis", from_mix=False)
        for key in ("neutral", *builder.shape_offsets):
            block = obj.shape_key_add(name=key, from_mix=False)
            for i, off in builder.shape_offsets.get(key, {}).items():
                block.data[i].co = tuple(np.asarray(builder.verts[i]) + off)
    obj.parent = armature
    obj.modifiers.new("Armature", "ARMATURE").object = armature
    return obj


def build_character(spec: CharacterSpec):
    """Build ``spec`` into the current (empty) scene; returns the armature object."""
    import bpy

    layout = rest_layout(spec)
    arm_data = bpy.data.armatures.new(skeleton.ARMATURE_NAME)
    arm = bpy.data.objects.new(skeleton.ARMATURE_NAME, arm_data)
    bpy.context.scene.collection.objects.link(arm)
    bpy.context.view_layer.objects.active = arm
    bpy.ops.object.mode_set(mode="EDIT")
    for bone in skeleton.BONES:
        eb = arm_data.edit_bones.new(bone.full_name)
        eb.head, eb.tail = layout[bone.name]
        eb.roll = 0.0
        if bone.parent:
            eb.parent = arm_data.edit_bones[skeleton.PREFIX + bone.parent]
            eb.use_connect = bool(np.allclose(eb.parent.tail, eb.head))
    bpy.ops.object.mode_set(mode="OBJECT")
    for pb in arm.pose.bones:
        pb.rotation_mode = "QUATERNION"

    parts = BodyMeshes(spec, layout)
    parts.build()
    image = _fabric_image("fabric", spec)
    colours = {"skin": (spec.skin, 0.5, None), "hair": (spec.hair_color, 0.45, None),
               "top": (spec.top_color, 0.8, image), "jacket": (spec.jacket_color, 0.7, None),
               "bottom": (spec.bottom_color, 0.8, None), "shoes": (spec.shoe_color, 0.4, None),
               "eye_white": ((0.9, 0.9, 0.9), 0.2, None),
               "iris": (spec.eye_color, 0.2, None), "mouth": ((0.45, 0.12, 0.12), 0.5, None),
               "brow": (tuple(0.6 * c for c in spec.hair_color), 0.6, None)}
    mats = [_material(name, *colours[name]) for name in BodyMeshes.MATERIALS]
    mesh_object(parts.body, "Body", mats, arm)
    mesh_object(parts.face, "Face", mats, arm)
    return arm


def generate_glb(seed: int, path: str | Path) -> CharacterSpec:
    """Generate character ``seed`` in a fresh scene and write it to ``path`` (GLB); returns its spec."""
    spec = sample_spec(seed)
    reset_scene()
    build_character(spec)
    export_glb(path)
    return spec
