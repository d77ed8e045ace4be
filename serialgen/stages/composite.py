"""The composite stage: backgrounds in, then renders x backgrounds -> `pairs`, as a Ray Data pipeline.

Planning: the (render, background slot) pairs not yet in `pairs` are an Arrow hash anti-join on
integer codes of the render keys against the `pairs` key column read in batches
(:func:`serialgen.compositing.plan.missing_pairs`), kept as (render position, slot) rows. Pipeline: those rows (``ray.data.from_arrow``, blocks of a few batches) ->
``map_batches`` on an explicit ``ActorPoolStrategy`` of ``composite.workers`` actors (sized by
:func:`serialgen.runtime.actor_cpus` so a scheduling task always fits beside them; each actor takes its renders from
Lance at the pinned version and looks up standards and backgrounds by key, with a cache) -> the
driver streams the output blocks and commits them with :meth:`Lake.upsert` on ``pair_id`` every
``composite.write_rows`` pairs.

Why the driver writes: ``pairs`` must be upserted (reruns never duplicate), and neither Ray's
``write_lance`` (broken with pylance 14) nor ``lance_ray.write_lance`` (create/append/overwrite
only) merges on a key. Upserting from inside the actors would make every actor a concurrent
committer racing on the manifest (conflict retries) and tie commits to the batch size; one
writer on the driver, fed by Ray's streaming executor while the actors keep compositing, gives
conflict-free commits whose size sets the resume granularity.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from serialgen.compositing.backgrounds import (
    IMAGE_SUFFIXES,
    background_id,
    ingest_image,
    procedural_background_png,
)
from serialgen.compositing.pairs import RENDER_COLUMNS, PairComposer, Planned
from serialgen.compositing.plan import missing_pairs
from serialgen.compositing.split import TEST, split_of
from serialgen.config import CompositeSettings, ConfigError, Settings
from serialgen.dag import config_hash
from serialgen.runtime import actor_cpus, init_ray
from serialgen.sources import list_files, read_bytes
from serialgen.storage import Lake
from serialgen.storage.images import ImageDecodeError
from serialgen.storage.runs import StageRun, last_completed, require_input
from serialgen.storage.schemas import BACKGROUNDS
from serialgen.storage.sink import Sink

log = logging.getLogger(__name__)

#: Batches per Ray Data block (streaming granularity of the pipeline).
BLOCK_BATCHES = 4
PROCEDURAL = "procedural://"
#: An ingest batch: `backgrounds` rows plus the reason a source could not be read (null when it could).
BACKGROUND_BATCH_SCHEMA = BACKGROUNDS.payload_schema.append(pa.field("error", pa.string()))


@dataclass(frozen=True)
class CompositeReport:
    run_id: str
    backgrounds_ingested: int
    backgrounds_generated: int
    backgrounds: int
    renders: int
    pairs_written: int
    pairs_skipped: int
    errors: int
    train_characters: int
    test_characters: int
    dynamic: bool
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


def run_composite(settings: Settings, source: str | None = None, dynamic: bool | None = None,
                  force: bool = False, flow_run_id: str | None = None,
                  progress: Callable[[int, int], None] | None = None) -> CompositeReport:
    """Ingest backgrounds, then (unless dynamic) composite every missing pair into `pairs`.

    ``source``: folder/URI of background images (default ``composite.background_source``).
    ``force``: recomposite pairs that exist (they are replaced in place, never duplicated); implied when the
    composite settings changed since the last completed run, so no pair keeps an older recipe.
    ``progress(done, total)``: called after each commit of pairs (done includes failed pairs).
    """
    cfg = settings.composite
    dynamic = cfg.dynamic if dynamic is None else dynamic
    lake = settings.open_lake()
    start = time.perf_counter()
    require_input(lake, "renders", "composite", "render")
    settings_hash = config_hash(settings, "composite")
    last = last_completed(lake, "composite")
    if last is not None and last["config_hash"] != settings_hash and not force:
        log.info("composite: settings changed since run %s: every pair is recomposited", last["run_id"])
        force = True
    with StageRun(lake, "composite", settings_hash, inputs=["renders", "standards"],
                  flow_run_id=flow_run_id, max_failure_share=settings.dag.max_failure_share) as run:
        sink = Sink(lake, run)
        init_ray(settings.ray)
        ingested, generated = _ingest_backgrounds(sink, settings, source or cfg.background_source)
        background_ids = sorted(k for (k,) in lake.keys("backgrounds"))
        if not background_ids:
            raise ConfigError("no backgrounds: set composite.backgrounds_procedural > 0 or give a background source")
        run.inputs["backgrounds"] = lake.version("backgrounds")

        renders_version = lake.version("renders")
        keys = lake.read("renders", columns=["character_id", "pose_id", "view_id"], version=renders_version)
        if cfg.limit is not None:
            keys = keys.slice(0, cfg.limit)
        characters = set(pc.unique(keys.column("character_id")).to_pylist())
        n_test = sum(split_of(c, cfg.test_fraction) == TEST for c in characters)
        if characters and n_test == 0:
            log.warning("composite: no character falls in the test split (%d characters)", len(characters))
        pairs = None if force else lake.dataset("pairs")
        stored = () if pairs is None else (b.column(0) for b in pairs.to_batches(columns=["pair_id"]))
        todo = missing_pairs(keys, cfg.backgrounds_per_render, stored)
        skipped = keys.num_rows * cfg.backgrounds_per_render - todo.num_rows
        written = 0
        if not dynamic and todo.num_rows:
            written = _composite_pairs(sink, cfg, background_ids, todo, renders_version, progress)
            run.attempted = todo.num_rows
            run.outputs = ["pairs", "backgrounds"]
        else:
            run.outputs = ["backgrounds"]
        for table in run.outputs:
            lake.maintain(table)
        seconds = time.perf_counter() - start
        run.metrics = {"pairs_written": written, "pairs_per_second": written / seconds if seconds else 0.0,
                       "dynamic": dynamic, "renders": keys.num_rows, "test_characters": n_test,
                       "train_characters": len(characters) - n_test}
    return CompositeReport(
        run_id=run.run_id, backgrounds_ingested=ingested, backgrounds_generated=generated,
        backgrounds=len(background_ids), renders=keys.num_rows, pairs_written=written,
        pairs_skipped=skipped, errors=run.n_errors, train_characters=len(characters) - n_test,
        test_characters=n_test, dynamic=dynamic, seconds=seconds,
    )


# -- backgrounds ----------------------------------------------------------------------------

def _ingest_backgrounds(sink: Sink, settings: Settings, source: str | None) -> tuple[int, int]:
    """Add the missing procedural backgrounds and the images under ``source``; returns (ingested, generated).

    Decoding runs as Ray tasks; unreadable, truncated or oversized files go to `errors`.
    """
    import ray.data

    cfg = settings.composite
    present = set(sink.lake.read("backgrounds", columns=["source_uri"]).column("source_uri").to_pylist())
    uris = [f"{PROCEDURAL}{cfg.seed}/{i}" for i in range(cfg.backgrounds_procedural)]
    uris += list_files(source, IMAGE_SUFFIXES, settings.storage_options) if source else []
    todo = [u for u in uris if u not in present]
    if not todo:
        return 0, 0
    size = (round(settings.render.width * 1.5), round(settings.render.height * 1.5))
    out = ray.data.from_items([{"source_uri": u} for u in todo]).map_batches(
        _background_batch, batch_size=8, batch_format="pyarrow", num_cpus=1,
        fn_kwargs={"cfg": cfg, "procedural_size": size, "storage_options": dict(settings.storage_options)})
    ingested = generated = 0
    for batch in out.iter_batches(batch_size=None, batch_format="pyarrow"):
        good = sink.commit("backgrounds", "source_uri", batch)
        if good.num_rows:
            n_proc = sum(u.startswith(PROCEDURAL) for u in good.column("source_uri").to_pylist())
            generated += n_proc
            ingested += good.num_rows - n_proc
    return ingested, generated


def _background_batch(batch: pa.Table, cfg: CompositeSettings, procedural_size: tuple[int, int],
                      storage_options: dict[str, str]) -> pa.Table:
    """Source URIs -> `backgrounds` rows (+ ``error``): generate procedural ones, decode files safely."""
    rows = []
    for uri in batch.column("source_uri").to_pylist():
        row = {"source_uri": uri, "background_id": uri, "image": None, "width": None, "height": None, "error": None}
        try:
            if uri.startswith(PROCEDURAL):
                seed, index = (int(x) for x in uri[len(PROCEDURAL):].split("/"))
                width, height = procedural_size
                data = procedural_background_png(seed, index, width, height)
                row.update(background_id=f"procedural-{seed}-{index}", image=data, width=width, height=height)
            else:
                raw = read_bytes(uri, storage_options)
                data, width, height = ingest_image(raw, cfg.max_background_pixels, cfg.background_max_side)
                row.update(background_id=background_id(raw), image=data, width=width, height=height)
        except (ImageDecodeError, OSError) as exc:
            row["error"] = str(exc)
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=BACKGROUND_BATCH_SCHEMA)


# -- pairs ----------------------------------------------------------------------------------

class _CompositeActor:
    """One compositing worker: a :class:`PairComposer` (with its caches) per actor, one torch thread.

    Takes planned (render position, slot) batches and reads those renders itself (Lance ``take`` at
    the pinned version), so no table of keys is shipped to it.
    """

    def __init__(self, lake: Lake, cfg: CompositeSettings, background_ids: list[str],
                 versions: dict[str, int | None]) -> None:
        import torch

        torch.set_num_threads(1)
        self.lake, self.version = lake, versions["renders"]
        self.composer = PairComposer(lake, cfg, background_ids, versions)
        self._renders = None

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self._renders is None:
            self._renders = self.lake.dataset("renders", self.version)
        rows, slot = np.unique(batch.column("row").to_numpy(), return_inverse=True)
        renders = self._renders.take(rows, columns=RENDER_COLUMNS)
        planned = [Planned(int(i), int(k)) for i, k in zip(slot, batch.column("k").to_pylist())]
        return self.composer(renders, planned)


def _composite_pairs(sink: Sink, cfg: CompositeSettings, background_ids: list[str], todo: pa.Table,
                     renders_version: int, progress: Callable[[int, int], None] | None) -> int:
    """Composite the planned (``row``, ``k``) pairs with a Ray Data actor pool and commit them; returns
    the number written."""
    import ray
    from ray.data import ActorPoolStrategy

    lake = sink.lake
    versions = {"renders": renders_version, **{t: lake.version(t) for t in ("standards", "backgrounds")}}
    total = todo.num_rows
    # Blocks of BLOCK_BATCHES batches: a block is one actor call whose pairs reach the driver when it
    # ends, so small blocks spread the work over the pool and let the driver commit while the actors
    # composite. Sorted by render, so a block reads neighbouring rows.
    todo, block = todo.sort_by("row"), BLOCK_BATCHES * cfg.batch_size
    planned = ray.data.from_arrow([todo.slice(i, block) for i in range(0, total, block)])  # blocks, no shuffle task
    pairs = planned.map_batches(
        _CompositeActor, batch_size=cfg.batch_size, batch_format="pyarrow",
        compute=ActorPoolStrategy(size=cfg.workers), num_cpus=actor_cpus(cfg.workers, ray.cluster_resources()["CPU"]),
        fn_constructor_kwargs={"lake": lake, "cfg": cfg, "background_ids": background_ids, "versions": versions})
    written, seen, pending = 0, 0, []
    for block in pairs.iter_batches(batch_size=None, batch_format="pyarrow"):
        pending.append(block)
        if sum(b.num_rows for b in pending) >= cfg.write_rows:
            written += sink.commit("pairs", "pair_id", pa.concat_tables(pending)).num_rows
            seen += sum(b.num_rows for b in pending)
            pending = []
            if progress is not None:
                progress(seen, total)
    if pending:
        written += sink.commit("pairs", "pair_id", pa.concat_tables(pending)).num_rows
        if progress is not None:
            progress(seen + sum(b.num_rows for b in pending), total)
    return written


def preview_pairs(settings: Settings, n: int, dynamic: bool = False) -> list[dict]:
    """Up to ``n`` decoded pairs spread over the table (or composited on the fly), for artifacts."""
    from serialgen.compositing.dynamic import DynamicPairs
    from serialgen.storage.torch_reader import PairsDataset

    lake = settings.open_lake()
    if dynamic:
        data = DynamicPairs(lake, settings, "all")
    elif lake.exists("pairs"):
        data = PairsDataset(lake, "all")
    else:
        return []
    return [data.arrays(int(i)) for i in _spread(len(data), n)]


def _spread(total: int, n: int) -> list[int]:
    return np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(int)).tolist() if total else []
