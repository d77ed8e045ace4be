"""Prefect flow ``train-standardizer``: pairs -> standardizer checkpoint + `runs` row."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow

from serialgen.flows.context import flow_settings
from serialgen.stages.train_standardizer import with_overrides
from serialgen.tasks.train_standardizer import train_standardizer_task


@flow(name="train-standardizer")
def train_standardizer(lake: str | None = None, profile: str | None = None, config: str | None = None,
                       dynamic: bool = False, resume: bool = True, steps: int | None = None) -> dict[str, Any]:
    """Train on the `pairs` table (or composite on the fly with ``dynamic``), ``steps`` overriding the config."""
    settings = with_overrides(flow_settings(lake, profile, config), dynamic, steps)
    report = train_standardizer_task(settings, resume)
    return {k: (str(v) if hasattr(v, "__fspath__") else v) for k, v in asdict(report).items() if k != "losses"}
