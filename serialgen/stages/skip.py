"""Whether a DAG stage must run: forced, never completed, config changed, inputs or outputs changed,
or it reads files outside the lake. One function, so the DAG and ``serialgen info`` agree."""

from __future__ import annotations

from serialgen.config import Settings
from serialgen.stages.registry import BY_NAME, config_hash, external_inputs
from serialgen.storage.runs import last_completed, up_to_date


def should_run(settings: Settings, stage: str, force: bool = False) -> tuple[bool, str]:
    """(run?, why) for ``stage`` over the settings' lake."""
    spec = BY_NAME[stage]
    if spec.profiles and settings.profile not in spec.profiles:
        return False, f"not used by the {settings.profile} profile"
    if force:
        return True, "forced"
    lake = settings.open_lake()
    skip, why = up_to_date(lake, stage, config_hash(settings, stage))
    if not skip:
        return True, why
    # A model is a lineage input: a training run that finished after this stage last started made a new one.
    started = last_completed(lake, stage)["started_at"]
    for producer in spec.checkpoints_of:
        trained = last_completed(lake, producer)
        if trained is not None and trained["finished_at"] > started:
            return True, f"new checkpoint from {trained['run_id']}"
    external = external_inputs(settings, stage)
    if external:
        return True, external
    return False, why
