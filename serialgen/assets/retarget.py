"""Canonical joint rotations <-> any humanoid armature in the scene (bpy).

A pose is, per canonical bone, a local rotation relative to the *canonical* rest frame
(:mod:`serialgen.synthetic.kinematics`). Reading a pose from a rig with another rest (T-pose, other
rolls) and writing one to it go through world-space frames: each rig bone's rest direction is swung
onto the canonical one, so a pose means the same limb directions on every rig. For rigs whose rest
frames are the canonical ones (all procedural characters) this reduces to
``pose_bone.rotation_quaternion = rotation``.
"""

from __future__ import annotations

import numpy as np

from serialgen.synthetic import skeleton
from serialgen.synthetic.kinematics import Mat, canonical_rest, canonical_world_frames
from serialgen.synthetic.rotations import mat_to_quat, orthonormal, swing


def hierarchy(armature) -> list:
    """The armature's bones, parents before children."""
    order, stack = [], [b for b in armature.data.bones if b.parent is None][::-1]
    while stack:
        bone = stack.pop()
        order.append(bone)
        stack.extend(list(bone.children)[::-1])
    return order


def limb_directions(armature, mapping: dict[str, str], world: Mat) -> dict[str, np.ndarray]:
    """Rest direction of each mapped canonical bone: towards its mapped chain child, else its own tail.

    Importers point bones anywhere (BVH hips, FBX leaf bones); the next joint is what a limb means.
    """
    bones = armature.data.bones
    out = {}
    for canon, name in mapping.items():
        child = skeleton.CHAIN_CHILD.get(canon)
        head = np.array(bones[name].head_local)
        end = np.array(bones[mapping[child]].head_local) if child in mapping else np.array(bones[name].tail_local)
        if np.linalg.norm(end - head) < 1e-9:
            end = np.array(bones[name].tail_local)
        out[canon] = world @ (end - head)
    return out


def upright_correction(armature, mapping: dict[str, str]) -> Mat:
    """World rotation that stands the rig's rest up (hips->head along +Z) and turns it to face -Y (left is +X)."""
    world = orthonormal(np.array(armature.matrix_world.to_3x3()))
    bones = armature.data.bones

    def point(canon: str) -> np.ndarray:
        return world @ np.array(bones[mapping[canon]].head_local)

    fix = np.eye(3)
    top = next((b for b in ("Head", "Neck", "Spine2", "Spine1") if b in mapping), None)
    if "Hips" in mapping and top is not None:
        fix = swing(point(top) - point("Hips"), [0.0, 0.0, 1.0])
    for left, right in (("LeftUpLeg", "RightUpLeg"), ("LeftArm", "RightArm"), ("LeftShoulder", "RightShoulder")):
        if left in mapping and right in mapping:
            v = fix @ (point(left) - point(right))
            angle = -np.arctan2(v[1], v[0])
            c, s = np.cos(angle), np.sin(angle)
            return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ fix
    return fix


class Rig:
    """An armature bound to the canonical skeleton: rest frames and limb swings computed once."""

    def __init__(self, armature, correction: Mat | None = None):
        self.armature = armature
        self.order = hierarchy(armature)
        self.mapping = skeleton.map_bones([b.name for b in self.order])
        world = orthonormal(np.array(armature.matrix_world.to_3x3()))
        self.world = world if correction is None else correction @ world
        self.rest = {b.name: orthonormal(self.world @ np.array(b.matrix_local.to_3x3())) for b in self.order}
        directions = limb_directions(armature, self.mapping, self.world)
        rest_c = canonical_rest()
        #: canonical world frame = posed rig frame @ bind[canonical bone]
        self.bind = {canon: self.rest[name].T @ swing(rest_c[canon][:, 1], directions[canon]) @ rest_c[canon]
                     for canon, name in self.mapping.items()}
        by_rig = {v: k for k, v in self.mapping.items()}
        #: (bone, parent or None, canonical bone or None) in ``order``, and the rest frame of each in its parent's.
        self.chain = [(b.name, b.parent.name if b.parent else None, by_rig.get(b.name)) for b in self.order]
        self.rest_in_parent = np.stack([(self.rest[p].T if p else np.eye(3)) @ self.rest[n] for n, p, _ in self.chain])
        slot = {pb.name: i for i, pb in enumerate(armature.pose.bones)}
        #: ``order`` position of each pose bone, to write all rotations in one bulk call.
        self.pose_order = np.argsort([slot[n] for n, _, _ in self.chain])

    def read(self) -> np.ndarray:
        """The current pose as canonical local quaternions, shape (len(POSED_BONES), 4)."""
        rest_c = canonical_rest()
        pose = self.armature.pose.bones
        frames: dict[str, Mat] = {}
        for bone in skeleton.BONES:
            if bone.name in self.mapping:
                m = self.world @ np.array(pose[self.mapping[bone.name]].matrix.to_3x3())
                frames[bone.name] = m / np.linalg.norm(m, axis=0) @ self.bind[bone.name]
            elif bone.parent is None:
                frames[bone.name] = rest_c[bone.name]
            else:
                frames[bone.name] = frames[bone.parent] @ rest_c[bone.parent].T @ rest_c[bone.name]
        out = np.empty((len(skeleton.POSED_BONES), 4), dtype=np.float32)
        for i, name in enumerate(skeleton.POSED_BONES):
            parent = skeleton.BY_NAME[name].parent
            if parent is None:
                local = rest_c[name].T @ frames[name]
            else:
                local = (rest_c[parent].T @ rest_c[name]).T @ frames[parent].T @ frames[name]
            out[i] = mat_to_quat(local)
        return out

    def write(self, bones: list[str], rotations) -> None:
        """Pose the rig with canonical ``bones`` / (w, x, y, z) ``rotations`` (a pose row)."""
        target = canonical_world_frames(bones, rotations)
        eye = np.eye(3)
        posed: dict[str, Mat] = {}
        for name, parent, canon in self.chain:
            if canon:
                posed[name] = target[canon] @ self.bind[canon].T
            else:   # an unmapped bone keeps its rest frame relative to its parent
                posed[name] = (posed[parent] @ self.rest[parent].T if parent else eye) @ self.rest[name]
        parents = np.stack([posed[p] if p else eye for _, p, _ in self.chain])
        world = np.stack([posed[n] for n, _, _ in self.chain])
        local = mat_to_quat(self.rest_in_parent.transpose(0, 2, 1) @ parents.transpose(0, 2, 1) @ world)
        pose = self.armature.pose.bones
        for pb in pose:
            if pb.rotation_mode != "QUATERNION":
                pb.rotation_mode = "QUATERNION"
        pose.foreach_set("rotation_quaternion", local[self.pose_order].astype(np.float32).ravel())
        self.armature.update_tag()  # bulk writes skip the per-property update that re-evaluates the pose


def canonical_rotations(armature, correction: Mat | None = None) -> np.ndarray:
    """The current pose of ``armature`` as canonical local quaternions (see :meth:`Rig.read`).

    ``correction`` (see :func:`upright_correction`) stands and turns the whole rig first.
    """
    return Rig(armature, correction).read()


def apply_pose(armature, bones: list[str], rotations) -> None:
    """Pose ``armature`` (any mapped humanoid rig) with a pose row: ``bones`` and (w, x, y, z) ``rotations``."""
    Rig(armature).write(bones, rotations)
