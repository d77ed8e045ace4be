"""The ``serialgen`` command: global options, ``info``, and one subcommand per stage.

User errors (bad profile, config file, lake URI, missing weights) print one line and exit 2.
"""

from __future__ import annotations

import functools
import logging
import sys
from importlib import metadata
from pathlib import Path
from typing import Callable, Optional

import typer
import yaml
from rich.console import Console
from rich.table import Table

from serialgen.config import ConfigError, Settings, load_settings
from serialgen.storage import LakeError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="SerialGen pipeline: assets -> render -> composite -> standardizer -> ... ")
console = Console()
err_console = Console(stderr=True)

#: Errors a user can fix; they get one line, not a traceback.
USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, LakeError, FileNotFoundError)

PACKAGES = ("serialgen", "bpy", "torch", "diffusers", "transformers", "ray", "pylance", "lance-ray",
            "pyarrow", "prefect", "rembg", "open_clip_torch", "controlnet_aux", "numpy")


def fail(message: str, code: int = 2) -> None:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def user_command(func: Callable) -> Callable:
    """Turn the user-fixable errors of a command into one clear line and exit code 2, and a stage that
    ended Failed for a stated reason into one line and exit code 1."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from serialgen.storage.runs import StageFailed

        try:
            return func(*args, **kwargs)
        except USER_ERRORS as exc:
            fail(str(exc))
        except StageFailed as exc:
            fail(str(exc), code=1)
    return wrapper


class _NoUserErrorTracebacks(logging.Filter):
    """Prefect logs a failing run's traceback; for errors the user can fix, its message is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        from serialgen.storage.runs import StageFailed

        if record.exc_info and isinstance(record.exc_info[1], (*USER_ERRORS, StageFailed)):
            record.exc_info, record.exc_text = None, None
        return True


def run_flow(ctx: typer.Context, module: str, name: str, **params):
    """Run a stage's Prefect flow with the invocation's lake, profile and config file."""
    import importlib

    from serialgen.runtime import configure_prefect

    settings: Settings = ctx.obj
    configure_prefect()
    flow = getattr(importlib.import_module(f"serialgen.flows.{module}"), name)
    for handler in logging.getLogger().handlers:  # Prefect's console handler sits on the root logger
        handler.addFilter(_NoUserErrorTracebacks())
    config = ctx.parent.params.get("config")
    return flow(lake=settings.lake, profile=settings.profile, config=str(config) if config else None, **params)


@app.callback()
def main(
    ctx: typer.Context,
    lake: Optional[str] = typer.Option(None, help="Lake URI (folder or s3://...); env SERIALGEN_LAKE."),
    profile: Optional[str] = typer.Option(None, help="tiny | small | sd15 | sdxl; env SERIALGEN_PROFILE."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML settings file."),
) -> None:
    try:
        ctx.obj = load_settings(config_file=config, profile=profile, lake=lake)
    except ConfigError as exc:
        fail(str(exc))


@app.command()
@user_command
def info(ctx: typer.Context) -> None:
    """Print the resolved config, package versions, GPU visibility and the lake's tables."""
    settings: Settings = ctx.obj
    console.rule("config")
    console.print(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False).rstrip(), highlight=False)
    console.rule("packages")
    for name in PACKAGES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "not installed"
        console.print(f"{name:16} {version}", highlight=False)
    console.print(f"{'python':16} {sys.version.split()[0]}", highlight=False)
    console.print(f"{'gpu':16} {_gpu_description()}", highlight=False)
    console.rule(f"lake {settings.lake}")
    tables = settings.open_lake().tables()
    if not tables:
        console.print("(no tables yet)")
        return
    grid = Table("table", "rows", "version")
    for name, (rows, version) in tables.items():
        grid.add_row(name, str(rows), str(version))
    console.print(grid)
    lineage = _lineage_table(settings)
    if lineage is not None:
        console.rule("lineage (DAG order: last completed run per stage, and what `serialgen run` would do)")
        console.print(lineage)


def _lineage_table(settings: Settings) -> Table | None:
    """Every DAG stage in order: what it depends on, its last completed run (config, versions read and
    written, checkpoint or report), and whether the next `serialgen run` would run it and why."""
    from serialgen.dag import should_run, topological
    from serialgen.storage.runs import last_completed

    lake = settings.open_lake()
    if not lake.exists("runs"):
        return None
    grid = Table("stage", "after", "last run", "config", "read", "wrote", "checkpoint / report", "next run")
    versions = lambda d: ", ".join(f"{k}@{v}" for k, v in d.items()) or "-"  # noqa: E731
    for stage in topological():
        run = last_completed(lake, stage.name)
        runs_next, why = should_run(settings, stage.name)
        upcoming = f"runs: {why}" if runs_next else "skipped"
        after = ", ".join(stage.depends_on) or "-"
        if run is None:
            grid.add_row(stage.name, after, "-", "-", "-", "-", "-", upcoming)
            continue
        grid.add_row(stage.name, after, run["run_id"], run["config_hash"], versions(run["inputs"]),
                     versions(run["outputs"]), run["checkpoint"] or "-", upcoming)
    return grid


@app.command("assets")
@user_command
def assets_command(
    ctx: typer.Context,
    characters: Optional[str] = typer.Option(None, help="Folder or URI of character files (GLB/glTF, FBX, .blend)."),
    motions: Optional[str] = typer.Option(None, help="Folder or URI of motion files (BVH, FBX, GLB)."),
    procedural: Optional[int] = typer.Option(None, help="Also generate N seeded procedural characters."),
    procedural_motions: bool = typer.Option(False, "--procedural-motions", help="Add the seeded procedural clips."),
    workers: Optional[int] = typer.Option(None, help="bpy worker processes (default assets.workers)."),
    contact_sheet: Optional[str] = typer.Option(None, help="Where to write the accepted characters' contact sheet."),
) -> None:
    """Audit characters, retarget motions, build the pose library (Prefect flow `assets`)."""
    r = run_flow(ctx, "assets", "assets", characters=characters, motions=motions, procedural=procedural,
                 procedural_motions=procedural_motions or None, workers=workers, contact_sheet=contact_sheet)
    grid = Table("table", "item", "count")
    for row in r["rows"]:
        grid.add_row(row["table"], row["item"], str(row["count"]))
    console.print(grid)
    console.print(f"{r['seconds']} s; contact sheet: {r['contact_sheet']}", highlight=False)


@app.command("render")
@user_command
def render_command(
    ctx: typer.Context,
    limit: Optional[int] = typer.Option(None, help="Render only the first N planned items (smoke runs)."),
    contact_sheet: int = typer.Option(3, help="Characters on the contact sheet."),
) -> None:
    """Render characters x poses with Blender into `renders` and `standards` (Prefect flow `render`)."""
    result = run_flow(ctx, "render", "render", limit=limit, contact_sheet_characters=contact_sheet)
    console.print(f"rendered {result['rendered']} ({result['skipped']} already done, {result['failed']} failed), "
                  f"standards {result['standards_rendered']}; contact sheet: {result['contact_sheet']}",
                  highlight=False, soft_wrap=True)


@app.command("composite")
@user_command
def composite_command(
    ctx: typer.Context,
    backgrounds: Optional[str] = typer.Option(None, help="Folder or URI of background images to ingest."),
    dynamic: Optional[bool] = typer.Option(None, "--dynamic/--materialize",
                                           help="Composite on the fly in the training loader (no `pairs` written)."),
    force: bool = typer.Option(False, help="Recomposite existing pairs (replaced in place, never duplicated)."),
) -> None:
    """Composite renders over backgrounds into training pairs with Ray (Prefect flow `composite`)."""
    r = run_flow(ctx, "composite", "composite", backgrounds=backgrounds, dynamic=dynamic, force=force)
    console.print(f"backgrounds {r['backgrounds']} (+{r['backgrounds_ingested']} ingested, +{r['backgrounds_generated']} "
                  f"generated); pairs written {r['pairs_written']}, already present {r['pairs_skipped']}, errors "
                  f"{r['errors']}; characters train {r['train_characters']} / test {r['test_characters']}"
                  + (" (dynamic: composited in the loader)" if r["dynamic"] else "") + f"; grid: {r['grid']}",
                  highlight=False, soft_wrap=True)


@app.command("train-standardizer")
@user_command
def train_standardizer_command(
    ctx: typer.Context,
    dynamic: bool = typer.Option(False, "--dynamic", help="Composite pairs on the fly instead of reading `pairs`."),
    resume: bool = typer.Option(True, help="Continue the run folder's latest checkpoint."),
    steps: Optional[int] = typer.Option(None, help="Total training steps (overrides standardizer.steps)."),
) -> None:
    """Train the standardizer on `pairs` (Prefect flow `train-standardizer`); multi-GPU: see README."""
    result = run_flow(ctx, "train_standardizer", "train_standardizer", dynamic=dynamic, resume=resume, steps=steps)
    console.print(f"trained to step {result['step']} (from {result['resumed_from']}); PSNR {result['psnr']}, "
                  f"SSIM {result['ssim']} on {result['val_pairs']} held-out pairs; model: {result['model_dir']}",
                  highlight=False)


@app.command("train-preprocessors")
@user_command
def train_preprocessors_command(ctx: typer.Context) -> None:
    """Train the tiny mask/pose ONNX models on `pairs` (Prefect flow `train-preprocessors`)."""
    r = run_flow(ctx, "train_preprocessors", "train_preprocessors")
    m = r["metrics"]
    console.print(f"exported to {r['folder']}; held-out mask IoU {m.get('mask_iou', float('nan')):.3f} "
                  f"(whole frame {m.get('mask_iou_whole_frame', float('nan')):.3f}), PCK@{m.get('pck_threshold')} "
                  f"{m.get('pck', float('nan')):.3f} (mean pose {m.get('pck_mean_pose', float('nan')):.3f})",
                  highlight=False, soft_wrap=True)


@app.command("train-probes")
@user_command
def train_probes_command(ctx: typer.Context) -> None:
    """Train the evaluation probes of the offline profiles on the lake's synthetic images (flow `train-probes`)."""
    r = run_flow(ctx, "train_probes", "train_probes")
    m = r["metrics"]
    figures = {"identity top-1": "vs_standard_all_top1", "pixels top-1": "vs_standard_all_pixels_top1",
               "framing": "framing_accuracy", "view": "view_accuracy"}
    shown = ", ".join(f"{name} {m[key]:.3f}" for name, key in figures.items() if key in m)
    console.print(f"held-out: {shown}; probes in {r['folder']}", highlight=False, soft_wrap=True)


@app.command("train-base")
@user_command
def train_base_command(
    ctx: typer.Context,
    resume: bool = typer.Option(True, help="Continue the run folder's latest checkpoint."),
    steps: Optional[int] = typer.Option(None, help="Total training steps (overrides base_model.steps)."),
) -> None:
    """Train the offline profiles' base text-to-image model on captioned renders (Prefect flow `train-base`)."""
    r = run_flow(ctx, "train_base", "train_base", resume=resume, steps=steps)
    held_out = r["metrics"].get("held_out") or {}
    shown = ", ".join(f"{name} {value:.4f}" for name, value in held_out.items()) or "not scored"
    console.print(f"trained to step {r['step']} on {r['train_images']} images; held-out loss: {shown}; "
                  f"model in {r['folder']}/model, samples {r['folder']}/samples.png", highlight=False, soft_wrap=True)


@app.command("ingest-real")
@user_command
def ingest_real_command(
    ctx: typer.Context,
    images: Optional[str] = typer.Option(None, help="Folder, URI or CSV/Parquet list of real images "
                                         "(default: held-out synthetic images of the lake)."),
    captions: Optional[str] = typer.Option(None, help="CSV/Parquet list: path, caption, domain, character_id."),
) -> None:
    """Ingest real character images into `real_images` (Prefect flow `ingest-real`)."""
    r = run_flow(ctx, "ingest_real", "ingest_real", images=images, captions=captions)
    console.print(f"{r['source']}: {r['files']} files, {r['skipped']} already ingested, {r['ingested']} new images, "
                  f"{r['duplicates']} duplicates, {r['errors']} errors; real_images holds {r['images']}",
                  highlight=False, soft_wrap=True)


@app.command("standardize")
@user_command
def standardize_command(
    ctx: typer.Context,
    limit: Optional[int] = typer.Option(None, help="Standardize at most N not yet standardized images."),
) -> None:
    """Standardize `real_images` with the trained standardizer into `standardized` (Prefect flow `standardize`)."""
    r = run_flow(ctx, "standardize", "standardize", limit=limit)
    console.print(f"model {r['model_version']}: {r['written']} standardized, {r['skipped']} already done, "
                  f"{r['errors']} errors, {r['images_per_second']} images/s; grid: {r['grid']}",
                  highlight=False, soft_wrap=True)
@app.command("ablate-standardizer")
@user_command
def ablate_standardizer_command(
    ctx: typer.Context,
    steps: Optional[int] = typer.Option(None, help="Training steps of every variant (overrides standardizer.steps)."),
    eval_pairs: int = typer.Option(64, help="Held-out pairs scored (spread over the held-out characters)."),
    variant: Optional[list[str]] = typer.Option(None, help="Only this variant (repeatable): "
                                                "'no modules', FBDM, RPIM, FBDM+RPIM."),
) -> None:
    """The paper's Table 3: train FBDM/RPIM variants, score them and baselines on held-out characters."""
    r = run_flow(ctx, "ablate_standardizer", "ablate_standardizer", steps=steps, eval_pairs=eval_pairs,
                 variants=variant or None)
    console.print(r["table"], highlight=False, soft_wrap=True)
    console.print(f"{r['train_pairs']} train / {r['test_pairs']} held-out pairs; grid: {r['grid']}", highlight=False)


@app.command("ablate-personalizer")
@user_command
def ablate_personalizer_command(
    ctx: typer.Context,
    steps: Optional[int] = typer.Option(None, help="Training steps of every mode (overrides personalizer.steps)."),
    mode: Optional[list[str]] = typer.Option(None, help="Only this mode (repeatable): two_stage, paired_one_stage, "
                                             "unpaired."),
    characters: Optional[int] = typer.Option(None, help="Score only the first N scored held-out characters."),
    role: str = typer.Option("scored", help="Held-out half scored: scored (the table) or validation (recipe choices)."),
) -> None:
    """The paper's Table 2: train the three modes on the base model, score them and controls on held-out characters."""
    r = run_flow(ctx, "ablate_personalizer", "ablate_personalizer", steps=steps, modes=mode or None,
                 characters=characters, role=role)
    console.print(r["table"], highlight=False, soft_wrap=True)
    console.print(f"{r['metrics']['scored_characters']} scored characters; grid: {r['grid']}", highlight=False)


def _gpu_description() -> str:
    import torch

    if not torch.cuda.is_available():
        return "none visible (CPU only)"
    return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))


@app.command("train-personalizer")
@user_command
def train_personalizer_command(
    ctx: typer.Context,
    mode: Optional[str] = typer.Option(None, help="two_stage | paired_one_stage | unpaired (default personalizer.mode)."),
    resume: bool = typer.Option(True, help="Continue the mode's latest checkpoint."),
    steps: Optional[int] = typer.Option(None, help="Total training steps (overrides personalizer.steps)."),
) -> None:
    """Train the IP-Adapter personalizer on SDXL (Prefect flow `train-personalizer`); multi-GPU: see README."""
    r = run_flow(ctx, "train_personalizer", "train_personalizer", mode=mode, resume=resume, steps=steps)
    console.print(f"{r['mode']}: trained to step {r['step']} (from {r['resumed_from']}) on {r['train_pairs']} pairs; "
                  f"held-out loss {r['heldout_loss']} (no reference: {r['heldout_loss_no_reference']}); adapter: "
                  f"{r['adapter_dir']}", highlight=False, soft_wrap=True)


@app.command("generate")
@user_command
def generate_command(
    ctx: typer.Context,
    reference: list[Path] = typer.Option(..., "--reference", help="Reference image of the character (repeatable: "
                                                                   "several are averaged)."),
    prompt: Optional[list[str]] = typer.Option(None, "--prompt", help="Text prompt (repeatable)."),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="File: one prompt per line (category<TAB>prompt)."),
    seeds: int = typer.Option(1, help="Images per prompt (seeds 0..N-1)."),
    scale: Optional[float] = typer.Option(None, help="Adapter scale in [0, 2] (default personalizer.scale)."),
    standardize: bool = typer.Option(True, "--standardize/--no-standardize",
                                     help="Standardize the reference first (the method) or use it as is."),
    mode: Optional[str] = typer.Option(None, help="Which trained adapter: two_stage | paired_one_stage | unpaired."),
    out: Optional[Path] = typer.Option(None, help="Folder for the PNGs (default <lake>/_artifacts/generations)."),
) -> None:
    """Serial generation: standardize the reference, then one image per prompt and seed (Prefect flow `generate`)."""
    from serialgen.inference.generate import read_prompts, read_reference

    for path in reference:  # fail fast, before Prefect starts
        read_reference(path)
    if prompts is not None:
        read_prompts(prompts)
    r = run_flow(ctx, "generate", "generate", references=[str(p) for p in reference], prompts=prompt or [],
                 prompts_file=str(prompts) if prompts else None, seeds=seeds, scale=scale, standardize=standardize,
                 method=mode, out=str(out) if out else None)
    console.print(f"{r['rows']} images written to `generations` and {Path(r['files'][0]).parent}; grid: {r['grid']}",
                  highlight=False, soft_wrap=True)
@app.command("evaluate")
@user_command
def evaluate_command(
    ctx: typer.Context,
    test_set: Optional[Path] = typer.Option(None, help="Test set YAML (see configs/test_set.yaml); default: tiny set."),
    force: bool = typer.Option(False, help="Evaluate even if models, test set and config are unchanged."),
) -> None:
    """Score every trained personalizer mode and standardizer variant; write the report (Prefect flow `evaluate`)."""
    result = run_flow(ctx, "evaluate", "evaluate", test_set=str(test_set) if test_set else None, force=force)
    if result["skipped"]:
        console.print(f"evaluate skipped: {result['why']}", highlight=False)
        return
    console.print(f"evaluated {', '.join(result['methods'] + result['standardizers'])}: "
                  f"{result['generations']} generations, {result['evaluations']} evaluation rows", highlight=False)
    console.print(f"report: {result['report']}\nmarkdown: {result['markdown']}\nuser study: {result['user_study']}",
                  highlight=False)
@app.command("run")
@user_command
def run_command(ctx: typer.Context,
                force: bool = typer.Option(False, help="Rerun every stage even if its inputs and config are unchanged.")) -> None:
    """Run the whole DAG (Prefect flow `serialgen`): each stage whose inputs or config changed."""
    summary = None if force else _nothing_to_run(ctx.obj)
    if summary is None:
        summary = run_flow(ctx, "dag", "serialgen", force=force)
    grid = Table("stage", "status", "why", "seconds")
    for row in summary:
        grid.add_row(row["stage"], row["status"], row["why"], str(row["seconds"]))
    console.print(grid)
    from serialgen.storage.runs import last_completed

    lake = ctx.obj.open_lake()
    console.print(f"lake: {lake.uri} (tables: {', '.join(lake.tables())}); "
                  f"artifacts: {Path(lake.uri) / '_artifacts' if lake.is_local else 'Prefect artifacts'}; "
                  "details: `serialgen info`", highlight=False)
    evaluated = last_completed(lake, "evaluate") if lake.exists("runs") else None
    if evaluated is not None and evaluated["metrics"].get("report"):
        console.print(f"report: {evaluated['metrics']['report']}", highlight=False, soft_wrap=True)


def _nothing_to_run(settings: Settings) -> list[dict] | None:
    """The DAG's summary when every stage would be skipped and no Prefect server is configured: then the
    ephemeral API (seconds to start) would only record a run that does nothing, so it is not started.
    With ``PREFECT_API_URL`` set the flow always runs, so the dashboard shows every scheduled run."""
    import os

    from serialgen.dag import should_run, topological

    if os.environ.get("PREFECT_API_URL"):
        return None
    summary = []
    for stage in topological():
        run, why = should_run(settings, stage.name)
        if run:
            return None
        summary.append({"stage": stage.name, "status": "skipped", "why": why, "seconds": 0.0})
    return summary


if __name__ == "__main__":
    app()
