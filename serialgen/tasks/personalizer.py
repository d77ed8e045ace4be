"""Prefect tasks of the personalizer: training (metrics artifact) and generation (progress and a grid:
reference | standardized | one image per prompt)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from serialgen.config import Settings
from serialgen.imaging import fit_height, grid
from serialgen.inference.generate import Generated, generate_with_references, read_reference
from serialgen.stages.train_personalizer import TrainPersonalizerReport, run_train_personalizer
from serialgen.storage.images import decode_image, encode_png
from serialgen.tasks.artifacts import artifact_path, publish_png


@task(name="train-personalizer", cache_policy=NO_CACHE)
def train_personalizer_task(settings: Settings, resume: bool = True) -> TrainPersonalizerReport:
    """Train (resuming the mode's latest checkpoint), export, and publish the held-out losses."""
    report = run_train_personalizer(settings, resume=resume, flow_run_id=flow_run.id)
    rounded = lambda v: None if v is None else round(v, 5)  # noqa: E731
    create_table_artifact(key="personalizer-metrics", description=f"train-personalizer run {report.run_id}", table=[
        {"metric": "mode", "value": report.mode},
        {"metric": "steps", "value": report.step},
        {"metric": "resumed from step", "value": report.resumed_from},
        {"metric": "train / test pairs", "value": f"{report.train_pairs} / {report.test_pairs}"},
        {"metric": "held-out loss, adapter", "value": rounded(report.heldout_loss)},
        {"metric": "held-out loss, no reference (the unconditional image)", "value": rounded(report.heldout_loss_no_reference)},
        {"metric": "loader share of step time", "value": rounded(report.data_share)},
        {"metric": "adapter folder", "value": str(report.adapter_dir)},
    ])
    return report


@task(name="generate", cache_policy=NO_CACHE)
def generate_task(settings: Settings, references: list[str], prompts: list[tuple[str, str]], seeds: list[int],
                  scale: float | None, standardize: bool, method: str | None, character_id: str | None,
                  out: str | None) -> dict:
    """Generate, write one PNG per image to ``out`` (default ``<lake>/_artifacts/generations``) and publish a grid."""
    result = generate_with_references(settings, [read_reference(p) for p in references], prompts, seeds, scale,
                                      standardize, character_id=character_id, method=method,
                                      flow_run_id=flow_run.id)
    folder = Path(out) if out else artifact_path(settings, "generations")
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for row in result.rows:
        path = folder / f"{row['generation_id']}.png"
        path.write_bytes(row["image"])
        files.append(str(path))
    grid = publish_png("generation-grid", "reference | standardized | one image per prompt (first seed)",
                       encode_png(generation_grid(result)), artifact_path(settings, "generation_grid.png"))
    return {"rows": len(result.rows), "files": files, "grid": grid,
            "generation_ids": [r["generation_id"] for r in result.rows]}


def generation_grid(result: Generated) -> np.ndarray:
    """One row: the first reference, its standardized version (if any), then the first seed's image per prompt."""
    seen, images = set(), []
    for row in result.rows:
        if row["prompt"] not in seen:
            seen.add(row["prompt"])
            images.append(decode_image(row["image"], "RGB"))
    cells = [result.references[0], *(result.standardized[:1] if result.standardized else []), *images]
    return grid([[fit_height(c, images[0].shape[0]) for c in cells]])
