"""Prefect flow ``serialgen``: the stage DAG, each stage a task that waits for the stages it depends on.

A stage task decides (from lineage, cheaply) whether its stage must run; only then does it import the
stage's flow, so a run where everything is skipped never imports torch, bpy or Ray. The dashboard shows
the graph (one task per stage, edges from ``depends_on``), each stage's flow run nested under its task.
Independent branches run side by side up to ``dag.max_parallel``; a failed stage stops its dependents
only, and the DAG ends Failed.
"""

from __future__ import annotations

import importlib
import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner

from serialgen.dag import BY_NAME, should_run, topological
from serialgen.flows.context import flow_settings
from serialgen.storage.runs import StageFailed


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a stage (its writes are idempotent upserts) unless it failed for a reason a rerun cannot fix."""
    from serialgen.config import ConfigError
    from serialgen.storage import LakeError

    return not isinstance(state.data, (FileNotFoundError, ConfigError, LakeError, StageFailed))


@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=10, retry_condition_fn=_transient)
def run_stage(name: str, lake: str, profile: str, config: str | None, force: bool) -> dict[str, Any]:
    """Run one stage's flow when :func:`should_run` says so; returns the stage's summary row."""
    logger = get_run_logger()
    settings = flow_settings(lake, profile, config)
    run, why = should_run(settings, name, force)
    if not run:
        logger.info("stage %s skipped: %s", name, why)
        return {"stage": name, "status": "skipped", "why": why, "seconds": 0.0}
    logger.info("stage %s runs: %s", name, why)
    module, function = BY_NAME[name].flow.split(":")
    stage_flow = getattr(importlib.import_module(f"serialgen.flows.{module}"), function)
    start = time.perf_counter()
    stage_flow(lake=lake, profile=profile, config=config)
    return {"stage": name, "status": "ran", "why": why, "seconds": round(time.perf_counter() - start, 1)}


@flow(name="serialgen", task_runner=ThreadPoolTaskRunner(max_workers=4))
def serialgen(lake: str | None = None, profile: str | None = None, config: str | None = None,
              force: bool = False) -> list[dict[str, Any]]:
    """Run the DAG; ``force`` reruns every stage (each still skips the rows it already wrote)."""
    settings = flow_settings(lake, profile, config)
    futures: dict[str, PrefectFuture] = {}
    for stage in topological():
        waits = [futures[d] for d in stage.depends_on]
        task_run = run_stage.with_options(name=stage.name, task_run_name=stage.name)
        futures[stage.name] = task_run.submit(stage.name, settings.lake, settings.profile, config, force,
                                              wait_for=waits)
        if settings.dag.max_parallel <= 1:
            futures[stage.name].wait()
    summary, failed = [], []
    for name, future in futures.items():
        future.wait()
        if future.state.is_completed():
            summary.append(future.result())
        else:
            failed.append(name)
            summary.append({"stage": name, "status": future.state.name.lower(), "why": _reason(future),
                            "seconds": 0.0})
    create_table_artifact(key="serialgen-dag", table=summary,
                          description=f"DAG run over lake {settings.lake} ({settings.profile} profile)")
    if failed:
        raise StageFailed(f"stages did not complete: {', '.join(failed)} (see their flow runs)")
    return summary


def _reason(future: PrefectFuture) -> str:
    message = future.state.message or ""
    return message.splitlines()[0][:200] if message else "upstream stage did not complete"
