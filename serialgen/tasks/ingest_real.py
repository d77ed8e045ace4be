"""Prefect task of the ingest-real stage: run it with a progress artifact and publish its counts."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from serialgen.config import Settings
from serialgen.stages.ingest_real import IngestReport, run_ingest_real
from serialgen.tasks.artifacts import stage_progress


@task(name="ingest-real", cache_policy=NO_CACHE)
def ingest_real_task(settings: Settings, images: str | None = None, captions: str | None = None) -> IngestReport:
    with stage_progress("ingest-real-progress", "ingest-real", "ingest-real: share of this run's new files read",
                        unit="files") as progress:
        report = run_ingest_real(settings, images, captions, flow_run_id=flow_run.id, progress=progress)
    create_table_artifact(key="ingest-real-counts", description=f"ingest-real run {report.run_id}", table=[
        {"metric": name.replace("_", " "), "value": value} for name, value in report.as_dict().items()
        if name != "run_id"])
    return report
