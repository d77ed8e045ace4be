"""Prefect tasks of the assets stage: run it, publish the accepted/rejected and clips -> poses table."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from serialgen.config import Settings
from serialgen.stages.assets import AssetsReport, run_assets, write_contact_sheet


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
    lake = settings.open_lake()
    if path is None:
        folder = Path(lake.uri) / "_artifacts" if lake.is_local else Path(tempfile.mkdtemp(prefix="serialgen-"))
        folder.mkdir(parents=True, exist_ok=True)
        path = str(folder / "characters_contact_sheet.png")
    if not write_contact_sheet(lake, path):
        return None
    png = Path(path).read_bytes()
    image = base64.b64encode(png).decode()
    create_markdown_artifact(key="assets-contact-sheet", description="assets: accepted characters",
                             markdown=f"![characters](data:image/png;base64,{image})\n\n`{path}`")
    return path
