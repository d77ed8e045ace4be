"""Prefect task of the preprocessor training: run it and publish the held-out IoU/PCK table."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from serialgen.config import Settings
from serialgen.stages.train_preprocessors import TrainPreprocessorsReport, run_train_preprocessors

#: (metric, ours, baseline) rows of the artifact.
SCORES = (("mask IoU (vs whole-frame mask)", "mask_iou", "mask_iou_whole_frame"),
          ("keypoint PCK (vs mean pose)", "pck", "pck_mean_pose"))


@task(name="train-preprocessors", cache_policy=NO_CACHE)
def train_preprocessors_task(settings: Settings) -> TrainPreprocessorsReport:
    report = run_train_preprocessors(settings, flow_run_id=flow_run.id)
    m = report.metrics
    create_table_artifact(key="preprocessors-scores", description=(
        f"train-preprocessors run {report.run_id}: {m.get('test_images', 0)} held-out images"), table=[
        {"metric": name, "ours": round(m[ours], 4), "baseline": round(m[base], 4)}
        for name, ours, base in SCORES if ours in m])
    return report
