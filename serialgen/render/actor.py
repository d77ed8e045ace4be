"""The long-lived Ray render actor: one bpy scene per actor process, one character loaded at a time.

This module does not import bpy; the actor imports the worker (and bpy) in its own process, so the
driver that creates actors never loads Blender.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from serialgen.config import RenderSettings
from serialgen.render.plan import ChunkResult, RenderItem


class RenderActor:
    """Wraps :class:`serialgen.render.worker.RenderWorker`; create with ``ray.remote(...)(RenderActor)``."""

    def __init__(self, settings: RenderSettings) -> None:
        from serialgen.render.worker import RenderWorker

        self.worker = RenderWorker(settings)

    def render_chunk(self, character_id: str, glb: bytes, items: Sequence[RenderItem],
                     poses: Mapping[str, tuple[list[str], list[list[float]]]], standard: bool) -> ChunkResult:
        return self.worker.render_chunk(character_id, glb, items, poses, standard)
