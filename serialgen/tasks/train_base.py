"""Prefect task of the base-model training: run it, publish its held-out losses and sample sheet."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from serialgen.config import Settings
from serialgen.stages.train_base import TrainBaseReport, run_train_base
from serialgen.tasks.artifacts import artifact_path, publish_png


@task(name="train-base", cache_policy=NO_CACHE)
def train_base_task(settings: Settings, resume: bool) -> TrainBaseReport:
    report = run_train_base(settings, resume, flow_run_id=flow_run.id)
    held_out = report.metrics.get("held_out") or {}
    create_table_artifact(key="base-model-held-out", table=[
        {"predictor": name, "held-out loss": f"{value:.5f}"} for name, value in held_out.items()],
        description=f"train-base run {report.run_id}: held-out characters, same noise and timesteps")
    sheet = report.folder / "samples.png"
    if sheet.is_file():
        publish_png("base-model-samples", "base model: one caption per row, four seeds", sheet.read_bytes(),
                    artifact_path(settings, "base_model_samples.png"))
    return report
