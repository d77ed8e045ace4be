"""Prefect task of the evaluate stage: run it, publish the paper's tables, the image grid and a report link."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_link_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from serialgen.config import Settings
from serialgen.stages.evaluate import EvaluateReport, run_evaluate
from serialgen.tasks.artifacts import publish_png


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(settings: Settings, force: bool = False) -> EvaluateReport:
    """Evaluate every trained model in the lake; tables as table artifacts, the grids inline, the report linked."""
    report = run_evaluate(settings, flow_run_id=flow_run.id, force=force)
    if not report.skipped:
        publish_evaluation(report)
    return report


def publish_evaluation(report: EvaluateReport) -> None:
    """The report's tables as table artifacts, each method's grid inline, and a link to the HTML report."""
    for table in report.tables.values():
        create_table_artifact(key=table.key, table=table.records() or [{"result": "no model of this kind in the lake"}],
                              description=f"{table.title}. {table.note}")
    files = report.files
    for method, grid in files.grids.items():
        publish_png(f"evaluation-grid-{method.replace('_', '-')}",
                    f"{method}: reference | standardized | one output per prompt", grid.read_bytes(), grid)
    create_link_artifact(key="evaluation-report", link=files.html.resolve().as_uri(), link_text="evaluation report",
                         description=f"evaluate run {report.run_id}: HTML report (Markdown: {files.markdown})")
