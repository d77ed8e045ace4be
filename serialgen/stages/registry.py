"""The DAG's stages in order, and the config sections that key each one (no Prefect here).

A stage is skipped when its last completed run used the same config hash and read the
input table versions that are still current (see :func:`serialgen.storage.runs.up_to_date`);
a rerun upstream writes new versions, so everything downstream of a change reruns.
"""

from __future__ import annotations

from dataclasses import dataclass

from serialgen.config import Settings


@dataclass(frozen=True)
class Stage:
    name: str                       # as recorded in the `runs` table
    sections: tuple[str, ...]       # config sections whose values key the stage


STAGES: tuple[Stage, ...] = (
    Stage("assets", ("assets",)),
    Stage("render", ("render",)),
    Stage("composite", ("composite",)),
    Stage("train-standardizer", ("standardizer", "composite")),
    Stage("ablate-standardizer", ("standardizer", "composite")),
)
BY_NAME = {stage.name: stage for stage in STAGES}


def external_inputs(settings: Settings, stage: str) -> str | None:
    """Why a stage must run even when its tables and config are unchanged: it reads files outside the
    lake (new files appear without a version change). Rerunning it is cheap: known files are skipped by hash."""
    if stage == "assets" and (settings.assets.characters or settings.assets.motions):
        return "reads asset folders"
    return None


def config_hash(settings: Settings, stage: str) -> str:
    """The hash a stage records in `runs`; stage drivers and the DAG use this one function."""
    return settings.section_hash(*BY_NAME[stage].sections)
