"""Prefect tasks of the composite stage: run it with a live progress artifact, publish counts and a grid of pairs."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from serialgen.compositing.preview import pair_grid
from serialgen.config import Settings
from serialgen.stages.composite import CompositeReport, preview_pairs, run_composite
from serialgen.storage.images import encode_png
from serialgen.tasks.artifacts import artifact_path, publish_png, stage_progress


@task(name="composite-pairs", cache_policy=NO_CACHE)
def composite_pairs(settings: Settings, source: str | None = None, dynamic: bool | None = None,
                    force: bool = False) -> CompositeReport:
    """Ingest backgrounds and write the missing pairs; the progress artifact follows the commits."""
    with stage_progress("composite-progress", "composite", "composite: share of this run's pairs committed",
                        unit="pairs") as progress:
        report = run_composite(settings, source=source, dynamic=dynamic, force=force, flow_run_id=flow_run.id,
                               progress=progress)
    create_table_artifact(key="composite-counts", description=f"composite run {report.run_id}", table=[
        {"metric": name.replace("_", " "), "value": round(value, 2) if isinstance(value, float) else value}
        for name, value in report.as_dict().items() if name != "run_id"
    ])
    return report


@task(name="composite-grid", cache_policy=NO_CACHE)
def publish_pair_grid(settings: Settings, n: int = 6, dynamic: bool = False) -> str | None:
    """A grid of ``n`` pairs (input | background mask | reference pose | target | target pose): PNG + artifact."""
    grid = pair_grid(preview_pairs(settings, n, dynamic))
    if grid is None:
        return None
    return publish_png("composite-grid", "composite: input | background mask (white = background) | reference pose | "
                       "target | target pose", encode_png(grid), artifact_path(settings, "composite_pairs.png"))
