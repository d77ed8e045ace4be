"""Prefect flow ``composite``: backgrounds + renders + standards -> pairs, then a grid of pairs."""

from __future__ import annotations

from typing import Any

from prefect import flow

from serialgen.flows.context import flow_settings
from serialgen.tasks.composite import composite_pairs, publish_pair_grid


@flow(name="composite")
def composite(lake: str | None = None, profile: str | None = None, config: str | None = None,
              backgrounds: str | None = None, dynamic: bool | None = None, force: bool = False,
              grid_pairs: int = 6) -> dict[str, Any]:
    """Composite the missing pairs and publish artifacts (``dynamic``: only ingest backgrounds)."""
    settings = flow_settings(lake, profile, config)
    report = composite_pairs(settings, backgrounds, dynamic, force)
    grid = publish_pair_grid(settings, grid_pairs, report.dynamic)
    return {**report.as_dict(), "grid": grid}
