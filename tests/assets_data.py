"""Asset files made by bpy from procedural characters and clips, some broken on purpose.

Used by tests/test_assets*.py and benchmarks/bench_assets.py. Builds in this process's bpy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from serialgen.assets import motions, procedural
from serialgen.blender_io import export_animation, export_glb, reset_scene
from serialgen.synthetic import procedural_motion
from serialgen.synthetic.character_spec import sample_spec

#: file name -> expected status or rejection reason code
EXPECTED = {
    "char_glb.glb": "accepted",
    "char_fbx.fbx": "accepted",
    "char_blend.blend": "accepted",
    "unreal_names_cm_turned.glb": "accepted",
    "copy_of_glb.glb": "duplicate",
    "no_armature.glb": "no_armature",
    "unskinned.fbx": "not_skinned",
    "missing_texture.gltf": "texture_defect",
    "textured_without_uvs.glb": "texture_defect",
    "unmapped_bones.glb": "too_few_canonical_bones",
    "corrupt.glb": "unreadable",
    "truncated.fbx": "unreadable",
}
#: Unreal-style bone names (one of the mapped rig conventions)
UNREAL = {"Hips": "pelvis", "Spine": "spine_01", "Spine1": "spine_02", "Spine2": "spine_03", "Neck": "neck_01",
          "Head": "head", "HeadTop_End": "head_end", "Eye": "eye", "Shoulder": "clavicle", "Arm": "upperarm",
          "ForeArm": "lowerarm", "Hand": "hand", "UpLeg": "thigh", "Leg": "calf", "Foot": "foot", "ToeBase": "ball"}
#: motion file -> procedural clip (kind, seed) keyed into it
MOTION_FILES = {"walk.bvh": ("walk", 11), "run.fbx": ("run", 12), "dance.glb": ("dance", 13)}
#: DAZ/Poser BVH names (another mapped convention; DAZ figures have no third spine bone)
DAZ = {"Hips": "hip", "Spine": "abdomen", "Spine1": "chest", "Neck": "neck", "Head": "head", "Shoulder": "Collar",
       "Arm": "Shldr", "ForeArm": "ForeArm", "Hand": "Hand", "UpLeg": "Thigh", "Leg": "Shin", "Foot": "Foot"}
#: motion files in the forms people download -> (kind, seed, form); "few_joints" must be rejected
MOTION_FORMS = {"nodes_walk.glb": ("walk", 21, "node_hierarchy"), "skinless_run.fbx": ("run", 22, "skinless"),
                "unreal_dance.bvh": ("dance", 23, "unreal"), "daz_walk.bvh": ("walk", 24, "daz"),
                "few_joints.glb": ("walk", 25, "few_joints")}


def _build(seed: int):
    reset_scene()
    return procedural.build_character(sample_spec(seed))


def _meshes():
    import bpy

    return [o for o in bpy.context.scene.objects if o.type == "MESH"]


def _export_fbx(path: Path) -> None:
    import bpy

    bpy.ops.export_scene.fbx(filepath=str(path), path_mode="COPY", embed_textures=True, add_leaf_bones=False,
                             bake_anim=False)


def build_character_files(folder: Path, blend_marker: Path) -> Path:
    """Write the :data:`EXPECTED` files into ``folder``.

    The .blend carries a registered script that would write ``blend_marker`` if it ever ran.
    """
    import bpy

    folder.mkdir(parents=True, exist_ok=True)
    procedural.generate_glb(1, folder / "char_glb.glb")
    _build(2)
    _export_fbx(folder / "char_fbx.fbx")

    _build(3)
    text = bpy.data.texts.new("autorun.py")
    text.write(f"open({str(blend_marker)!r}, 'w').write('the embedded script ran')\n")
    text.use_module = True  # "Register": runs on load when auto-execution is allowed
    bpy.ops.wm.save_as_mainfile(filepath=str(folder / "char_blend.blend"))

    reset_scene()  # a re-exported copy of char_glb.glb with sub-millimetre noise
    bpy.ops.import_scene.gltf(filepath=str(folder / "char_glb.glb"), disable_bone_shape=True)
    rng = np.random.default_rng(0)
    for mesh in _meshes():
        co = np.empty(len(mesh.data.vertices) * 3)
        mesh.data.vertices.foreach_get("co", co)
        mesh.data.vertices.foreach_set("co", co + rng.normal(0, 2e-4, co.shape))
    export_glb(folder / "copy_of_glb.glb")

    arm = _build(4)
    bpy.data.objects.remove(arm)
    export_glb(folder / "no_armature.glb")

    _build(5)
    for mesh in _meshes():
        mesh.parent = None
        mesh.modifiers.clear()
        mesh.vertex_groups.clear()
    _export_fbx(folder / "unskinned.fbx")

    _build(6)
    staging = folder / "_gltf"
    staging.mkdir(exist_ok=True)
    bpy.ops.export_scene.gltf(filepath=str(staging / "missing_texture.gltf"), export_format="GLTF_SEPARATE")
    for f in staging.iterdir():
        if f.suffix != ".png":  # the texture image goes missing
            shutil.move(str(f), folder / f.name)
    shutil.rmtree(staging)

    _build(10)
    for mesh in _meshes():
        while mesh.data.uv_layers:
            mesh.data.uv_layers.remove(mesh.data.uv_layers[0])
    export_glb(folder / "textured_without_uvs.glb")

    arm = _build(8)  # another rig convention, in centimetres, turned 90 degrees, off the origin
    _rename(arm, UNREAL, "suffix")
    arm.rotation_euler, arm.scale, arm.location = (0, 0, np.pi / 2), (100, 100, 100), (3, 2, 1)
    export_glb(folder / "unreal_names_cm_turned.glb")

    arm = _build(7)
    for i, bone in enumerate(arm.data.bones):
        bone.name = f"bone{i:03d}"
    export_glb(folder / "unmapped_bones.glb")

    (folder / "corrupt.glb").write_bytes(np.random.default_rng(1).bytes(4000))
    (folder / "truncated.fbx").write_bytes((folder / "char_fbx.fbx").read_bytes()[:3000])
    return folder


def build_motion_files(folder: Path,
                       files: dict[str, tuple[str, int]] = MOTION_FILES) -> dict[str, procedural_motion.Clip]:
    """Key procedural clips onto a procedural character and export them; returns {file name: clip}."""
    folder.mkdir(parents=True, exist_ok=True)
    clips = {}
    for name, (kind, seed) in files.items():
        clip = procedural_motion.make_clip(kind, seed)
        arm = _build(seed)
        motions.keyframe_clip(arm, clip)
        export_animation(arm, folder / name)
        clips[name] = clip
    (folder / "corrupt.bvh").write_text("HIERARCHY\nROOT Hips\n{\n  OFFSET 0 0\n")
    return clips


def _rename(arm, names: dict[str, str], side_style: str) -> None:
    """Rename a procedural rig's bones to another convention (unknown bones keep their names)."""
    for bone in arm.data.bones:
        name = bone.name.removeprefix("mixamorig:")
        side = "Left" if name.startswith("Left") else "Right" if name.startswith("Right") else ""
        base = names.get(name.removeprefix(side))
        if base is not None:
            bone.name = (base + {"Left": "_l", "Right": "_r"}.get(side, "") if side_style == "suffix"
                         else {"Left": "l", "Right": "r"}.get(side, "") + base)


def strip_skins(glb: Path) -> None:
    """Drop the skins of a GLB: its joints become a plain node hierarchy (what web animation files hold)."""
    import json
    import struct

    data = glb.read_bytes()
    length = struct.unpack("<I", data[12:16])[0]
    gltf, binary = json.loads(data[20:20 + length]), data[20 + length:]
    gltf.pop("skins", None)
    for node in gltf["nodes"]:
        node.pop("skin", None)
    text = json.dumps(gltf).encode()
    text += b" " * (-len(text) % 4)
    body = struct.pack("<II", len(text), 0x4E4F534A) + text + binary
    glb.write_bytes(struct.pack("<III", 0x46546C67, 2, 12 + len(body)) + body)


def build_motion_forms(folder: Path) -> dict[str, procedural_motion.Clip]:
    """:data:`MOTION_FORMS` as files (skeleton only: no mesh); returns {file name: clip}."""
    import bpy

    folder.mkdir(parents=True, exist_ok=True)
    clips = {}
    for name, (kind, seed, form) in MOTION_FORMS.items():
        clip = procedural_motion.make_clip(kind, seed)
        arm = _build(seed)
        motions.keyframe_clip(arm, clip)
        for obj in [o for o in bpy.context.scene.objects if o.type == "MESH"]:
            bpy.data.objects.remove(obj, do_unlink=True)
        if form == "unreal":
            _rename(arm, UNREAL, "suffix")
        elif form == "daz":
            _rename(arm, DAZ, "prefix")
        elif form == "few_joints":
            for i, bone in enumerate(b for b in arm.data.bones if "Arm" in b.name or "Leg" in b.name):
                bone.name = f"joint{i:02d}"
        elif form == "skinless":
            # FBX stores no bind pose without a skin: the rest written is the pose shown at export, so
            # export at a frame keyed to the rest pose, as FBX tools write skinless clips.
            for pb in arm.pose.bones:
                pb.rotation_quaternion = (1.0, 0.0, 0.0, 0.0)
                pb.keyframe_insert("rotation_quaternion", frame=0)
            bpy.context.scene.frame_set(0)
        export_animation(arm, folder / name)
        if form in ("node_hierarchy", "few_joints"):
            strip_skins(folder / name)
        clips[name] = clip
    return clips


def crash_on_poison(items: list[str]) -> list[str]:
    """A worker batch function that kills its process on the item "poison" (pool crash handling)."""
    import os

    if "poison" in items:
        os._exit(3)
    return [item.upper() for item in items]


def pose_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Largest joint angle (radians) between poses ``a`` and ``b`` (bones, 4)."""
    dots = np.clip(np.abs(np.sum(np.asarray(a, float) * np.asarray(b, float), axis=-1)), 0.0, 1.0)
    return float(2 * np.arccos(dots.min()))
