"""Prefect task of the standardizer training: run it, publish validation metrics and the image grid."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from serialgen.config import Settings
from serialgen.stages.train_standardizer import TrainStandardizerReport, run_train_standardizer
from serialgen.tasks.artifacts import artifact_path, publish_png


@task(name="train-standardizer", cache_policy=NO_CACHE)
def train_standardizer_task(settings: Settings, resume: bool = True) -> TrainStandardizerReport:
    """Train (resuming the run folder's latest checkpoint) and publish PSNR/SSIM and the validation grid."""
    report = run_train_standardizer(settings, resume=resume, flow_run_id=flow_run.id)
    create_table_artifact(key="standardizer-metrics", description=f"train-standardizer run {report.run_id}", table=[
        {"metric": "steps", "value": report.step},
        {"metric": "resumed from step", "value": report.resumed_from},
        {"metric": "train pairs", "value": report.train_pairs},
        {"metric": "held-out pairs validated", "value": report.val_pairs},
        {"metric": "PSNR (dB, data range 1)", "value": None if report.psnr is None else round(report.psnr, 3)},
        {"metric": "SSIM", "value": None if report.ssim is None else round(report.ssim, 4)},
        {"metric": "final loss", "value": round(report.losses[-1], 5) if report.losses else None},
        {"metric": "model folder", "value": str(report.model_dir)},
    ])
    if report.grid is not None:
        publish_png("standardizer-validation-grid",
                    "held-out pairs: input | reference pose | target | standardized (DDIM)",
                    report.grid.read_bytes(), artifact_path(settings, "standardizer_validation.png"))
    return report
