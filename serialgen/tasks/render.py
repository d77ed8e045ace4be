"""Prefect tasks of the render stage: run it with a live progress artifact, publish counts and a contact sheet."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from serialgen.config import Settings
from serialgen.stages.render import RenderReport, contact_sheet, run_render
from serialgen.storage.images import encode_png
from serialgen.tasks.artifacts import artifact_path, publish_png, stage_progress


@task(name="render-items", cache_policy=NO_CACHE)
def render_items(settings: Settings, limit: int | None = None) -> RenderReport:
    """Render the missing planned items and standards; the progress artifact follows the committed chunks."""
    with stage_progress("render-progress", "render", "render: share of this run's items committed") as progress:
        report = run_render(settings, limit=limit, progress=progress, flow_run_id=flow_run.id)
    ratio = report.overhead_ratio
    create_table_artifact(key="render-counts", description=f"render run {report.run_id}", table=[
        {"metric": "planned items", "value": report.planned},
        {"metric": "already in the lake", "value": report.skipped},
        {"metric": "rendered", "value": report.rendered},
        {"metric": "failed (see errors)", "value": report.failed},
        {"metric": "standards rendered", "value": report.standards_rendered},
        {"metric": "standards failed", "value": report.standards_failed},
        {"metric": "workers", "value": report.workers},
        {"metric": "wall seconds", "value": round(report.seconds, 2)},
        {"metric": "overhead ratio (item wall / render call)", "value": round(ratio, 3) if ratio else None},
    ])
    return report


@task(name="render-contact-sheet", cache_policy=NO_CACHE)
def publish_contact_sheet(settings: Settings, characters: int = 3) -> str | None:
    """Standard image beside renders with keypoints for a few characters: a PNG file and a markdown artifact."""
    sheet = contact_sheet(settings.open_lake(), characters=characters)
    if sheet is None:
        return None
    return publish_png("render-contact-sheet", "render: standard view, then renders with keypoints, per character",
                       encode_png(sheet), artifact_path(settings, "render_contact_sheet.png"))
