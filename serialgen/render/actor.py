"""The long-lived Ray render actor: one bpy scene per actor process, one character loaded at a time.

This module does not import bpy; the actor imports the worker (and bpy) in its own process, so the
driver that creates actors never loads Blender.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence

from serialgen.config import RenderSettings
from serialgen.synthetic.render_plan import ChunkResult, RenderItem


@contextlib.contextmanager
def blender_sized_for(cpus: int) -> Iterator[None]:
    """Let Blender's thread pool (TBB), which ``import bpy`` sizes from the CPUs the process may use, see ``cpus``.

    With one render thread Cycles caps TBB at one thread, yet a pool worker Blender started for all
    CPUs stays and spins in ``sched_yield`` at 100 % of a core, during renders and, with persistent
    data, between them: twice the CPU per image, taken from the other workers. The import runs on
    ``cpus`` CPUs chosen by pid (workers starting together import in parallel); afterwards every
    thread gets all the process's CPUs back and only the pool keeps its size. No effect once bpy is imported.
    """
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not 0 < cpus < len(allowed):
        yield
        return
    first = os.getpid() % len(allowed)
    os.sched_setaffinity(0, [allowed[(first + i) % len(allowed)] for i in range(cpus)])
    try:
        yield
    finally:
        for thread in os.listdir("/proc/self/task"):   # threads started meanwhile inherited the narrow set
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(int(thread), allowed)


class RenderActor:
    """Wraps :class:`serialgen.render.worker.RenderWorker`; create with ``ray.remote(...)(RenderActor)``."""

    def __init__(self, settings: RenderSettings) -> None:
        gpu_ids: list[str] = []
        if settings.gpus_per_worker > 0:
            import ray

            gpu_ids = [str(g) for g in ray.get_gpu_ids()]
            # CUDA numbers CUDA_VISIBLE_DEVICES as Ray (NVML) does; read when Blender first starts CUDA.
            os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        with blender_sized_for(settings.threads_per_worker):
            from serialgen.render.worker import RenderWorker

        self.worker = RenderWorker(settings, gpu_ids)

    def render_chunk(self, character_id: str, glb: bytes, items: Sequence[RenderItem],
                     poses: Mapping[str, tuple[list[str], list[list[float]]]], standard: bool) -> ChunkResult:
        return self.worker.render_chunk(character_id, glb, items, poses, standard)
