"""Render stage driver: accepted characters x sampled poses -> ``renders`` and ``standards`` (no Prefect).

The plan (see :mod:`serialgen.synthetic.render_plan`) minus the keys already in the lake is split into chunks
of one character's items. Each long-lived Ray actor takes one character at a time and renders all
of its chunks in order (it imports the GLB once); every finished chunk is upserted at once, so a
killed run loses at most the chunks in flight and a rerun renders exactly the missing keys.
A chunk lost with its actor's process (killed, out of memory, node lost) is resubmitted, up to
``MAX_CHUNK_RETRIES`` times, to the restarted actor; an item bpy fails on goes to ``errors`` at once.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.compute as pc

from serialgen.config import RenderSettings, Settings
from serialgen.dag import config_hash
from serialgen.imaging import fit_height, grid
from serialgen.pose_drawing import overlay_pose
from serialgen.storage import Lake
from serialgen.storage.images import decode_image
from serialgen.storage.runs import StageRun, require_input
from serialgen.synthetic.render_plan import ChunkResult, RenderItem, plan_by_character, standard_error_key

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
MAX_ERROR_EXAMPLES = 20
MAX_CHUNK_RETRIES = 2       # resubmissions of a chunk whose actor process died under it


@dataclass
class RenderReport:
    """Counts and timings of one render run."""

    run_id: str
    planned: int = 0                  # items in the (limited) plan
    skipped: int = 0                  # planned items already in the lake
    rendered: int = 0
    failed: int = 0
    retried: int = 0                  # chunks resubmitted because their actor's process died under them
    workers_replaced: int = 0         # dead actors replaced by fresh ones
    standards_rendered: int = 0
    standards_failed: int = 0
    standards_skipped: int = 0        # characters whose standard view is already in the lake
    characters: int = 0               # characters with work in this run
    workers: int = 0
    seconds: float = 0.0              # wall time of the whole run
    render_seconds: float = 0.0       # summed time inside the render calls (non-standard items)
    item_seconds: float = 0.0         # summed wall time per item inside the workers
    load_seconds: float = 0.0         # summed time importing characters into the workers
    error_examples: list[tuple[str, str]] = field(default_factory=list)  # the first few; all are in `errors`

    @property
    def overhead_ratio(self) -> float | None:
        """Worker wall time per image / time inside the render call."""
        return self.item_seconds / self.render_seconds if self.render_seconds else None


@dataclass
class _Job:
    """All remaining work of one character."""

    character_id: str
    items: list[RenderItem]
    standard: bool


class _DoneKeys:
    """The rendered (pose_id, view_id) of each character, grouped in Arrow.

    At the paper's scale (~11 M keys) a Python set of every key would not fit a driver; a
    character's keys become Python objects only when its job is built.
    """

    def __init__(self, lake: Lake) -> None:
        table = lake.read("renders", columns=["character_id", "pose_id", "view_id"]).sort_by("character_id")
        counts = pc.value_counts(table.column("character_id"))        # in order of appearance = sorted
        offsets = np.concatenate([[0], np.cumsum(counts.field("counts").to_numpy())])
        self.table = table
        self.slices = {cid: (int(offsets[i]), int(offsets[i + 1] - offsets[i]))
                       for i, cid in enumerate(counts.field("values").to_pylist())}

    def of(self, character_id: str) -> set[tuple[str, int]]:
        if character_id not in self.slices:
            return set()
        part = self.table.slice(*self.slices[character_id])
        return set(zip(part.column("pose_id").to_pylist(), part.column("view_id").to_pylist()))


def _jobs(lake: Lake, report: RenderReport, character_ids: list[str], pose_ids: list[str], cfg: RenderSettings,
          limit: int | None) -> Iterator[_Job]:
    """The plan per character minus what is already rendered, built lazily; counts what it skips."""
    done = _DoneKeys(lake)
    standards_done = {k[0] for k in lake.keys("standards")}
    for character_id, items in plan_by_character(character_ids, pose_ids, cfg.poses_per_character,
                                                  cfg.views_per_pose, cfg.seed, limit):
        rendered = done.of(character_id)
        todo = [i for i in items if (i.pose_id, i.view_id) not in rendered]
        report.skipped += len(items) - len(todo)
        report.standards_skipped += character_id in standards_done
        if todo or character_id not in standards_done:
            report.characters += 1
            yield _Job(character_id, todo, character_id not in standards_done)


@dataclass
class _Chunk:
    """Items of one character in flight on an actor (the last chunk of a job also renders the standard)."""

    actor: int
    character_id: str
    glb: object                  # ObjectRef of the GLB bytes, shared by the job's chunks
    items: list[RenderItem]
    standard: bool
    retries: int = 0


def _glb(lake: Lake, character_id: str) -> bytes:
    quoted = character_id.replace("'", "''")
    table = lake.read("characters", columns=["normalized_glb"], filter=f"character_id = '{quoted}'")
    return table.column("normalized_glb")[0].as_py()


def run_render(settings: Settings, limit: int | None = None, progress: Progress | None = None,
               flow_run_id: str | None = None) -> RenderReport:
    """Render every planned, not yet rendered item (``limit``: the first ``limit`` planned items only).

    ``progress(settled, total)`` is called after each commit: planned items and standard views that are
    settled (found in the lake, written or failed) out of all of them.
    """
    import ray

    from serialgen.render.actor import RenderActor
    from serialgen.runtime import init_ray

    cfg = settings.render
    limit = cfg.limit if limit is None else limit
    lake = settings.open_lake()
    start = time.perf_counter()
    require_input(lake, "characters", "render", "assets", filter="status = 'accepted'")
    require_input(lake, "poses", "render", "assets")
    with StageRun(lake, "render", config_hash(settings, "render"), inputs=["characters", "poses"],
                  flow_run_id=flow_run_id, max_failure_share=settings.dag.max_failure_share) as run:
        report = RenderReport(run.run_id)
        character_ids = sorted(lake.read("characters", columns=["character_id"], filter="status = 'accepted'")
                               .column("character_id").to_pylist())
        poses_table = lake.read("poses", columns=["pose_id", "bones", "rotations"])
        poses = dict(zip(poses_table.column("pose_id").to_pylist(),
                         zip(poses_table.column("bones").to_pylist(), poses_table.column("rotations").to_pylist())))
        per_character = min(cfg.poses_per_character, len(poses)) * cfg.views_per_pose
        report.planned = len(character_ids) * per_character if limit is None \
            else min(limit, len(character_ids) * per_character)
        # Standards: one per character the limit reaches.
        standards = len(character_ids) if limit is None or not per_character else -(-report.planned // per_character)
        total = report.planned + standards
        jobs = _jobs(lake, report, character_ids, sorted(poses), cfg, limit)
        first = list(itertools.islice(jobs, cfg.workers))   # no more actors than characters with work
        known_errors = set(lake.read("errors", columns=["key"], filter="stage = 'render'").column("key").to_pylist())
        if first:
            init_ray(settings.ray)
            # No restarts: a worker that dies is replaced by a fresh actor (see _dispatch), so a permanently
            # dead one never keeps receiving chunks that fail at once.
            actor_cls = ray.remote(num_cpus=cfg.threads_per_worker, num_gpus=cfg.gpus_per_worker,
                                   max_restarts=0)(RenderActor)
            actors = [actor_cls.remote(cfg) for _ in first]
            report.workers = len(actors)
            committed = 0

            def on_commit(n: int) -> None:  # items and standards now settled: in the lake before, written or failed
                nonlocal committed
                committed += n
                if progress is not None:
                    progress(report.skipped + report.standards_skipped + committed, total)

            try:
                _dispatch(lake, run, report, itertools.chain(first, jobs), poses, actors, cfg.chunk_size,
                          known_errors, on_commit, lambda: actor_cls.remote(cfg))
            finally:
                for actor in actors:
                    ray.kill(actor)
        for table in ("renders", "standards"):
            lake.maintain(table)
        report.seconds = time.perf_counter() - start
        run.attempted = report.rendered + report.failed + report.standards_rendered + report.standards_failed
        run.outputs = ["renders", "standards"]
        run.metrics = {k: v for k, v in vars(report).items() if k not in ("run_id", "error_examples")}
        run.metrics["overhead_ratio"] = report.overhead_ratio
    return report


def _dispatch(lake: Lake, run: StageRun, report: RenderReport, jobs: Iterator[_Job], poses: dict, actors: list,
              chunk_size: int, known_errors: set[str], on_commit: Callable[[int], None],
              new_actor: Callable[[], Any]) -> None:
    """Give each idle actor the next character; commit chunk results as they arrive. An actor whose process
    died is replaced by ``new_actor()`` (in ``actors``, so the caller kills the replacement too)."""
    import ray

    pending: dict = {}                       # ObjectRef -> (_Chunk, the actor handle it was sent to)
    busy = [0] * len(actors)                 # chunks in flight per actor slot
    # The actor's process died under the chunk: nothing is wrong with the items.
    lost = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.ObjectLostError,
            ray.exceptions.NodeDiedError)

    def submit(chunk: _Chunk) -> None:
        needed = {i.pose_id: poses[i.pose_id] for i in chunk.items}
        actor = actors[chunk.actor]
        ref = actor.render_chunk.remote(chunk.character_id, chunk.glb, chunk.items, needed, chunk.standard)
        pending[ref] = (chunk, actor)

    def replace(a: int, dead: Any) -> None:
        if actors[a] is dead:                # the slot's other lost chunks find it already replaced
            ray.kill(dead, no_restart=True)
            actors[a] = new_actor()
            report.workers_replaced += 1

    def assign(a: int) -> None:
        job = next(jobs, None)
        if job is None:
            return
        glb = ray.put(_glb(lake, job.character_id))
        chunks = [job.items[i:i + chunk_size] for i in range(0, len(job.items), chunk_size)] or [[]]
        for n, items in enumerate(chunks):
            submit(_Chunk(a, job.character_id, glb, items, job.standard and n == len(chunks) - 1))
            busy[a] += 1

    for a in range(len(actors)):
        assign(a)
    while pending:
        ray.wait(list(pending), num_returns=1)                                   # block for the first,
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)  # then take all that are done
        results = []
        for ref in ready:
            chunk, actor = pending.pop(ref)
            a, items, standard, character_id = chunk.actor, chunk.items, chunk.standard, chunk.character_id
            try:
                results.append(ray.get(ref))
            except ray.exceptions.RayError as exc:
                if isinstance(exc, lost):
                    replace(a, actor)
                if isinstance(exc, lost) and chunk.retries < MAX_CHUNK_RETRIES:
                    chunk.retries += 1
                    report.retried += 1
                    log.warning("render chunk of %s lost with its worker (%s); retry %d of %d on a new worker",
                                character_id, type(exc).__name__, chunk.retries, MAX_CHUNK_RETRIES)
                    submit(chunk)            # to the slot's replacement actor; the slot stays busy
                    continue
                # bpy raised on these items (a bad input), or the worker died under them too often
                reason = f"render worker failed: {str(exc).strip().splitlines()[0][:400]}"
                failed = ChunkResult(errors=[(i.error_key, reason) for i in items])
                if standard:
                    failed.errors.append((standard_error_key(character_id), reason))
                results.append(failed)
            busy[a] -= 1
            if busy[a] == 0:
                assign(a)
        if results:
            on_commit(_commit(lake, run, report, results, known_errors))


def _commit(lake: Lake, run: StageRun, report: RenderReport, results: list[ChunkResult], known_errors: set[str]) -> int:
    """Upsert the rows of finished chunks, record their errors, clear the errors of what now succeeded."""
    renders = [row for r in results for row in r.renders]
    standards = [r.standard for r in results if r.standard is not None]
    errors = [e for r in results for e in r.errors]
    lake.upsert("renders", renders, run.run_id)
    lake.upsert("standards", standards, run.run_id)
    run.errors(errors)
    succeeded = [f"{r['character_id']}/{r['pose_id']}/{r['view_id']}" for r in renders]
    succeeded += [standard_error_key(r["character_id"]) for r in standards]
    run.clear_errors([k for k in succeeded if k in known_errors])
    report.rendered += len(renders)
    report.standards_rendered += len(standards)
    n_standard_errors = sum(k.endswith("/standard") for k, _ in errors)
    report.standards_failed += n_standard_errors
    report.failed += len(errors) - n_standard_errors
    report.error_examples += errors[:MAX_ERROR_EXAMPLES - len(report.error_examples)]
    report.render_seconds += sum(s for r in results for s in r.render_seconds)
    report.item_seconds += sum(s for r in results for s in r.item_seconds)
    report.load_seconds += sum(r.load_seconds for r in results)
    return len(renders) + len(standards) + len(errors)


def contact_sheet(lake: Lake, characters: int = 3, views: int = 4, cell_height: int = 192) -> np.ndarray | None:
    """One row per character: its standard image, then ``views`` renders with their keypoints drawn (RGB)."""
    standards = lake.read("standards", columns=["character_id", "image", "keypoints"])
    if standards.num_rows == 0:
        return None
    standards = standards.sort_by("character_id").slice(0, characters)
    rows = []
    for character_id, image, kps in zip(*(standards.column(c).to_pylist() for c in ("character_id", "image", "keypoints"))):
        quoted = character_id.replace("'", "''")
        renders = lake.read("renders", columns=["pose_id", "view_id", "rgba", "keypoints"],
                            filter=f"character_id = '{quoted}'").sort_by([("pose_id", "ascending"), ("view_id", "ascending")])
        cells = [overlay_pose(decode_image(image, "RGB"), np.asarray(kps))]
        cells += [overlay_pose(decode_image(rgba, "RGBA"), np.asarray(k)) for rgba, k in
                  zip(renders.column("rgba").to_pylist()[:views], renders.column("keypoints").to_pylist()[:views])]
        rows.append([fit_height(c, cell_height) for c in cells])
    return grid(rows, gutter=2, background=(90, 90, 90))
