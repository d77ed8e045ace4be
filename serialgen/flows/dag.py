"""Prefect flow ``serialgen``: every stage in DAG order, skipping the ones whose inputs and config are unchanged."""

from __future__ import annotations

import time
from typing import Any, Callable

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from serialgen.config import load_settings
from serialgen.flows.assets import assets
from serialgen.flows.composite import composite
from serialgen.flows.render import render
from serialgen.flows.train_standardizer import train_standardizer
from serialgen.stages.registry import STAGES, config_hash, external_inputs
from serialgen.storage.runs import up_to_date

#: Each stage's flow; called as a subflow so its runs and artifacts show up on their own in the dashboard.
STAGE_FLOWS: dict[str, Callable[..., dict[str, Any]]] = {
    "assets": assets,
    "render": render,
    "composite": composite,
    "train-standardizer": train_standardizer,
}


@flow(name="serialgen")
def serialgen(lake: str | None = None, profile: str | None = None, config: str | None = None,
              force: bool = False) -> list[dict[str, Any]]:
    """Run the DAG; ``force`` reruns every stage (each still skips the rows it already wrote)."""
    logger = get_run_logger()
    settings = load_settings(config, profile, lake=lake)
    store = settings.open_lake()
    summary = []
    for stage in STAGES:
        skip, why = up_to_date(store, stage.name, config_hash(settings, stage.name))
        external = external_inputs(settings, stage.name)
        if external:
            skip, why = False, external
        if skip and not force:
            logger.info("stage %s skipped: %s", stage.name, why)
            summary.append({"stage": stage.name, "status": "skipped", "why": why, "seconds": 0.0})
            continue
        logger.info("stage %s runs: %s", stage.name, "forced" if force else why)
        start = time.perf_counter()
        STAGE_FLOWS[stage.name](lake=settings.lake, profile=settings.profile, config=config)
        summary.append({"stage": stage.name, "status": "ran", "why": "forced" if force else why,
                        "seconds": round(time.perf_counter() - start, 1)})
    create_table_artifact(key="serialgen-dag", table=summary,
                          description=f"DAG run over lake {settings.lake} ({settings.profile} profile)")
    return summary
