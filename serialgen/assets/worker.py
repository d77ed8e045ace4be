"""bpy worker processes for the assets stage.

bpy is one scene per process and not thread-safe, so per-file work runs in a
``ProcessPoolExecutor`` of *spawned* processes, each importing bpy once and handling many
files (one task = a batch of files). A file that kills its worker (a crashing importer)
breaks the pool: the pool is rebuilt, the unfinished batches are retried one file at a time,
and a file that kills a worker again is reported as an error instead of stopping the stage.

Why a process pool and not Ray actors: the work is short per-file jobs on files the driver has
locally, with no data to share through an object store; what matters is isolating a crashing
importer and blaming the right file, which a spawned pool does in a few lines, and the stage then
runs without starting a Ray runtime (a few seconds and memory on a laptop). The render stage,
which has to scale out to a cluster, uses Ray. The driver imports this module without loading Blender:
bpy is imported in the workers only.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.util
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from serialgen.blender_io import disable_auto_exec
from serialgen.synthetic.character_filter import Facts


class WorkerCrash(Exception):
    """The worker process died while handling this item."""


def _init_worker() -> None:
    """Load bpy once, silence its console chatter (failures come back as results), never auto-run scripts."""
    # A parent that imported bpy hands its sys.path, with Blender's script folders, to spawned
    # children; there ``import bpy`` would find Blender's inner package instead of the module.
    sys.path[:] = [p for p in sys.path if f"{os.sep}bpy{os.sep}" not in p]
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    import logging

    import bpy

    logging.disable(logging.WARNING)
    disable_auto_exec()
    # pool workers end through multiprocessing's exit path, where bpy's own temp-dir cleanup does not run
    multiprocessing.util.Finalize(None, shutil.rmtree, args=(bpy.app.tempdir, True), exitpriority=0)


def audit_batch(paths: Sequence[str], thumbnail_size: tuple[int, int], thumbnail_samples: int) -> list:
    """Per file: its audit facts (an unexpected failure becomes the file's error, not the stage's)."""
    from serialgen.assets.audit import collect_facts

    out = []
    for path in paths:
        try:
            out.append(collect_facts(path, thumbnail_size, thumbnail_samples))
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
            out.append(Facts(Path(path).suffix.lstrip(".").lower(), error=f"{type(exc).__name__}: {exc}"))
    return out


def motion_batch(paths: Sequence[str], frame_step: int) -> list:
    """Per file: its sampled clips, or the reason it has none (a string)."""
    from serialgen.assets.motions import MotionLoadError, extract_clips

    out = []
    for path in paths:
        try:
            out.append(extract_clips(path, frame_step))
        except MotionLoadError as exc:
            out.append(str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
            out.append(f"{type(exc).__name__}: {exc}")
    return out


def generate_batch(seeds: Sequence[int], out_dir: str) -> list[tuple[str, dict]]:
    """Generate procedural characters ``seeds`` as GLB files in ``out_dir``: (path, spec) each."""
    from serialgen.assets.procedural import generate_glb

    out = []
    for seed in seeds:
        path = str(Path(out_dir) / f"procedural-{seed:06d}.glb")
        out.append((path, generate_glb(seed, path).to_json()))
    return out


class WorkerPool:
    """Spawned bpy worker processes; :meth:`map` runs a batch function over items."""

    def __init__(self, workers: int, initializer: Callable[[], None] | None = _init_worker):
        self.workers = max(1, workers)
        self.initializer = initializer
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def start(self) -> "WorkerPool":
        """Start the worker processes now (they load bpy once), e.g. to time work without start-up."""
        self._executor()
        return self

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=self.initializer)
            # start every worker now (the executor would spawn them one by one, mid-run)
            for future in [self._pool.submit(time.sleep, 0.2) for _ in range(self.workers)]:
                future.result()
        return self._pool

    def _restart(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None

    def map(self, fn: Callable[..., list], items: Sequence[Any], batch_size: int,
            *args: Any) -> Iterator[tuple[Any, Any]]:
        """Yield (item, result) as batches finish; result is a :class:`WorkerCrash` for an item that kills its worker.

        When a worker dies every batch in flight fails: batches are split and retried, and single
        items that failed are retried alone, so a crash is only blamed on the item that caused it.
        """
        batches = [list(items[i:i + batch_size]) for i in range(0, len(items), batch_size)]
        alone: list[Any] = []
        while batches:
            futures = {self._executor().submit(fn, batch, *args): batch for batch in batches}
            batches, broken = [], False
            for future in as_completed(futures):
                batch = futures[future]
                try:
                    results = future.result()
                except BrokenProcessPool:
                    broken = True
                    if len(batch) > 1:
                        batches.extend([item] for item in batch)
                    else:
                        alone.append(batch[0])
                    continue
                yield from zip(batch, results)
            if broken:
                self._restart()
        for item in alone:
            try:
                result = self._executor().submit(fn, [item], *args).result()[0]
            except BrokenProcessPool:
                self._restart()
                result = WorkerCrash(f"the worker process died while handling {item}")
            yield item, result
