"""Stage driver: train the standardizer on `pairs` and record the run (no Prefect).

Reads the train split (the `pairs` table, or composited on the fly with ``composite.dynamic``),
validates on the test split (held-out characters), and writes one `runs` row with PSNR/SSIM and
the exported model folder. Under ``accelerate launch`` every process trains; only the main one
writes to the lake:

    accelerate launch --multi_gpu --num_processes 8 -m serialgen.stages.train_standardizer \
        --lake s3://bucket/lake --profile sd15 --config sd15.yaml
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from serialgen.checkpoints import content_version, standardizer_dir
from serialgen.config import Settings
from serialgen.dag import config_hash
from serialgen.models.components import require_sd15_files
from serialgen.storage.runs import MODEL_VERSION, StageRun
from serialgen.training.launch import launch_parser, launch_settings, with_values
from serialgen.training.standardizer import (
    TrainResult,
    Validation,
    build_standardizer,
    make_accelerator,
    prepare_run_folder_for,
    train_standardizer,
)

STAGE = "train-standardizer"


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


def with_overrides(settings: Settings, dynamic: bool = False, steps: int | None = None) -> Settings:
    """The settings with a run's options applied (on-the-fly compositing, total steps; None: as configured)."""
    settings = with_values(settings, "composite", dynamic=True if dynamic else None)
    return with_values(settings, "standardizer", steps=steps)


def run_train_standardizer(settings: Settings, resume: bool = True, stop_at: int | None = None,
                           flow_run_id: str | None = None) -> TrainStandardizerReport:
    """Train (or continue training) the standardizer; ``stop_at`` ends early at that step (checkpointed)."""
    from serialgen.compositing.dynamic import pairs_dataset

    cfg = settings.standardizer
    if settings.profile == "sd15":   # a configuration error is reported before any data is read
        require_sd15_files(cfg.model_dir, cfg.vae_dir)
    output_dir = standardizer_dir(settings)
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
                           "checkpoint": str(report.checkpoint) if report.checkpoint else None,
                           MODEL_VERSION: content_version(report.model_dir) if report.model_dir else None}
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


def main(argv: list[str] | None = None) -> None:
    """Entry point for ``accelerate launch -m serialgen.stages.train_standardizer`` (one process per GPU)."""
    parser = launch_parser("Train the standardizer (every process; rank 0 records the run).")
    parser.add_argument("--dynamic", action="store_true", help="composite pairs on the fly")
    args = parser.parse_args(argv)
    settings = with_overrides(launch_settings(args), args.dynamic, args.steps)
    report = run_train_standardizer(settings, resume=not args.no_resume)
    if report.run_id is not None:
        print(f"{report.run_id}: step {report.step}, PSNR {report.psnr}, SSIM {report.ssim}, model {report.model_dir}")


if __name__ == "__main__":
    main()
