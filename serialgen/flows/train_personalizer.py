"""Prefect flow ``train-personalizer``: real/standardized images -> personalizer pairs -> IP-Adapter + `runs` row."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow

from serialgen.flows.context import flow_settings
from serialgen.stages.train_personalizer import with_overrides
from serialgen.tasks.personalizer import train_personalizer_task


@flow(name="train-personalizer")
def train_personalizer(lake: str | None = None, profile: str | None = None, config: str | None = None,
                       mode: str | None = None, resume: bool = True, steps: int | None = None) -> dict[str, Any]:
    """Train the adapter of ``mode`` (two_stage | paired_one_stage | unpaired), ``steps`` overriding the config."""
    settings = with_overrides(flow_settings(lake, profile, config), mode, steps)
    report = train_personalizer_task(settings, resume)
    return {k: (str(v) if hasattr(v, "__fspath__") else v) for k, v in asdict(report).items() if k != "losses"}
