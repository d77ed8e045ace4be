"""The canonical skeleton's rest frames and forward kinematics (plain numpy).

A pose is, per canonical bone, a local rotation relative to the *canonical* rest frame: the frame
Blender gives a bone from the canonical head->tail with roll 0. :mod:`serialgen.assets.retarget`
maps these frames onto any humanoid armature.
"""

from __future__ import annotations

import functools

import numpy as np

from serialgen.synthetic import skeleton
from serialgen.synthetic.rotations import bone_frame, quat_to_mat

Mat = np.ndarray


@functools.cache
def canonical_rest() -> dict[str, Mat]:
    """Canonical rest frame (3x3, armature space) of every canonical bone."""
    return {b.name: bone_frame(np.subtract(b.tail, b.head)) for b in skeleton.BONES}


def canonical_world_frames(bones: list[str], rotations) -> dict[str, Mat]:
    """Forward kinematics on the canonical skeleton: world frame of every canonical bone."""
    rest_c = canonical_rest()
    local = dict(zip(map(skeleton.canonical_name, bones), quat_to_mat(np.reshape(rotations, (-1, 4)))))
    frames: dict[str, Mat] = {}
    for bone in skeleton.BONES:
        rot = local.get(bone.name, np.eye(3))
        if bone.parent is None:
            frames[bone.name] = rest_c[bone.name] @ rot
        else:
            frames[bone.name] = frames[bone.parent] @ rest_c[bone.parent].T @ rest_c[bone.name] @ rot
    return frames
