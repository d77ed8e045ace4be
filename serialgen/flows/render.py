"""Prefect flow ``render``: characters x poses -> renders + standards, then a contact sheet."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow

from serialgen.flows.context import flow_settings
from serialgen.tasks.render import publish_contact_sheet, render_items


@flow(name="render")
def render(lake: str | None = None, profile: str | None = None, config: str | None = None,
           limit: int | None = None, contact_sheet_characters: int = 3) -> dict[str, Any]:
    """Render the missing items of the sampling plan (``limit``: the first N only) and publish artifacts."""
    settings = flow_settings(lake, profile, config)
    report = render_items(settings, limit)
    sheet = publish_contact_sheet(settings, contact_sheet_characters)
    return {**asdict(report), "overhead_ratio": report.overhead_ratio, "contact_sheet": sheet}
