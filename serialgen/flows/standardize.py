"""Prefect flow ``standardize``: real_images -> standardized (Ray actor pool of standardizer replicas), then a grid."""

from __future__ import annotations

from typing import Any

from prefect import flow

from serialgen.flows.context import flow_settings
from serialgen.tasks.standardize import publish_standardized_grid, standardize_task


@flow(name="standardize")
def standardize(lake: str | None = None, profile: str | None = None, config: str | None = None,
                limit: int | None = None, grid_images: int = 6) -> dict[str, Any]:
    settings = flow_settings(lake, profile, config)
    report = standardize_task(settings, limit)
    return {**report.as_dict(), "grid": publish_standardized_grid(settings, grid_images)}
