"""Prefect tasks of the assets stage: run it, publish the accepted/rejected and clips -> poses table."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from serialgen.config import Settings
from serialgen.stages.assets import AssetsReport, run_assets, write_contact_sheet
from serialgen.tasks.artifacts import artifact_path, publish_png


@task(name="assets-run", cache_policy=NO_CACHE)
def build_assets(settings: Settings, characters: str | None = None, motions: str | None = None,
                 procedural: int | None = None, procedural_motions: bool | None = None,
                 workers: int | None = None) -> AssetsReport:
    """Audit characters, read motions, write the pose library; table artifact with the counts."""
    report = run_assets(settings, characters, motions, procedural, procedural_motions, workers, flow_run_id=flow_run.id)
    create_table_artifact(key="assets-summary", table=report.rows(),
                          description=f"assets run {report.run_id}: characters by status/reason, clips -> poses "
                                      f"({report.seconds} s)")
    return report


@task(name="assets-contact-sheet", cache_policy=NO_CACHE)
def publish_contact_sheet(settings: Settings, path: str | None = None) -> str | None:
    """Thumbnails of the first accepted characters: a PNG file and a markdown artifact."""
    target = Path(path) if path else artifact_path(settings, "characters_contact_sheet.png")
    if not write_contact_sheet(settings.open_lake(), target):
        return None
    return publish_png("assets-contact-sheet", "assets: accepted characters", target.read_bytes(), target)
