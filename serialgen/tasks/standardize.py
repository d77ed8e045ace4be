"""Prefect tasks of the standardize stage: run it with a progress artifact, publish counts and the grid."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from serialgen.config import Settings
from serialgen.stages.standardize import StandardizeReport, preview_grid, preview_rows, run_standardize
from serialgen.storage.images import encode_png
from serialgen.tasks.artifacts import artifact_path, publish_png, stage_progress


@task(name="standardize-images", cache_policy=NO_CACHE)
def standardize_task(settings: Settings, limit: int | None = None) -> StandardizeReport:
    with stage_progress("standardize-progress", "standardize", "standardize: share of this run's images committed",
                        unit="images") as progress:
        report = run_standardize(settings, limit, flow_run_id=flow_run.id, progress=progress)
    create_table_artifact(key="standardize-counts", description=f"standardize run {report.run_id}", table=[
        {"metric": name.replace("_", " "), "value": value} for name, value in report.as_dict().items()
        if name != "run_id"])
    return report


@task(name="standardize-grid", cache_policy=NO_CACHE)
def publish_standardized_grid(settings: Settings, n: int = 6) -> str | None:
    grid = preview_grid(preview_rows(settings, n))
    if grid is None:
        return None
    return publish_png("standardize-grid", "standardize: original | mask (white = background) | pose | standardized",
                       encode_png(grid), artifact_path(settings, "standardized.png"))
