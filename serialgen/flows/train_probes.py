"""Prefect flow ``train-probes``: renders, pairs, standards -> evaluation probes + `runs` row."""

from __future__ import annotations

from typing import Any

from prefect import flow

from serialgen.flows.context import flow_settings
from serialgen.tasks.train_probes import train_probes_task


@flow(name="train-probes")
def train_probes(lake: str | None = None, profile: str | None = None, config: str | None = None) -> dict[str, Any]:
    return train_probes_task(flow_settings(lake, profile, config)).as_dict()
