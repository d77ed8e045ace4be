"""The DAG's stages: what each depends on, which settings key it, where its flow lives, and whether it must
run (no Prefect here; below the stages, which record their config hash with :func:`config_hash`).

A stage is skipped when its last completed run used the same config hash and read the input
table versions that are still current (see :func:`serialgen.storage.runs.up_to_date`), and no model it
loads has a new version since; a rerun upstream writes new versions, so everything downstream of a
change reruns and nothing else. One :func:`should_run`, so the DAG and ``serialgen info`` agree.
Flows are named by module path so that deciding to skip imports neither torch, bpy nor Ray.
"""

from __future__ import annotations

from dataclasses import dataclass

from serialgen.config import Settings
from serialgen.storage.runs import last_completed, new_model_since, up_to_date


@dataclass(frozen=True)
class Stage:
    name: str                         # as recorded in the `runs` table
    sections: tuple[str, ...]         # config sections whose output-affecting values key the stage
    depends_on: tuple[str, ...] = ()  # stages whose outputs it reads (they run first)
    flow: str = ""                    # "module:function" of its Prefect flow under serialgen.flows
    in_dag: bool = True               # run by `serialgen run` (else only by its own command/deployment)
    checkpoints_of: tuple[str, ...] = ()  # training stages whose model it loads: their new runs rerun it
    dynamic_sections: tuple[str, ...] = ()  # sections that key it only with on-the-fly compositing
    profiles: tuple[str, ...] = ()    # the only profiles that use it (empty: all)


#: Profiles that measure with the pipeline's own probes instead of CLIP / ArcFace.
OFFLINE_PROFILES = ("tiny", "small")

STAGES: tuple[Stage, ...] = (
    Stage("assets", ("assets",), (), "assets:assets"),
    Stage("render", ("render",), ("assets",), "render:render"),
    Stage("composite", ("composite",), ("render",), "composite:composite"),
    # Static pairs are an input table; with composite.dynamic the composite settings shape its data instead.
    Stage("train-standardizer", ("standardizer",), ("composite",), "train_standardizer:train_standardizer",
          dynamic_sections=("composite",)),
    Stage("train-preprocessors", ("preprocessing",), ("composite",), "train_preprocessors:train_preprocessors"),
    # The offline profiles' measuring instruments (real profiles measure with CLIP and ArcFace).
    Stage("train-probes", ("probes",), ("composite",), "train_probes:train_probes", profiles=OFFLINE_PROFILES),
    # Its offline default source is the held-out composited pairs; with ingest.images it reads outside files.
    Stage("ingest-real", ("ingest",), ("composite",), "ingest_real:ingest_real"),
    Stage("standardize", ("standardize", "standardizer", "preprocessing"),
          ("ingest-real", "train-standardizer", "train-preprocessors"), "standardize:standardize",
          checkpoints_of=("train-standardizer", "train-preprocessors")),
    # The offline profiles' base text-to-image model (real profiles load SDXL).
    Stage("train-base", ("base_model", "personalizer"), ("composite",), "train_base:train_base",
          profiles=OFFLINE_PROFILES),
    Stage("train-personalizer", ("personalizer", "base_model"), ("standardize", "train-base"),
          "train_personalizer:train_personalizer", checkpoints_of=("train-base",)),
    Stage("evaluate", ("evaluate", "personalizer", "standardizer"), ("train-personalizer", "train-probes"),
          "evaluate:evaluate", checkpoints_of=("train-personalizer", "train-standardizer", "train-preprocessors",
                                               "train-probes")),
    # The paper's Table 3 at small scale (four FBDM x RPIM variants + baselines), on demand.
    Stage("ablate-standardizer", ("standardizer",), ("composite",), "ablate_standardizer:ablate_standardizer",
          in_dag=False, dynamic_sections=("composite",)),
    # The paper's Table 2 at small scale (three training modes + controls on the base model), on demand.
    Stage("ablate-personalizer", ("personalizer", "base_model", "standardizer", "standardize"),
          ("train-base", "train-probes", "train-preprocessors"), "ablate_personalizer:ablate_personalizer",
          in_dag=False, profiles=OFFLINE_PROFILES),
    # On demand (a deployment with parameters); the DAG's evaluation generations happen inside `evaluate`.
    Stage("generate", ("personalizer",), ("train-personalizer",), "generate:generate", in_dag=False),
)
BY_NAME = {stage.name: stage for stage in STAGES}


def topological(stages: tuple[Stage, ...] | None = None) -> list[Stage]:
    """The DAG's stages (default: those with ``in_dag``) in an order where every stage follows the ones it
    depends on (a cycle is an error)."""
    stages = tuple(s for s in STAGES if s.in_dag) if stages is None else stages
    order: list[Stage] = []
    state: dict[str, str] = {}

    def visit(stage: Stage) -> None:
        if state.get(stage.name) == "done":
            return
        if state.get(stage.name) == "visiting":
            raise ValueError(f"stage dependency cycle through {stage.name}")
        state[stage.name] = "visiting"
        for dependency in stage.depends_on:
            visit(BY_NAME[dependency])
        state[stage.name] = "done"
        order.append(stage)

    for stage in stages:
        visit(stage)
    return order


def external_inputs(settings: Settings, stage: str) -> str | None:
    """Why a stage must run even when its tables and config are unchanged: it reads files outside the
    lake (new files appear without a version change; rerunning is cheap: known files are skipped by hash),
    or the model it exports is in a format this version no longer loads."""
    if stage == "assets" and (settings.assets.characters or settings.assets.motions):
        return "reads asset folders"
    if stage == "composite" and settings.composite.background_source:
        return "reads the background source"
    if stage == "ingest-real" and settings.ingest.images:
        return "reads the real-image source"
    if stage == "train-probes":
        from serialgen.checkpoints import stale_probes  # checkpoints imports this module

        return stale_probes(settings)
    return None


def config_hash(settings: Settings, stage: str) -> str:
    """The hash a stage records in `runs`; stage drivers and the DAG use this one function."""
    spec = BY_NAME[stage]
    dynamic = spec.dynamic_sections if settings.composite.dynamic else ()
    return settings.section_hash(*spec.sections, *dynamic)


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
    # A model is a lineage input: a training run that finished after this stage last started may have made a new one.
    started = last_completed(lake, stage)["started_at"]
    for producer in spec.checkpoints_of:
        trained = new_model_since(lake, producer, started)
        if trained is not None:
            return True, f"new checkpoint from {trained['run_id']}"
    external = external_inputs(settings, stage)
    if external:
        return True, external
    return False, why
