"""Prefect flow ``ablate-personalizer``: the three training modes + controls on held-out characters (Table 2)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from serialgen.flows.context import flow_settings
from serialgen.stages.train_personalizer import with_overrides
from serialgen.tasks.ablate_personalizer import ablate_personalizer_task


@flow(name="ablate-personalizer")
def ablate_personalizer(lake: str | None = None, profile: str | None = None, config: str | None = None,
                        steps: int | None = None, modes: list[str] | None = None,
                        characters: int | None = None, role: str = "scored") -> dict[str, Any]:
    """Train each mode's adapter for ``steps`` (default ``personalizer.steps``), generate and score."""
    settings = with_overrides(flow_settings(lake, profile, config), steps=steps)
    report = ablate_personalizer_task(settings, modes, characters, role)
    return {"run_id": report.run_id, "table": report.table.read_text(), "grid": str(report.grid),
            "metrics": report.metrics}
