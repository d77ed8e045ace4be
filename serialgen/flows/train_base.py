"""Prefect flow ``train-base``: renders, pairs, standards -> the personalizer's base text-to-image model."""

from __future__ import annotations

from typing import Any

from prefect import flow

from serialgen.flows.context import flow_settings
from serialgen.tasks.train_base import train_base_task
from serialgen.training.launch import with_values


@flow(name="train-base")
def train_base(lake: str | None = None, profile: str | None = None, config: str | None = None, resume: bool = True,
               steps: int | None = None) -> dict[str, Any]:
    """Train (or continue) the base model to ``steps`` (default ``base_model.steps``) and export it."""
    settings = with_values(flow_settings(lake, profile, config), "base_model", steps=steps)
    return train_base_task(settings, resume).as_dict()
