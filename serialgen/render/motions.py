"""Motion clips from BVH, FBX and GLB/glTF (actions), retargeted onto the canonical skeleton (bpy).

Each action of the best-mapped armature is one clip; sampled frames are read back as canonical
local rotations with :func:`serialgen.render.retarget.canonical_rotations`, after turning the
source so that it faces -Y. :func:`keyframe_clip` writes a canonical clip onto an armature (to
export test files and benchmarks in any format).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serialgen.render import skeleton
from serialgen.render.audit import REQUIRED
from serialgen.render.characters import disable_auto_exec, importer_message
from serialgen.render.procedural import reset_scene
from serialgen.render.procedural_motion import Clip
from serialgen.render.retarget import Rig, hierarchy, upright_correction

#: glTF stores seconds, not frames: clips are sampled on this frame grid.
GLTF_FPS = 30
FORMATS = {".bvh": "bvh", ".fbx": "fbx", ".glb": "glb", ".gltf": "gltf"}


class MotionLoadError(Exception):
    """The file holds no usable humanoid motion (unreadable, no armature, no action, unmappable rig)."""


@dataclass
class SampledClip:
    """One clip of a file: its sampled frames and their canonical rotations (frames, POSED_BONES, 4)."""

    name: str
    n_frames: int
    fps: float
    frames: np.ndarray
    rotations: np.ndarray


def file_format(path: str | Path) -> str | None:
    return FORMATS.get(Path(path).suffix.lower())


def _load(path: str | Path) -> None:
    import bpy

    reset_scene()
    disable_auto_exec()
    fmt = file_format(path)
    try:
        if fmt == "bvh":
            result = bpy.ops.import_anim.bvh(filepath=str(path), rotate_mode="NATIVE", update_scene_fps=True,
                                             update_scene_duration=True)
        elif fmt == "fbx":
            result = bpy.ops.import_scene.fbx(filepath=str(path), use_anim=True, ignore_leaf_bones=False)
        elif fmt in ("glb", "gltf"):
            bpy.context.scene.render.fps, bpy.context.scene.render.fps_base = GLTF_FPS, 1.0
            result = bpy.ops.import_scene.gltf(filepath=str(path), disable_bone_shape=True)
        else:
            raise MotionLoadError(f"unsupported format {Path(path).suffix!r}")
    except MotionLoadError:
        raise
    except Exception as exc:
        raise MotionLoadError(importer_message(exc)) from None
    if "FINISHED" not in result:
        raise MotionLoadError(f"importer returned {sorted(result)}")


def _use_action(armature, action) -> None:
    data = armature.animation_data or armature.animation_data_create()
    for track in list(data.nla_tracks):
        data.nla_tracks.remove(track)
    data.action = action
    if data.action_slot is None and len(action.slots):
        data.action_slot = action.slots[0]


def _animates_bones(action) -> bool:
    """Whether ``action`` keys pose bones (not a camera, a mesh object or shape keys)."""
    return any(fc.data_path.startswith("pose.bones") for layer in action.layers for strip in layer.strips
               for bag in strip.channelbags for fc in bag.fcurves)


def extract_clips(path: str | Path, frame_step: int = 1) -> list[SampledClip]:
    """Every action of the file's humanoid armature, sampled every ``frame_step`` frames."""
    import bpy

    _load(path)
    armatures = [o for o in bpy.context.scene.objects if o.type == "ARMATURE"]
    if not armatures:
        raise MotionLoadError("no armature in the file")
    maps = {a.name: skeleton.map_bones([b.name for b in hierarchy(a)]) for a in armatures}
    arm = max(armatures, key=lambda a: len(maps[a.name]))
    missing = [b for b in REQUIRED if b not in maps[arm.name]]
    if missing:
        raise MotionLoadError(f"rig not mappable to the canonical skeleton (missing {', '.join(missing)})")
    scene = bpy.context.scene
    initial = arm.animation_data.action if arm.animation_data else None
    actions = sorted({a for a in bpy.data.actions if _animates_bones(a)} | ({initial} if initial else set()),
                     key=lambda a: a.name)
    if not actions:
        raise MotionLoadError("no animation in the file")
    fps = scene.render.fps / scene.render.fps_base
    for obj in [o for o in scene.objects if o.type == "MESH"]:  # only the skeleton is sampled
        bpy.data.objects.remove(obj, do_unlink=True)
    rig = Rig(arm, upright_correction(arm, maps[arm.name]))
    clips = []
    for action in actions:
        _use_action(arm, action)
        start, end = (int(round(f)) for f in action.frame_range)
        frames = np.arange(start, end + 1, max(1, frame_step))
        rotations = []
        for frame in frames:
            scene.frame_set(int(frame))
            rotations.append(rig.read())
        clips.append(SampledClip(action.name, end - start + 1, fps, frames - start, np.stack(rotations)))
    return clips


def keyframe_clip(armature, clip: Clip) -> None:
    """Key ``clip`` onto ``armature`` (frames 1..n) and set the scene range and fps."""
    import bpy

    names = [skeleton.PREFIX + b for b in skeleton.POSED_BONES]
    rig = Rig(armature)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = int(round(clip.fps)), 1.0
    scene.frame_start, scene.frame_end = 1, clip.n_frames
    for f, rotations in enumerate(clip.rotations, start=1):
        rig.write(names, rotations)
        for name in names:
            armature.pose.bones[name].keyframe_insert("rotation_quaternion", frame=f)
    if armature.animation_data and armature.animation_data.action:
        armature.animation_data.action.name = clip.name


def export_motion(armature, path: str | Path) -> None:
    """Write the armature's keyed clip as BVH, FBX or GLB (by extension)."""
    import bpy

    from serialgen.render.procedural import export_glb

    scene = bpy.context.scene
    bpy.ops.object.select_all(action="DESELECT")
    armature.select_set(True)
    bpy.context.view_layer.objects.active = armature
    fmt = file_format(path)
    if fmt == "bvh":
        bpy.ops.export_anim.bvh(filepath=str(path), frame_start=scene.frame_start, frame_end=scene.frame_end,
                                rotate_mode="NATIVE")
    elif fmt == "fbx":
        bpy.ops.export_scene.fbx(filepath=str(path), use_selection=False, bake_anim=True, add_leaf_bones=False,
                                 bake_anim_use_nla_strips=False, bake_anim_use_all_actions=False)
    else:
        export_glb(path, animations=True)
