"""Stage driver: the standardizer ablation (paper Table 3) on held-out characters (no Prefect).

Trains the four FBDM/RPIM variants with the same budget under ``<training dir>/ablation/``
(resumable per variant), scores them and three baselines on the test split, and records one
`runs` row plus `evaluations` rows (stage ``standardizer``, metrics ``psnr``/``ssim`` and, when the lake has
trained probes, ``id_sim``/``id_top1``/``id_top5``/``pixel_top1``; one aggregate row per method and metric,
and per-pair PSNR rows keyed by the pair id). Scored on one half of the held-out characters; the other
half validates during training (recipe choices never see the scored characters).
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
import numpy as np

from serialgen.checkpoints import probes_dir, standardizer_dir
from serialgen.config import Settings
from serialgen.dag import config_hash
from serialgen.evaluation.standardizer_table import ORACLE, identity_scores, markdown
from serialgen.models.standardizer import Standardizer
from serialgen.probes import load_probes
from serialgen.probes.model import CONFIG_FILE
from serialgen.storage.images import encode_png
from serialgen.storage.runs import StageRun
from serialgen.synthetic.labelled import appearances
from serialgen.training.ablation import VARIANTS, Ablation, run_ablation, variant_folder
from serialgen.training.standardizer import build_standardizer, prepare_run_folder_for

STAGE = "ablate-standardizer"


@dataclass
class AblationReport:
    run_id: str
    ablation: Ablation
    train_pairs: int
    test_pairs: int
    grid: Path
    table: Path


def run_ablate_standardizer(settings: Settings, eval_pairs: int = 64, variants: list[str] | None = None,
                            flow_run_id: str | None = None, log=print) -> AblationReport:
    """Train/evaluate the variants named in ``variants`` (default all four) and record the results."""
    from serialgen.compositing.dynamic import pairs_dataset

    cfg = settings.standardizer
    size = (cfg.height, cfg.width)
    output_dir = standardizer_dir(settings).parent / "ablation"
    chosen = [v for v in VARIANTS if variants is None or v[0] in variants]
    if variants is not None and len(chosen) != len(variants):
        raise ValueError(f"unknown variant in {variants}; choose from {[v[0] for v in VARIANTS]}")
    lake = settings.open_lake()
    inputs = ["renders", "standards", "backgrounds"] if settings.composite.dynamic else ["pairs", "standards"]
    with StageRun(lake, STAGE, config_hash(settings, STAGE), inputs=inputs, flow_run_id=flow_run_id) as run:
        # Decoded once, in memory: at this size a few hundred MB, and no loader workers competing for cores.
        train = _in_memory(pairs_dataset(settings, "train", size))
        test = _in_memory(pairs_dataset(settings, "test", size))
        cfg = cfg.model_copy(update={"num_workers": 0})

        def variant(fbdm: bool, rpim: bool) -> Settings:
            flags = settings.standardizer.model_copy(update={"fbdm": fbdm, "rpim": rpim})
            return settings.model_copy(update={"standardizer": flags})

        for name, fbdm, rpim in chosen:  # resume a variant only with the same model, data and recipe
            prepare_run_folder_for(variant(fbdm, rpim), variant_folder(output_dir, name), True, inputs)

        def build(fbdm: bool, rpim: bool) -> Standardizer:
            return build_standardizer(variant(fbdm, rpim))

        ablation = run_ablation(build, train, test, cfg, output_dir, eval_pairs, variants=chosen, log=log)
        identity = _identity(settings, ablation)
        grid = output_dir / "table3_grid.png"
        grid.write_bytes(encode_png(ablation.grid))
        table = output_dir / "table3.md"
        table.write_text(markdown(ablation, identity) + "\n")
        lake.upsert("evaluations", _evaluation_rows(run.run_id, ablation, identity, settings), run.run_id)
        run.outputs = ["evaluations"]
        run.metrics = {"train_pairs": len(train), "test_pairs": len(test), "eval_pairs": len(ablation.pair_ids),
                       "eval_seconds": round(ablation.eval_seconds, 1), "machine": machine(),
                       "identity_probe": identity.get("probe") if identity else None,
                       "probe_ceiling": _identity_summary(identity, ORACLE),
                       "table": [{"method": r.method, "fbdm": r.fbdm, "rpim": r.rpim, "psnr": r.psnr,
                                  "ssim": r.ssim, "n": r.n, "steps": r.steps, "train_seconds": r.train_seconds,
                                  "final_loss": r.final_loss, **_identity_summary(identity, r.method)}
                                 for r in ablation.rows]}
        run.checkpoint = str(output_dir)
    return AblationReport(run.run_id, ablation, len(train), len(test), grid, table)


def _identity(settings: Settings, ablation: Ablation) -> dict:
    """{method: IdentityScores} by the lake's identity probe, plus "probe": its label; {} without probes."""
    folder = probes_dir(settings)
    if not (folder / CONFIG_FILE).is_file():
        return {}
    probes = load_probes(folder)
    looks = appearances(settings.open_lake())
    out: dict = {name: identity_scores(probes, prediction, ablation.targets, ablation.character_ids, looks)
                 for name, prediction in (*ablation.predictions.items(), (ORACLE, ablation.targets))}
    return {**out, "probe": probes.label}


def _identity_summary(identity: dict, method: str) -> dict:
    scores = identity.get(method)
    if scores is None:
        return {}
    summary = {"id_sim": float(scores.id_sim.mean()), "id_top1": float((scores.rank <= 1).mean()),
               "id_top5": float((scores.rank <= 5).mean()), "pixel_top1": float((scores.pixel_rank <= 1).mean())}
    if scores.shapes is not None:
        summary.update(hair_garments_right=float(np.nanmean(scores.shapes)), colours_right=float(np.nanmean(scores.colours)))
    return summary


def machine() -> str:
    """What the figures were measured on (CPU count and torch threads; GPU if one was used)."""
    import os

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads " \
           f"{torch.get_num_threads()}, {gpu}"


def _in_memory(dataset) -> list[dict]:
    return [dataset[i] for i in range(len(dataset))]


def _evaluation_rows(run_id: str, ablation: Ablation, identity: dict, settings: Settings) -> list[dict]:
    cfg = settings.standardizer
    test_set = "held-out pairs " + hashlib.sha256("\n".join(ablation.pair_ids).encode()).hexdigest()[:16]
    common = {"stage": "standardizer", "domain": "synthetic", "prompt_category": "all", "test_set": test_set,
              "generation_id": None, "character_id": None}
    rows = []
    for row in ablation.rows:
        method = f"standardizer {row.method}" if row.fbdm is not None else f"baseline: {row.method}"
        version = str(row.model_dir) if row.model_dir else None
        details = json.dumps({"run_id": run_id, "inference_steps": cfg.inference_steps,
                              "guidance_scale": cfg.guidance_scale, "train_steps": row.steps,
                              "data_range": 1.0, "size": [cfg.height, cfg.width]})
        for metric, value in (("psnr", row.psnr), ("ssim", row.ssim), *_identity_summary(identity, row.method).items()):
            rows.append({"evaluation_id": f"{run_id}/{method}/{metric}", "method": method, "model_version": version,
                         "standardizer_version": version, "metric": metric, "value": value, "n": row.n,
                         "pair_id": None, "details": details, **common})
        for pair_id, value in zip(ablation.pair_ids, row.per_pair_psnr):
            rows.append({"evaluation_id": f"{run_id}/{method}/psnr/{pair_id}", "method": method,
                         "model_version": version, "standardizer_version": version, "metric": "psnr",
                         "value": value, "n": 1, "pair_id": pair_id, "details": details, **common})
    return rows
