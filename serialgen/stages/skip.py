"""Whether a DAG stage must run: forced, never completed, config changed, inputs or outputs changed,
or it reads files outside the lake. One function, so the DAG and ``serialgen info`` agree."""

from __future__ import annotations

from serialgen.config import Settings
from serialgen.stages.registry import config_hash, external_inputs
from serialgen.storage.runs import up_to_date


def should_run(settings: Settings, stage: str, force: bool = False) -> tuple[bool, str]:
    """(run?, why) for ``stage`` over the settings' lake."""
    if force:
        return True, "forced"
    skip, why = up_to_date(settings.open_lake(), stage, config_hash(settings, stage))
    if not skip:
        return True, why
    external = external_inputs(settings, stage)
    if external:
        return True, external
    return False, why
