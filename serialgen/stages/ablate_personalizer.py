"""Stage driver: the paper's Table 2 at small scale (no Prefect): the three personalizer training modes on
the pipeline's base model, with the same budget, plus controls, scored on held-out characters by the probes.

Reads the captioned synthetic images (:mod:`serialgen.training.captioned`), the base model of
`train-base`, the standardizer (``standardize.model_dir`` or the latest `train-standardizer` run), the
probes (`train-probes`) and the mask model (`train-preprocessors`). Trains one adapter per mode under
``<personalizer checkpoint dir>/table2/<mode>/`` (resumable), generates every scored character with
:data:`PROMPTS` and two seeds per row, and writes ``table2.md``, ``table2_grid.png``, `evaluations` rows
(stage ``personalized``, domain ``synthetic``) and one `runs` row.

Rows: the three modes; two controls on the two-stage adapter (no reference: the unconditional image, what
the adapter learned for "no image"; shuffled reference: another scored character's standardized reference),
and an oracle row (the two-stage adapter
given the character's rendered standard view instead of the standardizer's output).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from serialgen.checkpoints import content_version, initial_adapter, personalizer_dir, probes_dir, sdxl_folders
from serialgen.compositing.split import SCORED, VALIDATION, held_out_role, split_of
from serialgen.config import Settings
from serialgen.dag import config_hash
from serialgen.evaluation.personalizer_table import PROMPTS, Outputs, markdown, score, summary
from serialgen.models.ip_adapter import save_adapter
from serialgen.models.sdxl import load_sdxl_parts
from serialgen.pipelines.personalization import PersonalizationPipeline
from serialgen.storage.images import decode_image, decode_mask, encode_png
from serialgen.storage.runs import StageRun
from serialgen.synthetic.labelled import labelled_images
from serialgen.imaging import grid
from serialgen.training.captioned import CaptionedImage, captioned, with_references
from serialgen.training.loop import prepare_run_folder, training_recipe
from serialgen.training.personalizer import Personalizer, train_personalizer
from serialgen.training.synthetic_pairs import MODES, source_images, training_pairs

STAGE = "ablate-personalizer"
INPUTS = ["renders", "pairs", "standards", "poses", "motions", "backgrounds"]
SEEDS = (0, 1)
LABELS = {"two_stage": "two-stage (standardized reference)", "paired_one_stage": "paired one-stage",
          "unpaired": "unpaired one-stage", "no_reference": "control: no reference (the unconditional image)",
          "shuffled": "control: shuffled reference (two-stage)",
          "oracle": "oracle: two-stage given the rendered standard view"}


@dataclass
class Table2Report:
    run_id: str
    rows: list[Outputs]
    table: Path
    grid: Path
    metrics: dict[str, Any]


def table_dir(settings: Settings) -> Path:
    return personalizer_dir(settings, "table2")


def run_ablate_personalizer(settings: Settings, modes: list[str] | None = None, characters: int | None = None,
                            role: str = SCORED, flow_run_id: str | None = None,
                            log: Callable[[str], None] = print) -> Table2Report:
    """Train the adapters of ``modes`` (default all three), generate, score and record the table.

    ``role``: which half of the held-out characters is scored: ``scored`` (the reported table) or
    ``validation`` (recipe choices: learning rate, steps, guidance), never both for one decision."""
    from serialgen.inference.standardize import resolve_model_dir
    from serialgen.preprocessing import load_preprocessors
    from serialgen.probes import load_probes

    if role not in (SCORED, VALIDATION):
        raise ValueError(f"role must be {SCORED!r} or {VALIDATION!r}, got {role!r}")
    modes = list(modes or MODES)
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise ValueError(f"unknown mode(s) {unknown}; choose from {list(MODES)}")
    cfg = settings.personalizer
    size = (cfg.height, cfg.width)
    lake = settings.open_lake()
    out_dir = table_dir(settings)
    started = time.perf_counter()
    with StageRun(lake, STAGE, config_hash(settings, STAGE), inputs=INPUTS, flow_run_id=flow_run_id) as run:
        base_dir, encoder_dir = sdxl_folders(settings)
        probes = load_probes(probes_dir(settings))
        mask_fn = load_preprocessors(settings).mask
        standardizer_dir = resolve_model_dir(settings).resolve()
        images = captioned(labelled_images(lake), size)
        fraction = settings.composite.test_fraction
        train = [i for i in images if split_of(i.character_id, fraction) == "train"]
        scored = [i for i in images if split_of(i.character_id, fraction) != "train"
                  and held_out_role(i.character_id) == role]
        sources = _sources(train + scored)
        scored_ids = sorted({i.character_id for i in scored} & set(sources))[:characters]
        standardized = _standardize(settings, lake, standardizer_dir, sources)
        log(f"{STAGE}: {len(train)} train images, {len(scored_ids)} scored characters; "
            f"{len(standardized)} sources standardized")
        init = initial_adapter(settings)
        base_version = content_version(base_dir)
        adapters, train_metrics = {}, {}
        for mode in modes:
            start = time.perf_counter()
            model = Personalizer(load_sdxl_parts(base_dir, encoder_dir), cfg.image_tokens, cfg.seed, init)
            targets, references = training_pairs(train, mode)
            data = with_references(
                train, targets, references, model.tokenizers,
                model.embed_references,
                (lambda r: standardized[train[r].key]) if mode == "two_stage" else None)
            folder = out_dir / mode
            prepare_run_folder(folder, {"mode": mode, "image_tokens": cfg.image_tokens, "base": base_version,
                                        "init_adapter": content_version(init) if init is not None else None,
                                        "standardizer": str(standardizer_dir)}, dict(run.inputs), True,
                               training_recipe(cfg))
            result = train_personalizer(model, data, cfg.model_copy(update={"num_workers": 0}), folder)
            adapters[mode] = save_adapter(model.adapter, folder / "model", {"mode": mode, "steps": result.step,
                                                                              "base": str(base_dir)})
            train_metrics[mode] = {"pairs": len(targets), "references": len(set(references)), "steps": result.step,
                                   "final_loss": result.losses[-1] if result.losses else None,
                                   "seconds": round(time.perf_counter() - start, 1),
                                   "version": content_version(adapters[mode])}
            log(f"{STAGE}: {mode} trained on {len(targets)} pairs in {train_metrics[mode]['seconds']} s")
        standards = {i.character_id: i.rgb() for i in scored if i.source == "standard" and i.character_id in scored_ids}
        raw = {c: sources[c].rgb() for c in scored_ids}
        std = {c: standardized[sources[c].key] for c in scored_ids}
        shuffled = {c: std[scored_ids[(k + 1) % len(scored_ids)]] for k, c in enumerate(scored_ids)}
        # row -> (adapter, the references scored against, whether the adapter is given them)
        plan = {"two_stage": ("two_stage", std, True), "paired_one_stage": ("paired_one_stage", raw, True),
                "unpaired": ("unpaired", raw, True), "no_reference": ("two_stage", std, False),
                "shuffled": ("two_stage", shuffled, True),
                "oracle": ("two_stage", standards, True)}
        rows = []
        for name, (mode, references, given) in plan.items():
            if mode not in adapters:
                continue
            start = time.perf_counter()
            outputs = _generate(name, adapters[mode], base_dir, encoder_dir, references, settings, given)
            rows.append(score(outputs, probes, mask_fn, standards))
            log(f"{STAGE}: {name}: {len(outputs.images)} outputs in {time.perf_counter() - start:.0f} s")
        out_dir.mkdir(parents=True, exist_ok=True)
        suffix = "" if role == SCORED else f"_{role}"
        table = out_dir / f"table2{suffix}.md"
        table.write_text(markdown(rows, LABELS) + "\n")
        grid_file = out_dir / f"table2{suffix}_grid.png"
        grid_file.write_bytes(encode_png(_grid(rows, raw, std, scored_ids[:4])))
        lake.upsert("evaluations", _evaluation_rows(run.run_id, rows, adapters, scored_ids), run.run_id)
        run.outputs = ["evaluations"]
        run.metrics = {"training": train_metrics, "role": role, "scored_characters": len(scored_ids),
                       "base_version": base_version, "standardizer": str(standardizer_dir), "prompts": list(PROMPTS),
                       "seeds": list(SEEDS), "train_images": len(train),
                       "table": {r.method: {m: list(v) for m, v in summary(r).items()} for r in rows},
                       "seconds": round(time.perf_counter() - started, 1)}
        run.checkpoint = str(out_dir)
    return Table2Report(run.run_id, rows, table, grid_file, run.metrics)


def _sources(images: list[CaptionedImage]) -> dict[str, CaptionedImage]:
    return {character: images[i] for character, i in source_images(images).items()}


@torch.no_grad()
def _standardize(settings: Settings, lake, model_dir: Path, sources: dict[str, CaptionedImage],
                 batch_size: int = 32) -> dict[str, np.ndarray]:
    """source key -> the standardizer's output for that composited pair, given the estimator-like mask and
    keypoints the pairs table carries (what a segmenter and pose estimator would give)."""
    from serialgen.pipelines.standardization import StandardizationPipeline

    cfg = settings.standardizer
    pipeline = StandardizationPipeline.from_pretrained(model_dir, _device())
    keys = sorted(s.key for s in sources.values())
    wanted = {k.split("/", 1)[1] for k in keys}
    rows = {r["pair_id"]: r for r in lake.read("pairs", columns=["pair_id", "input_image", "background_mask",
                                                                   "reference_pose_image"]).to_pylist()
            if r["pair_id"] in wanted}
    out = {}
    for first in range(0, len(keys), batch_size):
        chunk = [rows[k.split("/", 1)[1]] for k in keys[first:first + batch_size]]
        seeds = [int(hashlib.sha256(r["pair_id"].encode()).hexdigest()[:8], 16) for r in chunk]
        made = pipeline([decode_image(r["input_image"], "RGB") for r in chunk],
                        [decode_mask(r["background_mask"]) for r in chunk],
                        [decode_image(r["reference_pose_image"], "RGB") for r in chunk],
                        num_inference_steps=cfg.inference_steps, guidance_scale=cfg.guidance_scale, seed=seeds,
                        size=(settings.personalizer.height, settings.personalizer.width))
        out.update({f"pair/{r['pair_id']}": image for r, image in zip(chunk, made)})
    return out


def _generate(name: str, adapter: Path, base_dir: Path, encoder_dir: Path, references: dict[str, np.ndarray],
              settings: Settings, given: bool = True) -> Outputs:
    """Every character's :data:`PROMPTS` x :data:`SEEDS`, one batch per character (one reference per batch);
    ``given`` False: the adapter gets the unconditional image instead (the outputs keep ``references`` to be
    scored against)."""
    cfg = settings.personalizer
    pipeline = PersonalizationPipeline(load_sdxl_parts(base_dir, encoder_dir), adapter, _device())
    items = [(c, p, s) for c in sorted(references) for s in SEEDS for p in PROMPTS]
    images, nothing = [], pipeline.unconditional()
    for character in sorted(references):
        mine = [(p, s) for c, p, s in items if c == character]
        embeds = pipeline.embed([references[character]]) if given else torch.cat([nothing, nothing])
        images += pipeline.generate_batch([p for p, _ in mine], embeds, [s for _, s in mine], 1.0, cfg.height,
                                          cfg.width, cfg.inference_steps, cfg.guidance_scale)
    return Outputs(name, [c for c, _, _ in items], [p for _, p, _ in items], [s for _, _, s in items], images,
                   [references[c] for c, _, _ in items])


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _grid(rows: list[Outputs], raw: dict[str, np.ndarray], std: dict[str, np.ndarray], characters: list[str]
          ) -> np.ndarray:
    """Per character and row: reference | standardized | one output per prompt (seed 0); 4 white pixels
    between characters."""
    lines = []
    for character in characters:
        for row in rows:
            outputs = [image for image, c, s in zip(row.images, row.characters, row.seeds)
                       if c == character and s == SEEDS[0]]
            if outputs:
                lines.append([raw[character], std[character], *outputs])
        lines.append([np.full((4, 1, 3), 255, np.uint8)])
    return grid(lines)


def _evaluation_rows(run_id: str, rows: list[Outputs], adapters: dict[str, Path], characters: list[str]) -> list[dict]:
    test_set = "table2 " + hashlib.sha256(("\n".join(characters) + "\n" + "\n".join(PROMPTS)).encode()).hexdigest()[:16]
    out = []
    for row in rows:
        mode = row.method if row.method in adapters else "two_stage"
        for metric, (value, half) in summary(row).items():
            out.append({"evaluation_id": f"{run_id}/{row.method}/{metric}", "test_set": test_set,
                        "method": f"table2 {row.method}", "model_version": content_version(adapters[mode]),
                        "standardizer_version": None, "stage": "personalized", "metric": metric, "value": value,
                        "n": len(row.ap_groups if metric == "ap_id_sim" else row.images), "generation_id": None,
                        "pair_id": None, "character_id": None, "domain": "synthetic", "prompt_category": "all",
                        "details": json.dumps({"run_id": run_id, "interval95": half, "label": LABELS.get(row.method),
                                               "seeds": list(SEEDS)})})
    return out
