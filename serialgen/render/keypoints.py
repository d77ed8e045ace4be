"""COCO-18 keypoints of a posed character: 3-D positions, projection to pixels and visibility.

A keypoint is invisible (0) when it is behind the camera, outside the frame, or occluded by the
body. Occlusion casts a ray from the camera to the point (through fresh BVH trees of the posed meshes). Joints lie inside their limb, so that ray
always enters the body shortly before a joint; it counts as unoccluded when the surface it meets is
within ``2 x (the point's distance to the nearest surface) + a margin`` of the point, or (for
joints, not face points) when that surface belongs to a bone meeting at the joint (the bone weights
of the hit vertex say which).
"""

from __future__ import annotations

import bpy
import numpy as np
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector
from mathutils.bvhtree import BVHTree

from serialgen.assets.characters import Character
from serialgen.render.posing import pose_bone
from serialgen.synthetic.skeleton import BONES, BY_NAME, KEYPOINT_SOURCES

#: Extra depth allowed on top of twice the nearest-surface distance, as a fraction of the figure height.
MARGIN = 0.01
#: Keypoints on the face surface (nose, eyes, ears): occluded by any surface clearly in front of them.
FACE_POINTS = frozenset({0, 14, 15, 16, 17})


#: Short connector bones: a joint at their end also sits in the flesh of the bone they hang from.
CONNECTORS = frozenset({"LeftShoulder", "RightShoulder"})


def _joint_bones(bone: str, where: str) -> frozenset[str]:
    """Canonical bones whose flesh surrounds a keypoint at the head or tail of ``bone``."""
    children = {b.name for b in BONES if b.parent == bone}
    if where == "tail":
        return frozenset({bone, *children})
    parent = BY_NAME[bone].parent
    siblings = {b.name for b in BONES if b.parent == parent and parent is not None}
    above = [parent, BY_NAME[parent].parent] if parent in CONNECTORS else [parent] if parent else []
    return frozenset({bone, *siblings, *above})


#: For each joint keypoint, the bones that may be hit on the way to it without occluding it.
JOINT_BONES: dict[int, frozenset[str]] = {
    i: _joint_bones(bone, where) for i, (bone, where) in enumerate(KEYPOINT_SOURCES) if i not in FACE_POINTS
}


class BodyParts:
    """The bone each vertex of the character's meshes follows most, to name the part a ray hits."""

    def __init__(self, character: Character) -> None:
        canonical = {rig: canon for canon, rig in character.mapping.items()}
        self.dominant: list[list[str | None]] = []          # per mesh, in ``character.meshes`` order
        for obj in character.meshes:
            names = [canonical.get(g.name) for g in obj.vertex_groups]
            self.dominant.append([names[max(v.groups, key=lambda g: g.weight).group] if len(v.groups) else None
                                  for v in obj.data.vertices])


class PosedBody:
    """The character's meshes as deformed now: BVH trees and world vertex positions, built once per pose.

    One tree per mesh (~0.2 ms) serves all 18 rays and nearest-surface queries; ``Scene.ray_cast`` and
    ``Object.closest_point_on_mesh`` rebuild theirs after every render (~1 ms per query).
    """

    def __init__(self, character: Character, parts: BodyParts, depsgraph) -> None:
        self.trees = []
        vertices, owners = [], []
        for obj, dominant in zip(character.meshes, parts.dominant):
            world = obj.matrix_world.copy()
            self.trees.append((world, world.inverted(), BVHTree.FromObject(obj, depsgraph)))
            mesh = obj.evaluated_get(depsgraph).data
            co = np.empty(3 * len(mesh.vertices), np.float64)
            mesh.vertices.foreach_get("co", co)
            m = np.asarray(world)
            vertices.append(co.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3])
            owners += dominant if len(dominant) == len(mesh.vertices) else [None] * len(mesh.vertices)
        self.axes = np.ascontiguousarray(np.concatenate(vertices).T)   # world x, y, z rows of all vertices
        self.owners = owners

    def first_hit(self, origin: Vector, target: Vector) -> Vector | None:
        """Where the segment origin -> target first meets a surface (world), or None."""
        best, best_distance = None, float("inf")
        for world, to_local, tree in self.trees:
            o, t = to_local @ origin, to_local @ target
            location, _, _, _ = tree.ray_cast(o, (t - o).normalized(), (t - o).length)
            if location is not None:
                hit = world @ location
                if (hit - origin).length < best_distance:
                    best, best_distance = hit, (hit - origin).length
        return best

    def surface_distance(self, point: Vector) -> float:
        """Distance from ``point`` to the nearest surface."""
        best = float("inf")
        for world, to_local, tree in self.trees:
            nearest, _, _, _ = tree.find_nearest(to_local @ point)
            if nearest is not None:
                best = min(best, (world @ nearest - point).length)
        return best

    def bones_at(self, locations: list[Vector]) -> list[str | None]:
        """The dominant bone of the vertex nearest to each of ``locations`` (one array pass for all)."""
        d = self.axes[:, None, :] - np.array(locations).T[:, :, None]
        d *= d
        return [self.owners[i] for i in np.argmin(d[0] + d[1] + d[2], axis=1)]


def positions(character: Character) -> list[Vector | None]:
    """World positions of the 18 keypoints in the current pose (None where the rig lacks the bone)."""
    world = character.armature.matrix_world
    points: list[Vector | None] = []
    for bone_name, where in KEYPOINT_SOURCES:
        pb = pose_bone(character, bone_name)
        if pb is None:
            points.append(None)
        elif where == "head":
            points.append(world @ pb.head)
        elif where == "tail":
            points.append(world @ pb.tail)
        else:
            # A point fixed in the bone's rest frame (offsets in bone lengths), carried by the bone's pose.
            bone = pb.bone
            at_rest = bone.head_local + Vector(where) * bone.length
            points.append(world @ (pb.matrix @ bone.matrix_local.inverted() @ at_rest))
    return points


def _occluder(body: PosedBody, cam: bpy.types.Object, point: Vector, margin: float) -> Vector | None:
    """Where the ray from the camera to ``point`` meets a surface clearly in front of it, or None."""
    if cam.data.type == "ORTHO":
        forward = cam.matrix_world.to_3x3() @ Vector((0.0, 0.0, -1.0))
        origin = point - forward * (forward.dot(point - cam.matrix_world.translation))
    else:
        origin = cam.matrix_world.translation
    hit = body.first_hit(origin, point)
    if hit is None:
        return None
    slack = (point - origin).length - (hit - origin).length
    return None if slack <= 2.0 * body.surface_distance(point) + margin else hit


def project(character: Character, parts: BodyParts, cam: bpy.types.Object, figure_height: float,
            occlusion: bool = True) -> np.ndarray:
    """18 x (x, y, visibility) in pixels (origin top-left), for the scene's current pose and camera.

    Invisible keypoints keep their projected x, y (0, 0 when behind the camera or missing).
    ``occlusion=False`` marks every in-frame keypoint visible (for the standard pose template).
    """
    scene = bpy.context.scene
    body = PosedBody(character, parts, bpy.context.evaluated_depsgraph_get()) if occlusion else None
    width = scene.render.resolution_x * scene.render.resolution_percentage // 100
    height = scene.render.resolution_y * scene.render.resolution_percentage // 100
    out = np.zeros((len(KEYPOINT_SOURCES), 3), np.float32)
    occluders: dict[int, Vector] = {}
    for i, point in enumerate(positions(character)):
        if point is None:
            continue
        u, v, depth = world_to_camera_view(scene, cam, point)
        if depth <= cam.data.clip_start:
            continue
        x, y = u * width, (1.0 - v) * height
        out[i, :2] = (x, y)
        if not (0.0 <= x < width and 0.0 <= y < height):
            continue
        hit = None if body is None else _occluder(body, cam, point, MARGIN * figure_height)
        if hit is None:
            out[i, 2] = 1.0
        elif i not in FACE_POINTS:
            occluders[i] = hit
    # A joint stays visible when what hides it is the flesh of a bone meeting at the joint.
    if occluders:
        for i, bone in zip(occluders, body.bones_at(list(occluders.values()))):
            out[i, 2] = float(bone in JOINT_BONES[i])
    return out
