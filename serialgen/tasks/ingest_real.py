"""Prefect task of the ingest-real stage: run it with a progress artifact and publish its counts."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from serialgen.config import Settings
from serialgen.stages.ingest_real import IngestReport, run_ingest_real


@task(name="ingest-real", cache_policy=NO_CACHE)
def ingest_real_task(settings: Settings, images: str | None = None, captions: str | None = None) -> IngestReport:
    artifact = create_progress_artifact(0.0, key="ingest-real-progress",
                                        description="ingest-real: share of this run's new files read")
    report = run_ingest_real(settings, images, captions, flow_run_id=flow_run.id,
                             progress=lambda done, total: update_progress_artifact(artifact, 100.0 * done / total))
    update_progress_artifact(artifact, 100.0)
    create_table_artifact(key="ingest-real-counts", description=f"ingest-real run {report.run_id}", table=[
        {"metric": name.replace("_", " "), "value": value} for name, value in report.as_dict().items()
        if name != "run_id"])
    return report
