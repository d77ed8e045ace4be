"""Motion clips from BVH, FBX and GLB/glTF (actions), retargeted onto the canonical skeleton (bpy).

The skeleton is the best-mapped armature, or for glTF files without one a plain node hierarchy
(empties): an armature is built on the nodes' rest transforms and follows them by constraints.
Each action of the skeleton is one clip; sampled frames are read back as canonical
local rotations with :func:`serialgen.assets.retarget.canonical_rotations`, after turning the
source so that it faces -Y. :func:`keyframe_clip` writes a canonical clip onto an armature (for
:func:`serialgen.blender_io.export_animation` to write test and benchmark files in any format).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serialgen.assets.retarget import Rig, hierarchy, upright_correction
from serialgen.blender_io import file_format, import_file
from serialgen.synthetic import gltf_nodes, skeleton
from serialgen.synthetic.character_filter import REQUIRED
from serialgen.synthetic.procedural_motion import Clip
from serialgen.synthetic.rotations import swing

#: Formats a motion file may have.
FORMATS = ("bvh", "fbx", "glb", "gltf")


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


def _use_action(obj, action) -> None:
    """Play ``action`` on ``obj``, in the action's slot for that object (the first slot if none is named for it)."""
    data = obj.animation_data or obj.animation_data_create()
    for track in list(data.nla_tracks):
        data.nla_tracks.remove(track)
    data.action = action
    own = [s for s in action.slots if s.identifier == "OB" + obj.name]
    if own:
        data.action_slot = own[0]
    elif data.action_slot is None and len(action.slots):
        data.action_slot = action.slots[0]


def _fcurves(action):
    return (fc for layer in action.layers for strip in layer.strips for bag in strip.channelbags for fc in bag.fcurves)


def _animates_bones(action) -> bool:
    """Whether ``action`` keys pose bones (not a camera, a mesh object or shape keys)."""
    return any(fc.data_path.startswith("pose.bones") for fc in _fcurves(action))


def _animates_objects(action) -> bool:
    """Whether ``action`` keys object transforms (a node skeleton's empties)."""
    return any(fc.data_path in ("location", "rotation_quaternion", "rotation_euler") for fc in _fcurves(action))


def _best_armature() -> tuple[object | None, dict[str, str]]:
    import bpy

    armatures = [o for o in bpy.context.scene.objects if o.type == "ARMATURE"]
    maps = {a.name: skeleton.map_bones([b.name for b in hierarchy(a)]) for a in armatures}
    arm = max(armatures, key=lambda a: len(maps[a.name]), default=None)
    return arm, maps.get(arm.name, {}) if arm else {}


def node_skeleton(path: str | Path) -> tuple[object | None, list]:
    """An armature on the plain node skeleton of a glTF file (None if no empty maps to a canonical bone),
    and the empties that drive it.

    Bones run from each node's rest position (from the file) to its children's (a leaf continues its
    parent's direction). They are not parented: a Child Of constraint whose inverse is the node's rest
    transform moves each bone exactly as its empty moves away from rest.
    """
    import bpy
    from mathutils import Matrix

    empties = {o.name: o for o in bpy.context.scene.objects if o.type == "EMPTY"}
    nodes = gltf_nodes.rest_nodes(gltf_nodes.read_json(path))
    def depth(i: int | None) -> int:
        return -1 if i is None else 1 + depth(nodes[i].parent)

    kept = sorted((i for i, n in enumerate(nodes) if n.name in empties), key=depth)  # parents first
    if not skeleton.map_bones([nodes[i].name for i in kept]):
        return None, []
    data = bpy.data.armatures.new("NodeSkeleton")
    arm = bpy.data.objects.new("NodeSkeleton", data)
    bpy.context.scene.collection.objects.link(arm)
    bpy.context.view_layer.objects.active = arm
    bpy.ops.object.mode_set(mode="EDIT")
    for i in kept:   # parents first: a leaf continues its parent's direction
        head = nodes[i].rest[:3, 3]
        children = [c.rest[:3, 3] for c in nodes if c.parent == i and c.name in empties]
        parent = nodes[i].parent if nodes[i].parent in kept else None
        if children and np.linalg.norm(np.mean(children, axis=0) - head) > 1e-4:
            tail = np.mean(children, axis=0)
        elif parent is not None and np.linalg.norm(head - nodes[parent].rest[:3, 3]) > 1e-4:
            tail = head + _leaf_direction(nodes[i].name, nodes[parent].name, head - nodes[parent].rest[:3, 3])
        else:
            tail = head + np.array([0.0, 0.0, 0.05])
        bone = data.edit_bones.new(nodes[i].name)   # unparented: each follows its own empty
        bone.head, bone.tail = head.tolist(), tail.tolist()
    bpy.ops.object.mode_set(mode="OBJECT")
    for i in kept:
        # Child Of with inverse = node rest^-1: bone world = node world(t) @ node rest^-1 @ bone rest.
        follow = arm.pose.bones[nodes[i].name].constraints.new("CHILD_OF")
        follow.target = empties[nodes[i].name]
        follow.inverse_matrix = Matrix(np.linalg.inv(nodes[i].rest).tolist())
    return arm, [empties[nodes[i].name] for i in kept]


def _leaf_direction(name: str, parent: str, from_parent: np.ndarray) -> np.ndarray:
    """A leaf bone's rest vector: its canonical angle to its parent kept (a toe bends off the foot), else
    the parent's direction continued; half the parent's length."""
    canon, canon_parent = skeleton.canonical_name(name), skeleton.canonical_name(parent)
    if canon in skeleton.BY_NAME and skeleton.BY_NAME[canon].parent == canon_parent:
        bone, up = skeleton.BY_NAME[canon], skeleton.BY_NAME[canon_parent]
        turn = swing(np.subtract(bone.head, up.head), from_parent)
        direction = turn @ np.subtract(bone.tail, bone.head)
        return 0.5 * np.linalg.norm(from_parent) * direction / np.linalg.norm(direction)
    return 0.5 * from_parent


def extract_clips(path: str | Path, frame_step: int = 1) -> list[SampledClip]:
    """Every action of the file's humanoid skeleton, sampled every ``frame_step`` frames."""
    import bpy

    import_file(path, FORMATS, MotionLoadError, animation=True)
    arm, mapping = _best_armature()
    drivers = [arm] if arm is not None else []
    if file_format(path) in ("glb", "gltf") and not all(b in mapping for b in REQUIRED):
        nodes, empties = node_skeleton(path)
        if nodes is not None:
            arm, mapping, drivers = nodes, skeleton.map_bones([b.name for b in hierarchy(nodes)]), empties
    if arm is None:
        raise MotionLoadError("no armature or node skeleton in the file")
    missing = [b for b in REQUIRED if b not in mapping]
    if missing:
        raise MotionLoadError(f"rig not mappable to the canonical skeleton (missing {', '.join(missing)})")
    scene = bpy.context.scene
    animated = _animates_bones if drivers == [arm] else _animates_objects
    initial = {d.animation_data.action for d in drivers if d.animation_data and d.animation_data.action}
    actions = sorted({a for a in bpy.data.actions if animated(a)} | initial, key=lambda a: a.name)
    if not actions:
        raise MotionLoadError("no animation in the file")
    fps = scene.render.fps / scene.render.fps_base
    for obj in [o for o in scene.objects if o.type == "MESH"]:  # only the skeleton is sampled
        bpy.data.objects.remove(obj, do_unlink=True)
    rig = Rig(arm, upright_correction(arm, mapping))
    clips = []
    for action in actions:
        for driver in drivers:
            _use_action(driver, action)
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
