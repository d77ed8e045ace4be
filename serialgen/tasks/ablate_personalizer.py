"""Prefect task of the personalizer ablation: run it, publish the Table 2 layout and the image grid."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from serialgen.config import Settings
from serialgen.stages.ablate_personalizer import Table2Report, run_ablate_personalizer
from serialgen.tasks.artifacts import artifact_path, publish_png


@task(name="ablate-personalizer", cache_policy=NO_CACHE)
def ablate_personalizer_task(settings: Settings, modes: list[str] | None, characters: int | None,
                             role: str) -> Table2Report:
    report = run_ablate_personalizer(settings, modes, characters, role, flow_run_id=flow_run.id)
    create_markdown_artifact(key="personalizer-table2", description=f"ablate-personalizer run {report.run_id}",
                             markdown=f"{report.metrics['scored_characters']} held-out characters "
                                      f"({report.metrics['role']} half).\n\n"
                                      + report.table.read_text())
    publish_png("personalizer-table2-grid", "per character and row: reference | standardized | one output per prompt",
                report.grid.read_bytes(), artifact_path(settings, "personalizer_table2_grid.png"))
    return report
