"""Prefect flow ``evaluate``: trained models + test set -> generations, evaluations, report."""

from __future__ import annotations

from typing import Any

from prefect import flow

from serialgen.flows.context import flow_settings
from serialgen.tasks.evaluate import evaluate_task


@flow(name="evaluate")
def evaluate(lake: str | None = None, profile: str | None = None, config: str | None = None,
             test_set: str | None = None, force: bool = False) -> dict[str, Any]:
    """Evaluate every personalizer mode and standardizer variant trained into the lake (``test_set``: a YAML file)."""
    settings = flow_settings(lake, profile, config)
    if test_set is not None:
        settings = settings.model_copy(update={"evaluate": settings.evaluate.model_copy(update={"test_set": test_set})})
    report = evaluate_task(settings, force)
    files = report.files
    return {"run_id": report.run_id, "skipped": report.skipped, "why": report.why, "methods": report.methods,
            "standardizers": report.standardizers, "generations": report.generations,
            "evaluations": report.evaluations, "report": str(files.html) if files else None,
            "markdown": str(files.markdown) if files else None,
            "user_study": str(files.user_study) if files and files.user_study else None}
