"""The render worker: loads one character once and renders all of its items (one bpy scene per process).

:class:`RenderWorker` is plain Python; the render stage runs one per CPU slot (or GPU) as a
long-lived Ray actor. Each item is rendered from its own seed only (pose, viewpoint, expression,
lights and Cycles seed), never from state left by the previous item, so a rerun gives the same bytes.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

import bpy
import numpy as np
from mathutils import Vector

from serialgen.assets.characters import Character
from serialgen.assets.retarget import Rig
from serialgen.config import RenderSettings
from serialgen.pose_drawing import draw_pose
from serialgen.render import camera, keypoints, posing, scene
from serialgen.render.renderer import Renderer, configure
from serialgen.storage.images import encode_mask, encode_png, on_white
from serialgen.synthetic.expressions import describe, sample_expression
from serialgen.synthetic.render_plan import ChunkResult, RenderItem, standard_error_key

#: Alpha above which a pixel belongs to the foreground mask.
MASK_THRESHOLD = 127


def _reason(exc: BaseException) -> str:
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return last[:500]


class RenderWorker:
    """Renders items of one character at a time; loads the next character only when it changes."""

    def __init__(self, settings: RenderSettings, gpu_ids: Sequence[str] = ()) -> None:
        self.settings = settings
        self.gpu_ids = list(gpu_ids)   # the GPUs Ray assigned to this process (device: GPU)
        self.character_id: str | None = None
        self.character: Character | None = None
        self.renderer = Renderer()

    # -- character ----------------------------------------------------------------------
    def load(self, character_id: str, glb: bytes) -> None:
        """Reset the scene and import the character (no-op when it is already loaded)."""
        if character_id == self.character_id:
            return
        self.character_id, self.character = None, None
        self.character = scene.load_character(glb)
        self.character_id = character_id
        configure(self.settings, self.settings.width, self.settings.height, self.gpu_ids)
        self.camera = camera.ensure_camera()
        self.expressions = posing.expressions(self.character, self.settings.expression_keys,
                                              self.settings.expression_prefixes)
        self.parts = keypoints.BodyParts(self.character)
        posing.rest(self.character)
        bpy.context.view_layer.update()
        self.rig = Rig(self.character.armature)
        self.height = max(self._mesh_top(), 1e-3)

    def _mesh_top(self) -> float:
        """Highest point of the deformed meshes in the current pose (world z)."""
        depsgraph = bpy.context.evaluated_depsgraph_get()
        top = -float("inf")
        for obj in self.character.meshes:
            mesh = obj.evaluated_get(depsgraph).data
            co = np.empty(len(mesh.vertices) * 3, np.float32)
            mesh.vertices.foreach_get("co", co)
            world = np.asarray(obj.matrix_world, np.float32)
            z = co.reshape(-1, 3) @ world[2, :3] + world[2, 3]
            top = max(top, float(z.max()))
        return top

    def _joints(self) -> np.ndarray:
        """Every bone head and tail of the current pose (world)."""
        world = self.character.armature.matrix_world
        return np.array([world @ p for pb in self.character.armature.pose.bones for p in (pb.head, pb.tail)])

    def _posed_points(self, framing: camera.Framing) -> np.ndarray:
        """The joints ``framing`` shows in the current pose (world), padded out by the flesh around them."""
        world = self.character.armature.matrix_world
        if framing.mode in camera.CLOSE_UPS:
            whole, heads = camera.CLOSE_UPS[framing.mode]
            bones = [(posing.pose_bone(self.character, b), ends) for names, ends in ((whole, 2), (heads, 1))
                     for b in names]
            joints = np.array([world @ p for pb, ends in bones if pb is not None for p in (pb.head, pb.tail)[:ends]])
        else:
            joints = self._joints()
        flesh = 0.04 if framing.mode == "head" else 0.06
        pad = flesh * self.height * np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)])
        return (joints[:, None, :] + pad[None]).reshape(-1, 3)

    # -- items --------------------------------------------------------------------------
    def stage_item(self, item: RenderItem, bones: Sequence[str],
                   rotations: Sequence[Sequence[float]]) -> tuple[dict[str, float], camera.Framing, np.ndarray]:
        """Pose, frame and light the scene for ``item``, everything but the render call.

        Returns (expression, framing, keypoints). Split from :meth:`render_item` so the same scene can be
        rendered at several engine settings (``benchmarks/bench_render_quality.py``).
        """
        rng = np.random.default_rng(item.seed)
        cfg = self.settings
        expression = sample_expression(rng, self.expressions, cfg.expression_share)
        # First: the pose's update deforms the meshes once.
        posing.set_expression(self.character, expression, self.expressions)
        posing.apply_pose(self.character, self.rig, bones, rotations)
        view = camera.sample_viewpoint(rng)
        framing = camera.sample_framing(rng, cfg.bust_share, cfg.head_share, cfg.cutoff_share, cfg.max_cutoff)
        view = camera.frame_view(view, framing)
        points = camera.kept_points(self._posed_points(framing), framing, view)
        centre = Vector(((points.min(axis=0) + points.max(axis=0)) / 2).tolist())
        target = centre + Vector(rng.normal(0.0, 0.03 * float(np.ptp(points[:, 2])), 3).tolist())
        camera.place_viewpoint(self.camera, view, target, points, framing.fit)
        framing = camera.measured_cut(self.camera, framing, self._joints())
        scene.random_lighting(rng, centre, self.height, view.azimuth_deg)
        bpy.context.view_layer.update()
        return expression, framing, keypoints.project(self.character, self.parts, self.camera, self.height)

    def render_item(self, item: RenderItem, bones: Sequence[str], rotations: Sequence[Sequence[float]]) -> dict[str, Any]:
        """One non-standard render -> its ``renders`` row (``render_seconds``: time inside the render call)."""
        expression, framing, kps = self.stage_item(item, bones, rotations)
        rgba, seconds = self.renderer.render(item.seed)
        width, height = self.settings.width, self.settings.height
        return {
            "character_id": item.character_id, "pose_id": item.pose_id, "view_id": item.view_id,
            "rgba": encode_png(rgba), "mask": encode_mask(rgba[..., 3] > MASK_THRESHOLD),
            "keypoints": kps.tolist(), "pose_image": encode_png(draw_pose(kps, width, height)),
            "camera": camera.camera_vector(self.camera), "expression": describe(expression), "framing": str(framing),
            "width": width, "height": height, "seed": item.seed, "render_seconds": seconds,
        }

    def face_rows(self) -> tuple[Vector, Vector]:
        """Head top (highest mesh point above the face) and chin (the Head bone's head joint) in the current pose."""
        head = posing.pose_bone(self.character, "Head")
        if head is None:
            raise ValueError("the rig has no Head bone; the standard view needs one")
        chin = self.character.armature.matrix_world @ head.head
        return Vector((chin.x, chin.y, self._mesh_top())), chin

    def render_standard(self) -> dict[str, Any]:
        """The standard render: A-pose, neutral expression, front orthographic view, face at fixed rows, white.

        Its keypoints ignore occlusion (a dress does not hide the knees of the target pose): the standard
        pose image is the whole skeleton the standardizer is asked to produce.
        """
        posing.apply_a_pose(self.character, self.settings.standard_arm_angle)
        posing.set_expression(self.character, {}, self.expressions)
        top, chin = self.face_rows()
        camera.place_standard(self.camera, top, chin, self.settings.standard_head_top, self.settings.standard_chin)
        scene.standard_lighting(Vector((chin.x, chin.y, self.height / 2)), self.height)
        bpy.context.view_layer.update()
        kps = keypoints.project(self.character, self.parts, self.camera, self.height, occlusion=False)
        rgba, _ = self.renderer.render(0)
        width, height = self.settings.width, self.settings.height
        return {
            "character_id": self.character_id, "image": encode_png(on_white(rgba)),
            "mask": encode_mask(rgba[..., 3] > MASK_THRESHOLD), "keypoints": kps.tolist(),
            "pose_image": encode_png(draw_pose(kps, width, height)), "width": width, "height": height,
        }

    def render_chunk(self, character_id: str, glb: bytes, items: Sequence[RenderItem],
                     poses: Mapping[str, tuple[Sequence[str], Sequence[Sequence[float]]]],
                     standard: bool) -> ChunkResult:
        """Render ``items`` (and the standard view if asked) of one character; failures become errors."""
        result = ChunkResult()
        start = time.perf_counter()
        try:
            self.load(character_id, glb)
        except Exception as exc:  # noqa: BLE001 - any import failure is this character's error, not the stage's
            reason = f"character load failed: {_reason(exc)}"
            result.errors = [(i.error_key, reason) for i in items]
            if standard:
                result.errors.append((standard_error_key(character_id), reason))
            return result
        result.load_seconds = time.perf_counter() - start
        for item in items:
            start = time.perf_counter()
            try:
                row = self.render_item(item, *poses[item.pose_id])
            except Exception as exc:  # noqa: BLE001 - one bad item must not stop the chunk
                result.errors.append((item.error_key, _reason(exc)))
                continue
            result.renders.append(row)
            result.render_seconds.append(row["render_seconds"])
            result.item_seconds.append(time.perf_counter() - start)
        if standard:
            try:
                result.standard = self.render_standard()
            except Exception as exc:  # noqa: BLE001
                result.errors.append((standard_error_key(character_id), _reason(exc)))
        return result
