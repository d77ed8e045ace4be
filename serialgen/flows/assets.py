"""Prefect flow ``assets``: character files / procedural characters + motions -> characters, motions, poses."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow

from serialgen.flows.context import flow_settings
from serialgen.tasks.assets import build_assets, publish_contact_sheet


@flow(name="assets")
def assets(lake: str | None = None, profile: str | None = None, config: str | None = None,
           characters: str | None = None, motions: str | None = None, procedural: int | None = None,
           procedural_motions: bool | None = None, workers: int | None = None,
           contact_sheet: str | None = None) -> dict[str, Any]:
    """Run the assets stage (no source given: the config's procedural defaults) and publish artifacts."""
    settings = flow_settings(lake, profile, config)
    report = build_assets(settings, characters, motions, procedural, procedural_motions, workers)
    sheet = publish_contact_sheet(settings, contact_sheet)
    return {**asdict(report), "rows": report.rows(), "contact_sheet": sheet}
