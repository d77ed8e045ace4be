"""Stage driver: build `personalizer_pairs` for one mode, train the IP-Adapter on its train split,
score it on the test split and export it with a model card (no Prefect).

The adapter lands in ``<lake>/_checkpoints/personalizer/<mode>/`` (``ip_adapter.safetensors``,
``adapter.json``, ``README.md``: loadable by stock diffusers ``load_ip_adapter``), beside the
resumable ``checkpoint-*`` folders and TensorBoard ``logs/``. Under ``accelerate launch`` every process
trains; only the main one writes to the lake:

    accelerate launch --multi_gpu --num_processes 8 -m serialgen.stages.train_personalizer \
        --lake s3://bucket/lake --profile sdxl --config sdxl.yaml --mode two_stage
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from serialgen.checkpoints import content_version, initial_adapter, personalizer_dir, sdxl_folders
from serialgen.config import ConfigError, Settings
from serialgen.dag import OFFLINE_PROFILES, config_hash
from serialgen.models.ip_adapter import WEIGHTS_NAME, reference_processor, save_adapter
from serialgen.models.sdxl import load_sdxl_parts
from serialgen.storage.images import decode_image
from serialgen.storage.runs import MODEL_VERSION, StageRun
from serialgen.training.launch import launch_parser, launch_settings, with_values
from serialgen.training.loop import make_accelerator, prepare_run_folder, training_recipe
from serialgen.training.personalizer import Personalizer, heldout_loss, train_personalizer
from serialgen.training.personalizer_data import MODES, PersonalizerPairs, build_pairs

STAGE = "train-personalizer"
#: Settings that define the model: a run folder trained with others cannot be resumed.
MODEL_FIELDS = ("width", "height", "image_tokens", "model_dir", "image_encoder_dir", "standardizer_version")
#: What the two-stage model renders each real image with to make paired_one_stage targets (one prompt per image).
ONE_STAGE_PROMPTS = (("running in a park", "action"), ("standing on a busy city street", "background"),
                     ("seen from the side", "viewpoint"), ("laughing happily", "expression"))
#: The tables each mode's pairs are built from (their versions key resume and lineage).
MODE_INPUTS = {"two_stage": ["real_images", "standardized"], "paired_one_stage": ["real_images", "generations"],
               "unpaired": ["real_images"]}


@dataclass
class TrainPersonalizerReport:
    run_id: str | None
    mode: str
    step: int
    resumed_from: int
    train_pairs: int
    test_pairs: int
    heldout_loss: float | None          # trained adapter, test split
    heldout_loss_no_reference: float | None   # same model given the unconditional image, same noise and timesteps
    adapter_dir: Path | None
    checkpoint: Path | None
    data_share: float | None            # loader share of step time (first batch excluded)
    step_seconds: float | None          # mean compute time per step (first step excluded)
    data_seconds: float | None          # mean wait for a batch (first batch excluded)
    losses: list[float]


def with_overrides(settings: Settings, mode: str | None = None, steps: int | None = None) -> Settings:
    """The settings with a run's mode and total steps (None: as configured)."""
    if mode is not None and mode not in MODES:
        raise ConfigError(f"unknown personalizer mode {mode!r}; choose one of: {', '.join(MODES)}")
    return with_values(settings, "personalizer", mode=mode, steps=steps)


def run_train_personalizer(settings: Settings, resume: bool = True, stop_at: int | None = None,
                           flow_run_id: str | None = None) -> TrainPersonalizerReport:
    """Build the mode's pairs, train (or continue) the adapter, score and export it; one `runs` row."""
    cfg = settings.personalizer
    lake = settings.open_lake()
    output_dir = personalizer_dir(settings)
    model_dir, encoder_dir = sdxl_folders(settings)
    init = initial_adapter(settings)
    parts = load_sdxl_parts(model_dir, encoder_dir)
    accelerator = make_accelerator(cfg, output_dir)
    inputs = MODE_INPUTS[cfg.mode]
    failed_targets = []
    if cfg.mode == "paired_one_stage" and accelerator.is_main_process:
        failed_targets = make_one_stage_targets(settings, flow_run_id)
    accelerator.wait_for_everyone()
    run_context = (StageRun(lake, STAGE, config_hash(settings, STAGE), inputs=inputs, flow_run_id=flow_run_id)
                   if accelerator.is_main_process else nullcontext())
    with run_context as run:
        if run is not None:
            pairs, problems = build_pairs(lake, cfg.mode, cfg.standardizer_version)
            run.errors([*failed_targets, *problems])
            run.clear_errors(f"{p['mode']}/{p[f'{side}_source']}/{p[f'{side}_id']}"
                             for p in pairs for side in ("reference", "target"))
            lake.upsert("personalizer_pairs", pairs, run.run_id)
            _drop_stale_pairs(lake, cfg.mode, {p["pair_id"] for p in pairs})
            run.outputs = ["personalizer_pairs"]
            model = {"profile": settings.profile, **cfg.model_dump(mode="json", include=set(MODEL_FIELDS)),
                     # a base the pipeline trained: a new one makes the adapter's folder another model's
                     "base_version": content_version(model_dir) if settings.profile in OFFLINE_PROFILES else None,
                     "init_adapter": content_version(init) if init is not None else None}
            recipe = training_recipe(cfg)
            prepare_run_folder(output_dir, model, dict(run.inputs), resume, recipe)
        accelerator.wait_for_everyone()
        size = (cfg.height, cfg.width)
        processor = reference_processor(parts.image_encoder.config)
        tokenizers = (parts.tokenizer, parts.tokenizer_2)
        train_data = PersonalizerPairs(lake, cfg.mode, "train", size, tokenizers, processor)
        test_data = PersonalizerPairs(lake, cfg.mode, "test", size, tokenizers, processor, train_data.version)
        if len(train_data) == 0:
            raise FileNotFoundError(f"no train-split {cfg.mode} pairs in lake {settings.lake}: "
                                    "ingest more real images (`serialgen ingest-real`)")
        model = Personalizer(parts, cfg.image_tokens, cfg.seed, init)
        result = train_personalizer(model, train_data, cfg, output_dir, resume=resume, stop_at=stop_at,
                                    accelerator=accelerator)
        trained = base = None
        adapter_dir = None
        if result.finished and accelerator.is_main_process:
            model.eval()
            trained = heldout_loss(model, test_data, cfg.eval_pairs, cfg.batch_size, cfg.seed)
            base = heldout_loss(model, test_data, cfg.eval_pairs, cfg.batch_size, cfg.seed, references=False)
            metrics = {"heldout_loss": trained, "heldout_loss_no_reference": base, "test_pairs": len(test_data),
                       "train_pairs": len(train_data), "final_train_loss": result.losses[-1] if result.losses else None}
            adapter_dir = output_dir
            _export(model, settings, output_dir, run.run_id, result.step, dict(run.inputs), metrics,
                    (model_dir, encoder_dir))
        report = TrainPersonalizerReport(
            run_id=run.run_id if run is not None else None, mode=cfg.mode, step=result.step,
            resumed_from=result.resumed_from, train_pairs=len(train_data), test_pairs=len(test_data),
            heldout_loss=trained, heldout_loss_no_reference=base, adapter_dir=adapter_dir, checkpoint=result.checkpoint,
            data_share=result.data_share, step_seconds=_mean(result.step_times[1:]),
            data_seconds=_mean(result.data_times), losses=result.losses)
        if run is not None:
            run.metrics = {"mode": cfg.mode, "step": result.step, "resumed_from": result.resumed_from,
                           "train_pairs": len(train_data), "test_pairs": len(test_data),
                           "heldout_loss": trained, "heldout_loss_no_reference": base, "data_share": result.data_share,
                           "final_loss": result.losses[-1] if result.losses else None,
                           "checkpoint": str(result.checkpoint) if result.checkpoint else None,
                           "dropout": {"text": cfg.text_dropout, "image": cfg.image_dropout, "both": cfg.both_dropout},
                           MODEL_VERSION: content_version(adapter_dir / WEIGHTS_NAME) if adapter_dir else None}
            run.checkpoint = str(adapter_dir or result.checkpoint)
    return report


def make_one_stage_targets(settings: Settings, flow_run_id: str | None = None) -> list[tuple[str, str]]:
    """The paired_one_stage targets: the two-stage model (standardize, then the two_stage adapter) renders each
    real image that has no two-stage generation yet with one prompt of :data:`ONE_STAGE_PROMPTS` (rotating).
    Returns the (key, reason) of images it could not render (e.g. no figure found to standardize)."""
    from serialgen.real_images import pixel_id
    from serialgen.inference.generate import Generator, write_generations

    lake = settings.open_lake()
    done = {tuple(ids or ()) for ids in lake.read("generations", columns=["reference_ids"],
                                                  filter="method = 'two_stage'").column("reference_ids").to_pylist()}
    todo = [r for r in lake.read("real_images", columns=["image_id", "image"]).to_pylist() if (r["image_id"],) not in done]
    failed, generator = [], None
    for i, row in enumerate(sorted(todo, key=lambda r: r["image_id"])):
        pixels = decode_image(row["image"])
        if pixel_id(pixels) != row["image_id"]:  # ids follow the pixel-hash rule; anything else cannot pair
            failed.append((f"paired_one_stage/real_images/{row['image_id']}", "image id is not its pixel hash"))
            continue
        try:
            generator = generator or Generator(settings, "two_stage", standardize=True)   # loaded once
            generated = generator.generate([pixels], [ONE_STAGE_PROMPTS[i % len(ONE_STAGE_PROMPTS)]], [0])
        except ValueError as exc:  # standardize_images: no figure found, empty mask, ...
            failed.append((f"paired_one_stage/real_images/{row['image_id']}", f"two-stage generation failed: {exc}"))
            continue
        write_generations(settings, generated, flow_run_id)   # one `generate` run per image, as a request
    return failed


def _export(model: Personalizer, settings: Settings, folder: Path, run_id: str, step: int,
            inputs: dict[str, int | None], metrics: dict, sources: tuple[Path, Path]) -> None:
    """The adapter (stock layout), its metadata and a model card."""
    cfg = settings.personalizer
    lake = settings.open_lake()
    pairs = lake.read("personalizer_pairs", columns=["standardizer_version"], filter=f"mode = '{cfg.mode}'")
    standardizer_versions = sorted({v for v in pairs.column("standardizer_version").to_pylist() if v})
    metadata = {"run_id": run_id, "mode": cfg.mode, "step": step,
                "image_tokens": model.adapter.tokens, "layout": "full" if model.adapter.full else "plain",
                "standardizer_versions": standardizer_versions, "inputs": inputs, "metrics": metrics,
                "sdxl": str(sources[0]), "image_encoder": str(sources[1]),
                "dropout": {"text": cfg.text_dropout, "image": cfg.image_dropout, "both": cfg.both_dropout},
                "resolution": [cfg.height, cfg.width], "batch_size": cfg.batch_size,
                "learning_rate": cfg.learning_rate, "ema_decay": cfg.ema_decay}
    save_adapter(model.adapter, folder, metadata)
    (folder / "README.md").write_text(_model_card(metadata, folder))


def _model_card(meta: dict, folder: Path) -> str:
    metrics = meta["metrics"]
    fmt = lambda v: "n/a" if v is None else f"{v:.5f}"  # noqa: E731
    return f"""# SerialGen personalizer: IP-Adapter ({meta['mode']})

IP-Adapter ("{meta['layout']}" image projection, {meta['image_tokens']} image tokens) for SDXL, trained by the
serialgen `train-personalizer` stage, run `{meta['run_id']}`, {meta['step']} steps.

- **Mode**: `{meta['mode']}` (two_stage: standardized reference -> real target; paired_one_stage: real reference ->
  the two-stage model's generation; unpaired: reference = target)
- **Data**: {metrics['train_pairs']} train / {metrics['test_pairs']} test pairs from lake tables {meta['inputs']}
- **Standardizer version(s)**: {', '.join(meta['standardizer_versions']) or 'none (not a standardized mode)'}
- **Resolution** {meta['resolution'][0]}x{meta['resolution'][1]} (H x W), batch {meta['batch_size']},
  learning rate {meta['learning_rate']}, EMA {meta['ema_decay']}; CFG dropout text / image / both
  {meta['dropout']['text']} / {meta['dropout']['image']} / {meta['dropout']['both']}
- **Held-out denoising loss** (test split, same noise and timesteps): adapter {fmt(metrics['heldout_loss'])},
  no reference (the unconditional image) {fmt(metrics['heldout_loss_no_reference'])}

## Use with stock diffusers

```python
pipe = StableDiffusionXLPipeline.from_pretrained(SDXL_BASE_DIR, local_files_only=True)
pipe.load_ip_adapter("{folder}", subfolder="", weight_name="{WEIGHTS_NAME}",
                     image_encoder_folder=IMAGE_ENCODER_DIR, local_files_only=True)
```
Pad the (standardized) reference to a white square before passing it.
"""


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _drop_stale_pairs(lake, mode: str, keep: set[str]) -> None:
    """Remove pairs of ``mode`` no longer built from the current tables (e.g. an older standardizer's)."""
    stale = lake.keys("personalizer_pairs", filter=f"mode = '{mode}'") - {(mode, k) for k in keep}
    if stale:
        quoted = ", ".join("'" + k.replace("'", "''") + "'" for _, k in stale)
        lake.delete("personalizer_pairs", f"mode = '{mode}' AND pair_id IN ({quoted})")


def main(argv: list[str] | None = None) -> None:
    """Entry point for ``accelerate launch -m serialgen.stages.train_personalizer`` (one process per GPU)."""
    parser = launch_parser("Train the personalizer (every process; rank 0 records the run).")
    parser.add_argument("--mode", choices=MODES)
    args = parser.parse_args(argv)
    settings = with_overrides(launch_settings(args), args.mode, args.steps)
    report = run_train_personalizer(settings, resume=not args.no_resume)
    if report.run_id is not None:
        print(json.dumps({"run_id": report.run_id, "step": report.step, "heldout_loss": report.heldout_loss,
                          "heldout_loss_no_reference": report.heldout_loss_no_reference, "adapter": str(report.adapter_dir)}))


if __name__ == "__main__":
    main()
