"""The standardize stage: `real_images` -> masks and poses -> batched DDIM standardization -> `standardized`.

Pipeline: ``lance_ray.read_lance(real_images)`` (light read tasks) -> ``map_batches`` on an explicit
``ActorPoolStrategy`` of ``standardize.workers`` standardizer replicas (one per GPU on a cluster;
on CPUs sized so a read task still fits) -> the driver commits each block with :meth:`Lake.upsert`
on (image_id, model_version), every ``standardize.write_rows`` rows. Images already standardized by
this model version are never sent; another model version adds its rows beside them.

Per batch (:class:`ImageStandardizer`, shared by the actors and :func:`standardize_images`): the
background mask (rembg; an image's own alpha when it has one) and the COCO-18 pose (DWPose) of each
image, pad-to-frame at the model's 2:3 size with the padding box kept, then one DDIM call for the
batch with one seed per image, toward the canonical standard skeleton saved with the model. Images
with an empty mask or no person go to `errors`.
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
from serialgen.pose_drawing import draw_pose
from serialgen.runtime import init_ray
from serialgen.stages.composite import READ_CPUS, _Sink, actor_cpus
from serialgen.stages.registry import config_hash
from serialgen.storage.images import decode_image, encode_mask, encode_png
from serialgen.storage.runs import StageRun, last_completed
from serialgen.storage.schemas import STANDARDIZED

STAGE = "standardize"
SAMPLER = "DDIM"
#: A standardize batch: `standardized` rows plus the reason an image failed (null when it did not).
BATCH_SCHEMA = STANDARDIZED.payload_schema.append(pa.field("error", pa.string()))
BLOCK_BATCHES = 2


@dataclass
class StandardizedImage:
    image: np.ndarray                          # HxWx3 uint8 standardized (white background, A-pose, front)
    input_mask: np.ndarray                     # padded-frame mask, 255 = background
    reference_keypoints: np.ndarray            # (18, 3) padded-frame pixels, score
    padding_box: tuple[int, int, int, int]     # where the original sits in the frame (left, top, right, bottom)
    model_version: str                         # standardizer version


# -- the model ------------------------------------------------------------------------------

def resolve_model_dir(settings: Settings) -> Path:
    """``standardize.model_dir``, else the model of the latest completed train-standardizer run of this profile."""
    configured = settings.standardize.model_dir
    if configured is not None:
        folder = Path(configured).expanduser()
        if not (folder / "standardizer.json").is_file():
            raise FileNotFoundError(f"missing standardizer.json in {folder}: the standardizer model folder "
                                    "(standardize.model_dir, written by `serialgen train-standardizer`)")
        return folder
    run = last_completed(settings.open_lake(), "train-standardizer")
    if run is None or not run["checkpoint"]:
        raise FileNotFoundError(f"no trained standardizer in lake {settings.lake}: run `serialgen train-standardizer` "
                                "or set standardize.model_dir")
    folder = Path(run["checkpoint"])
    folder = folder if (folder / "standardizer.json").is_file() else folder / "model"
    marker = folder.parent / "training.json"
    trained = json.loads(marker.read_text()).get("profile") if marker.is_file() else None
    if trained not in (None, settings.profile):
        raise FileNotFoundError(f"no {settings.profile} standardizer: the latest train-standardizer run ({folder}) "
                                f"trained profile {trained}; train one with this profile or set standardize.model_dir")
    if not (folder / "standardizer.json").is_file():
        raise FileNotFoundError(f"missing standardizer.json in {folder}: the model folder of run {run['run_id']}")
    return folder


def model_version(folder: Path) -> str:
    """``<folder>@<hash>`` of the model's file names, sizes and first/last MiB: changes with the weights."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(folder)}:{size}".encode())
        with open(path, "rb") as fh:
            digest.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(-(1 << 20), 2)
                digest.update(fh.read())
    return f"{folder.parent.name}/{folder.name}@{digest.hexdigest()[:12]}"


class ImageStandardizer:
    """One standardizer replica: preprocessors + pipeline, loaded once, run on batches of images."""

    def __init__(self, settings: Settings, model_dir: Path | None = None, device: str | None = None) -> None:
        import torch

        from serialgen.pipelines import StandardizationPipeline
        from serialgen.preprocessing import load_preprocessors

        self.preprocessors = load_preprocessors(settings)   # path errors before the (larger) model loads
        folder = model_dir or resolve_model_dir(settings)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.float16 if device == "cuda" and settings.standardizer.mixed_precision == "fp16" else None
        self.pipeline = StandardizationPipeline.from_pretrained(folder, device, dtype)
        if self.pipeline.model.standard_keypoints is None:
            raise FileNotFoundError(f"missing standard_keypoints.json in {folder}: the canonical target skeleton "
                                    "(saved by train-standardizer)")
        self.version = model_version(folder)
        self.settings = settings
        self.size = self.pipeline.model.standard_pose.shape[:2]

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple] | str:
        """(RGB, background mask, frame keypoints, padding box) of one image, or why it cannot be standardized."""
        from serialgen.pipelines.standardization import pad_to_frame

        cfg = self.settings
        foreground = self.preprocessors.mask(image)
        share = float((foreground >= 128).mean())
        if share < cfg.standardize.min_foreground:
            return f"empty mask: foreground covers {share:.2%} of the image (< {cfg.standardize.min_foreground:.0%})"
        rgb = _on_white(image)
        keypoints = self.preprocessors.pose(rgb)
        if not (keypoints[:, 2] > cfg.preprocessing.keypoint_threshold).any():
            return "no person found: no keypoint above the detection threshold"
        background, box = pad_to_frame(255 - foreground, self.size, 255)
        h, w = image.shape[:2]
        scale = np.array([(box[2] - box[0]) / w, (box[3] - box[1]) / h], np.float32)
        frame = np.concatenate([keypoints[:, :2] * scale + box[:2], keypoints[:, 2:]], 1).astype(np.float32)
        return rgb, background, frame, box

    def __call__(self, images: Sequence[np.ndarray], seeds: Sequence[int]) -> list[StandardizedImage | str]:
        """Standardize a batch; a string in place of an image's result says why it failed."""
        cfg = self.settings
        prepared = [self.prepare(im) for im in images]
        ok = [i for i, p in enumerate(prepared) if not isinstance(p, str)]
        out: list[StandardizedImage | str] = list(prepared)  # errors stay in place
        if not ok:
            return out
        height, width = self.size
        threshold = cfg.preprocessing.keypoint_threshold
        poses = [draw_pose(np.concatenate([prepared[i][2][:, :2], (prepared[i][2][:, 2:] > threshold)], 1),
                           width, height) for i in ok]
        results = self.pipeline([prepared[i][0] for i in ok], [prepared[i][1] for i in ok], poses,
                                num_inference_steps=cfg.standardizer.inference_steps,
                                guidance_scale=cfg.standardizer.guidance_scale, seed=[seeds[i] for i in ok])
        for i, result in zip(ok, results):
            _, background, frame, box = prepared[i]
            out[i] = StandardizedImage(result, background, frame, box, self.version)
        return out


def _on_white(image: np.ndarray) -> np.ndarray:
    """RGB of an image; an RGBA one composited over white (what lies under transparent pixels is arbitrary)."""
    if image.ndim == 3 and image.shape[2] == 4:
        alpha = image[..., 3:].astype(np.float32) / 255
        return (image[..., :3] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(image[..., :3])


def image_seed(seed: int, image_id: str) -> int:
    """The sampling seed of one image: a pure function of the stage seed and the image id."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{image_id}".encode()).digest()[:7], "big")


def standardize_images(settings: Settings, images: Sequence[np.ndarray], seed: int = 0) -> list[StandardizedImage]:
    """Standardize in-memory images (image i sampled with seed + i); ValueError naming an image that cannot be."""
    replica = ImageStandardizer(settings)
    batch = settings.standardize.batch_size
    out: list[StandardizedImage] = []
    for first in range(0, len(images), batch):
        chunk = images[first:first + batch]
        for k, result in enumerate(replica(chunk, [seed + first + k for k in range(len(chunk))])):
            if isinstance(result, str):
                raise ValueError(f"image {first + k}: {result}")
            out.append(result)
    return out


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
        sink = _Sink(lake, run)
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

    def tile(image: np.ndarray) -> np.ndarray:
        image = np.repeat(image[..., None], 3, 2) if image.ndim == 2 else image[..., :3]
        width = max(1, round(image.shape[1] * height / image.shape[0]))
        return np.pad(np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)),
                      ((0, 2), (0, 2), (0, 0)), constant_values=255)

    lines = [np.hstack([tile(r[k]) for k in ("original", "mask", "pose", "standardized")]) for r in rows]
    if not lines:
        return None
    width = max(line.shape[1] for line in lines)
    return np.vstack([np.pad(line, ((0, 0), (0, width - line.shape[1]), (0, 0)), constant_values=255)
                      for line in lines])
