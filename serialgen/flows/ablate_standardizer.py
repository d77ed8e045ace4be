"""Prefect flow ``ablate-standardizer``: pairs -> four trained variants + `evaluations` rows (Table 3)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from serialgen.flows.context import flow_settings
from serialgen.stages.train_standardizer import with_overrides
from serialgen.tasks.ablate_standardizer import ablate_standardizer_task


@flow(name="ablate-standardizer")
def ablate_standardizer(lake: str | None = None, profile: str | None = None, config: str | None = None,
                        steps: int | None = None, eval_pairs: int = 64,
                        variants: list[str] | None = None) -> dict[str, Any]:
    """Train each variant for ``steps`` (default ``standardizer.steps``) and score all on held-out pairs."""
    settings = with_overrides(flow_settings(lake, profile, config), steps=steps)
    report = ablate_standardizer_task(settings, eval_pairs, variants)
    return {"run_id": report.run_id, "table": report.table.read_text(), "grid": str(report.grid),
            "train_pairs": report.train_pairs, "test_pairs": report.test_pairs}
