"""The standardize stage: `real_images` -> masks and poses -> batched DDIM standardization -> `standardized`.

Pipeline: ``lance_ray.read_lance(real_images)`` (light read tasks) -> ``map_batches`` on an explicit
``ActorPoolStrategy`` of ``standardize.workers`` standardizer replicas (one per GPU on a cluster;
on CPUs sized so a read task still fits) -> the driver commits each block with :meth:`Lake.upsert`
on (image_id, model_version), every ``standardize.write_rows`` rows. Images already standardized by
this model version are never sent; another model version adds its rows beside them.

Each actor holds one :class:`serialgen.inference.standardize.ImageStandardizer` (mask, pose, padding,
DDIM toward the canonical standard skeleton). Images with an empty mask or no person go to `errors`.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from serialgen.config import Settings
from serialgen.dag import config_hash
from serialgen.imaging import fit_height, grid
from serialgen.inference.standardize import ImageStandardizer, model_version, resolve_model_dir
from serialgen.pose_drawing import draw_pose
from serialgen.runtime import READ_CPUS, actor_cpus, init_ray
from serialgen.storage.images import decode_image, encode_mask, encode_png
from serialgen.storage.runs import StageRun
from serialgen.storage.schemas import STANDARDIZED
from serialgen.storage.sink import Sink

STAGE = "standardize"
SAMPLER = "DDIM"
#: A standardize batch: `standardized` rows plus the reason an image failed (null when it did not).
BATCH_SCHEMA = STANDARDIZED.payload_schema.append(pa.field("error", pa.string()))
BLOCK_BATCHES = 2


def image_seed(seed: int, image_id: str) -> int:
    """The sampling seed of one image: a pure function of the stage seed and the image id."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{image_id}".encode()).digest()[:7], "big")


# -- the stage ------------------------------------------------------------------------------

@dataclass(frozen=True)
class StandardizeReport:
    run_id: str
    model_version: str
    images: int
    written: int
    skipped: int
    errors: int
    seconds: float
    images_per_second: float

    def as_dict(self) -> dict:
        return asdict(self)


class _StandardizeActor:
    """A Ray actor holding one :class:`ImageStandardizer`; turns `real_images` batches into `standardized` rows."""

    def __init__(self, settings: Settings, model_dir: Path, todo: set[str], threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.replica = ImageStandardizer(settings, model_dir)
        self.settings, self.todo = settings, todo

    def __call__(self, batch: pa.Table) -> pa.Table:
        ids, data = batch.column("image_id").to_pylist(), batch.column("image").to_pylist()
        keep = [i for i, image_id in enumerate(ids) if image_id in self.todo]
        return rows_table(self.replica, [ids[i] for i in keep], [decode_image(data[i]) for i in keep],
                          self.settings)


def rows_table(replica: ImageStandardizer, ids: list[str], images: list[np.ndarray], settings: Settings) -> pa.Table:
    """Standardize ``images`` and return their `standardized` rows (+ ``error``), timing the model per image."""
    start = time.perf_counter()
    results = replica(images, [image_seed(settings.standardize.seed, i) for i in ids]) if ids else []
    seconds = (time.perf_counter() - start) / max(len(ids), 1)
    cfg, rows = settings.standardizer, []
    height, width = replica.size
    for image_id, result in zip(ids, results):
        row = {name: None for name in BATCH_SCHEMA.names}
        row.update(image_id=image_id, model_version=replica.version)
        if isinstance(result, str):
            row["error"] = result
        else:
            threshold = settings.preprocessing.keypoint_threshold
            kp = result.reference_keypoints
            row.update(
                image=encode_png(result.image), input_mask=encode_mask(result.input_mask),
                reference_keypoints=kp.tolist(),
                reference_pose_image=encode_png(draw_pose(np.concatenate([kp[:, :2], kp[:, 2:] > threshold], 1),
                                                          width, height)),
                target_keypoints=replica.pipeline.model.standard_keypoints.tolist(),
                padding_box=list(result.padding_box), width=width, height=height,
                seed=image_seed(settings.standardize.seed, image_id), steps=cfg.inference_steps,
                guidance_scale=cfg.guidance_scale, sampler=SAMPLER,
                preprocessors=json.dumps(replica.preprocessors.versions), seconds=seconds)
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=BATCH_SCHEMA)


def run_standardize(settings: Settings, limit: int | None = None, flow_run_id: str | None = None,
                    progress: Callable[[int, int], None] | None = None) -> StandardizeReport:
    """Standardize every image of `real_images` this model version has not done yet (at most ``limit``)."""
    import lance_ray
    import ray
    from ray.data import ActorPoolStrategy

    from serialgen.preprocessing import check_files, model_files

    cfg = settings.standardize
    limit = cfg.limit if limit is None else limit
    lake = settings.open_lake()
    check_files(model_files(settings))   # the one-line path error before Ray starts
    folder = resolve_model_dir(settings)
    version = model_version(folder)
    start = time.perf_counter()
    with StageRun(lake, STAGE, config_hash(settings, STAGE), inputs=["real_images"], flow_run_id=flow_run_id) as run:
        sink = Sink(lake, run)
        ids = lake.read("real_images", columns=["image_id"]).column("image_id").to_pylist()
        done = {i for i, v in lake.keys("standardized") if v == version}
        todo = [i for i in ids if i not in done][:limit]
        written = 0
        if todo:
            init_ray(settings.ray)
            cpus = actor_cpus(cfg.workers, ray.cluster_resources()["CPU"])
            images = lance_ray.read_lance(
                lake.table_uri("real_images"), columns=["image_id", "image"],
                storage_options=dict(lake.storage_options) or None,
                dataset_options={"version": lake.version("real_images")}, ray_remote_args={"num_cpus": READ_CPUS},
                override_num_blocks=max(1, math.ceil(len(ids) / (BLOCK_BATCHES * cfg.batch_size))))
            out = images.map_batches(
                _StandardizeActor, batch_size=cfg.batch_size, batch_format="pyarrow",
                compute=ActorPoolStrategy(size=cfg.workers), num_cpus=cpus, num_gpus=cfg.gpus_per_worker or None,
                fn_constructor_kwargs={"settings": settings, "model_dir": folder, "todo": set(todo),
                                       "threads": max(1, int(cpus))})
            seen, pending = 0, []
            for block in out.iter_batches(batch_size=None, batch_format="pyarrow"):
                pending.append(block)
                if sum(b.num_rows for b in pending) >= cfg.write_rows:
                    table = pa.concat_tables(pending)
                    written += sink.commit("standardized", "image_id", table).num_rows
                    seen, pending = seen + table.num_rows, []
                    if progress is not None:
                        progress(seen, len(todo))
            if pending:
                table = pa.concat_tables(pending)
                written += sink.commit("standardized", "image_id", table).num_rows
                if progress is not None:
                    progress(seen + table.num_rows, len(todo))
            run.outputs = ["standardized"]
        seconds = time.perf_counter() - start
        run.metrics = {"model_version": version, "written": written, "skipped": len(done),
                       "images_per_second": written / seconds if seconds else 0.0}
        run.checkpoint = str(folder)
    return StandardizeReport(run.run_id, version, len(todo), written, len(done & set(ids)), run.n_errors,
                             round(seconds, 2), round(written / seconds, 3) if seconds else 0.0)


def preview_rows(settings: Settings, n: int) -> list[dict]:
    """Up to ``n`` decoded (original, mask, pose, standardized) rows of the newest model version, for the grid."""
    lake = settings.open_lake()
    keys = lake.read("standardized", columns=["image_id", "model_version", "written_at"])
    if keys.num_rows == 0:
        return []
    newest = max(keys.to_pylist(), key=lambda r: r["written_at"])["model_version"]
    ids = [r["image_id"] for r in keys.to_pylist() if r["model_version"] == newest][:n]
    quoted = ", ".join(f"'{i}'" for i in ids)
    rows = lake.read("standardized", columns=["image_id", "image", "input_mask", "reference_pose_image"],
                     filter=f"model_version = '{newest}' AND image_id IN ({quoted})").to_pylist()
    originals = {r["image_id"]: r["image"] for r in
                 lake.read("real_images", columns=["image_id", "image"], filter=f"image_id IN ({quoted})").to_pylist()}
    return [{"original": decode_image(originals[r["image_id"]], "RGB"), "mask": decode_image(r["input_mask"]),
             "pose": decode_image(r["reference_pose_image"], "RGB"), "standardized": decode_image(r["image"], "RGB")}
            for r in rows if r["image_id"] in originals]


def preview_grid(rows: Sequence[dict], height: int = 128) -> np.ndarray | None:
    """HxWx3 uint8 grid, one row per image: original | mask (white = background) | pose | standardized."""
    from PIL import Image

    lines = [[fit_height(r[k], height, Image.Resampling.BILINEAR) for k in ("original", "mask", "pose", "standardized")]
             for r in rows]
    return grid(lines, gutter=2) if lines else None
