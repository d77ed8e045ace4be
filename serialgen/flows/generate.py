"""Prefect flow ``generate``: reference image(s) + prompts -> standardize -> personalize -> `generations`.

A deployment with parameters (prefect.yaml ``generate``): reference file paths, prompts (and/or a
prompt file), seeds per prompt, adapter scale, whether to standardize first.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from serialgen.flows.context import flow_settings
from serialgen.inference.generate import read_prompts
from serialgen.tasks.personalizer import generate_task


@flow(name="generate")
def generate(references: list[str], prompts: list[str] | None = None, prompts_file: str | None = None,
             seeds: int = 1, scale: float | None = None, standardize: bool = True, method: str | None = None,
             character_id: str | None = None, out: str | None = None, lake: str | None = None,
             profile: str | None = None, config: str | None = None) -> dict[str, Any]:
    """Generate ``seeds`` images per prompt of one character (several references are averaged)."""
    settings = flow_settings(lake, profile, config)
    requested = [(p, "other") for p in prompts or []] + (read_prompts(prompts_file) if prompts_file else [])
    return generate_task(settings, list(references), requested, list(range(seeds)), scale, standardize, method,
                         character_id, out)
