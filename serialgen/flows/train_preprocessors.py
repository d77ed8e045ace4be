"""Prefect flow ``train-preprocessors``: pairs -> tiny mask/detector/keypoint ONNX models + `runs` row."""

from __future__ import annotations

from typing import Any

from prefect import flow

from serialgen.flows.context import flow_settings
from serialgen.tasks.train_preprocessors import train_preprocessors_task


@flow(name="train-preprocessors")
def train_preprocessors(lake: str | None = None, profile: str | None = None,
                        config: str | None = None) -> dict[str, Any]:
    return train_preprocessors_task(flow_settings(lake, profile, config)).as_dict()
