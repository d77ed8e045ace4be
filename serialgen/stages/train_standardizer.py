"""Stage driver: train the standardizer on `pairs` and record the run (no Prefect).

Reads the train split (the `pairs` table, or composited on the fly with ``composite.dynamic``),
validates on the test split (held-out characters), and writes one `runs` row with PSNR/SSIM and
the exported model folder. Under ``accelerate launch`` every process trains; only the main one
writes to the lake:

    accelerate launch --multi_gpu --num_processes 8 -m serialgen.stages.train_standardizer \
        --lake s3://bucket/lake --profile sd15 --config sd15.yaml
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serialgen.compositing.split import TRAIN, split_of
from serialgen.config import ConfigError, Settings, load_settings
from serialgen.models.components import load_sd15_components, require_sd15_files, scratch_components
from serialgen.models.standardizer import Standardizer
from serialgen.stages.registry import config_hash
from serialgen.standard_skeleton import canonical_skeleton, mean_skeleton
from serialgen.storage.runs import StageRun
from serialgen.training.loop import prepare_run_folder, training_recipe
from serialgen.training.standardizer import (
    TrainResult,
    Validation,
    make_accelerator,
    train_standardizer,
)

STAGE = "train-standardizer"
#: Settings that define the model: a run folder trained with others cannot be resumed.
MODEL_FIELDS = ("fbdm", "rpim", "width", "height", "model_dir", "vae_dir", "patch_size", "unet_channels",
                "layers_per_block", "prediction_type")


@dataclass
class TrainStandardizerReport:
    run_id: str | None
    step: int
    resumed_from: int
    train_pairs: int
    val_pairs: int
    psnr: float | None
    ssim: float | None
    model_dir: Path | None
    checkpoint: Path | None
    grid: Path | None
    losses: list[float]


def build_standardizer(settings: Settings) -> Standardizer:
    """A fresh model for the profile (SD-1.5 from local folders, or from-scratch pixel-space components) whose
    target is one standard skeleton: the mean of the training characters' rendered standard views (the canonical
    skeleton at the render stage's standard-view rows when the lake has none)."""
    cfg, view = settings.standardizer, settings.render
    parts = (load_sd15_components(cfg.model_dir, cfg.vae_dir) if settings.profile == "sd15"
             else scratch_components(cfg.seed, cfg.patch_size, cfg.unet_channels, cfg.layers_per_block,
                                     prediction_type=cfg.prediction_type, attention_levels=cfg.attention_levels))
    model = Standardizer.from_components(parts, fbdm=cfg.fbdm, rpim=cfg.rpim, pretrained=settings.profile == "sd15",
                                         frame_reference=cfg.frame_reference)
    standards = settings.open_lake().read("standards", columns=["character_id", "keypoints", "width", "height"])
    train = [i for i, c in enumerate(standards["character_id"].to_pylist())
             if split_of(c, settings.composite.test_fraction) == TRAIN]
    if train:
        rows = standards.take(train)
        skeleton = mean_skeleton(np.asarray(rows["keypoints"].to_pylist(), np.float32),
                                 np.stack([rows["width"].to_numpy(), rows["height"].to_numpy()], 1),
                                 cfg.width, cfg.height)
    else:
        skeleton = canonical_skeleton(cfg.width, cfg.height, view.standard_head_top, view.standard_chin,
                                      view.standard_arm_angle)
    model.set_standard_skeleton(skeleton, cfg.width, cfg.height)
    return model


def training_dir(settings: Settings) -> Path:
    """``standardizer.checkpoint_dir`` (default ``<lake>/_checkpoints``) / ``run_name``.

    Inside the lake by default, so two lakes never resume each other's training."""
    cfg = settings.standardizer
    if cfg.checkpoint_dir is not None:
        return Path(cfg.checkpoint_dir) / cfg.run_name
    lake = settings.open_lake()
    if not lake.is_local:
        raise ConfigError(f"lake {lake.uri} is not a local folder: set standardizer.checkpoint_dir")
    return Path(lake.uri).resolve() / "_checkpoints" / cfg.run_name


def with_overrides(settings: Settings, dynamic: bool = False, steps: int | None = None) -> Settings:
    """The settings with the command-line options applied (on-the-fly compositing, total steps)."""
    if dynamic:
        settings = settings.model_copy(update={"composite": settings.composite.model_copy(update={"dynamic": True})})
    if steps is not None:
        standardizer = settings.standardizer.model_copy(update={"steps": steps})
        settings = settings.model_copy(update={"standardizer": standardizer})
    return settings


def run_train_standardizer(settings: Settings, resume: bool = True, stop_at: int | None = None,
                           flow_run_id: str | None = None) -> TrainStandardizerReport:
    """Train (or continue training) the standardizer; ``stop_at`` ends early at that step (checkpointed)."""
    from serialgen.compositing.dynamic import pairs_dataset

    cfg = settings.standardizer
    if settings.profile == "sd15":   # a configuration error is reported before any data is read
        require_sd15_files(cfg.model_dir, cfg.vae_dir)
    output_dir = training_dir(settings)
    size = (cfg.height, cfg.width)
    train_data = pairs_dataset(settings, "train", size)
    if len(train_data) == 0:
        raise FileNotFoundError(f"no train pairs in lake {settings.lake}: run `serialgen composite` first")
    test_data = pairs_dataset(settings, "test", size)
    model = build_standardizer(settings)
    accelerator = make_accelerator(cfg, output_dir)
    inputs = ["renders", "standards", "backgrounds"] if settings.composite.dynamic else ["pairs", "standards"]
    if accelerator.is_main_process:
        prepare_run_folder_for(settings, output_dir, resume, inputs)
    accelerator.wait_for_everyone()
    run_context = (StageRun(settings.open_lake(), STAGE, config_hash(settings, STAGE), inputs=inputs,
                            flow_run_id=flow_run_id) if accelerator.is_main_process else nullcontext())
    with run_context as run:
        result = train_standardizer(model, train_data, cfg, output_dir,
                                    validation_data=test_data, resume=resume, stop_at=stop_at,
                                    accelerator=accelerator)
        report = _report(run, result, len(train_data), output_dir)
        if run is not None:
            run.metrics = {"step": result.step, "resumed_from": result.resumed_from, "train_pairs": len(train_data),
                           "final_loss": result.losses[-1] if result.losses else None,
                           "data_share": result.data_share,
                           **(result.validation or Validation(0, None, None)).metrics(),
                           "checkpoint": str(report.checkpoint) if report.checkpoint else None}
            run.checkpoint = str(report.model_dir or report.checkpoint)
    return report


def _report(run: StageRun | None, result: TrainResult, train_pairs: int, output_dir: Path) -> TrainStandardizerReport:
    validation = result.validation or Validation(0, None, None)
    grid = output_dir / "validation" / f"step-{result.step:07d}.png"
    return TrainStandardizerReport(
        run_id=run.run_id if run is not None else None, step=result.step, resumed_from=result.resumed_from,
        train_pairs=train_pairs, val_pairs=validation.n, psnr=validation.psnr, ssim=validation.ssim,
        model_dir=result.model_dir, checkpoint=result.checkpoint, grid=grid if grid.is_file() else None,
        losses=result.losses)


def prepare_run_folder_for(settings: Settings, output_dir: Path, resume: bool, inputs: list[str]) -> None:
    """Resume rules of :func:`serialgen.training.loop.prepare_run_folder` for this standardizer definition."""
    model = {"profile": settings.profile,
             **settings.standardizer.model_dump(mode="json", include=set(MODEL_FIELDS))}
    lake = settings.open_lake()
    recipe = training_recipe(settings.standardizer)
    prepare_run_folder(output_dir, model, {name: lake.version(name) for name in inputs}, resume, recipe)


def main(argv: list[str] | None = None) -> None:
    """Entry point for ``accelerate launch -m serialgen.stages.train_standardizer`` (one process per GPU)."""
    parser = argparse.ArgumentParser(description="Train the standardizer (every process; rank 0 records the run).")
    parser.add_argument("--lake")
    parser.add_argument("--profile")
    parser.add_argument("--config")
    parser.add_argument("--dynamic", action="store_true", help="composite pairs on the fly")
    parser.add_argument("--no-resume", action="store_true", help="start over instead of continuing")
    parser.add_argument("--steps", type=int)
    args = parser.parse_args(argv)
    settings = with_overrides(load_settings(args.config, args.profile, lake=args.lake), args.dynamic, args.steps)
    report = run_train_standardizer(settings, resume=not args.no_resume)
    if report.run_id is not None:
        print(f"{report.run_id}: step {report.step}, PSNR {report.psnr}, SSIM {report.ssim}, model {report.model_dir}")


if __name__ == "__main__":
    main()
