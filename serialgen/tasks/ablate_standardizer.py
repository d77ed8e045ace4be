"""Prefect task of the standardizer ablation: run it, publish the Table 3 layout and the image grid."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from serialgen.config import Settings
from serialgen.stages.ablate_standardizer import AblationReport, run_ablate_standardizer
from serialgen.tasks.artifacts import artifact_path, publish_png


@task(name="ablate-standardizer", cache_policy=NO_CACHE)
def ablate_standardizer_task(settings: Settings, eval_pairs: int, variants: list[str] | None) -> AblationReport:
    """Train and score the FBDM/RPIM variants and the baselines; publish the table and the grid."""
    report = run_ablate_standardizer(settings, eval_pairs, variants, flow_run_id=flow_run.id)
    create_markdown_artifact(key="standardizer-table3", description=f"ablate-standardizer run {report.run_id}",
                             markdown=f"Held-out characters, {report.train_pairs} train pairs.\n\n"
                                      + report.table.read_text())
    publish_png("standardizer-table3-grid", "held-out pairs: input | each variant | target",
                report.grid.read_bytes(), artifact_path(settings, "standardizer_table3_grid.png"))
    return report
