"""The training loop both models share (:func:`fit`) and its pieces: the accelerate set-up, resumable
checkpoints (step and data position as an accelerate custom object), EMA weight swapping, TensorBoard,
progress lines and the loader's share of step time. The models differ only in their loss, their
checkpoint hooks and what happens after a step."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import ProjectConfiguration
from diffusers.training_utils import EMAModel

log = logging.getLogger(__name__)
CHECKPOINT_PREFIX = "checkpoint-"


class TrainState:
    """Step and data position, saved with every checkpoint (an accelerate custom object)."""

    def __init__(self) -> None:
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]


@dataclass
class LoopTimes:
    """One training invocation: its steps and losses, and where its time went (batches vs steps)."""

    step: int = 0
    resumed_from: int = 0
    losses: list[float] = field(default_factory=list)  # this invocation's per-step losses
    checkpoint: Path | None = None                     # last resumable checkpoint folder
    loader_start_seconds: float = 0.0                  # waiting for the first batch (worker start-up)
    data_times: list[float] = field(default_factory=list)  # seconds waiting for each later batch
    step_times: list[float] = field(default_factory=list)  # seconds of each step's forward/backward/update

    @property
    def data_share(self) -> float | None:
        """The loader's share of the time per step after the first batch."""
        total = sum(self.data_times) + sum(self.step_times[1:])
        return sum(self.data_times) / total if total else None


def make_accelerator(cfg: Any, output_dir: Path) -> Accelerator:
    """An Accelerator for a training section ``cfg`` (its ``mixed_precision``); in one process, a later
    run may use another mixed precision."""
    if AcceleratorState._shared_state.get("_mixed_precision") not in (None, cfg.mixed_precision):
        AcceleratorState._reset_state()  # the process-wide state pins the first run's precision
    return Accelerator(mixed_precision=cfg.mixed_precision,
                       project_config=ProjectConfiguration(project_dir=str(output_dir)))


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = checkpoints(output_dir)
    return found[-1] if found else None


def checkpoints(output_dir: Path) -> list[Path]:
    """``checkpoint-<step>`` folders, oldest first."""
    return sorted(Path(output_dir).glob(f"{CHECKPOINT_PREFIX}*"), key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def save_checkpoint(accelerator: Accelerator, output_dir: Path, step: int, keep: int) -> Path:
    """``accelerator.save_state`` into ``checkpoint-<step>``, keeping the newest ``keep`` (0: all).

    Written under a temporary name and renamed when complete, so a process killed while saving leaves no
    half checkpoint for the next run to resume from."""
    folder = output_dir / f"{CHECKPOINT_PREFIX}{step:07d}"
    if accelerator.is_main_process:
        partial = output_dir / f".partial-{CHECKPOINT_PREFIX}{step:07d}"
        shutil.rmtree(partial, ignore_errors=True)
        accelerator.save_state(str(partial))
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
        for old in checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return folder


class ema_weights:
    """Context: the EMA weights in place of the trained ones (no-op without EMA)."""

    def __init__(self, ema: EMAModel | None, params: list[torch.nn.Parameter]) -> None:
        self.ema, self.params = ema, params

    def __enter__(self) -> None:
        if self.ema is not None:
            self.ema.store(self.params)
            self.ema.copy_to(self.params)

    def __exit__(self, *exc) -> None:
        if self.ema is not None:
            self.ema.restore(self.params)


def tensorboard(folder: Path):
    from tensorboardX import SummaryWriter

    return SummaryWriter(str(folder))


#: Settings that change only how a trained model samples, never its weights.
SAMPLING_SETTINGS = frozenset({"inference_steps", "guidance_scale"})


def training_recipe(cfg: Any) -> dict[str, Any]:
    """The output-affecting training settings a resumed run must share: all but the sampling settings and
    the step count, so training longer continues; with a cosine schedule, which ends at ``steps``, the
    step count too."""
    return {k: v for k, v in cfg.output_settings().items()
            if k not in SAMPLING_SETTINGS and (k != "steps" or cfg.lr_schedule == "cosine")}


def prepare_run_folder(output_dir: Path, model: dict[str, Any], data: dict[str, Any], resume: bool,
                       recipe: dict[str, Any] | None = None) -> None:
    """Refuse to resume a folder trained with another model definition (``model``: the settings that
    define it); start over when ``resume`` is False, the training data changed (``data``: input table
    versions) or the training recipe changed (``recipe``: the output-affecting training settings except the
    step count, so training longer continues), so that resuming only ever continues an interrupted or
    shorter run of the same training."""
    from serialgen.config import ConfigError

    output_dir.mkdir(parents=True, exist_ok=True)
    marker = output_dir / "training.json"
    stored = json.loads(marker.read_text()) if marker.is_file() else {}
    if resume and any(output_dir.glob(f"{CHECKPOINT_PREFIX}*")):
        changed = sorted(k for k in model if stored.get(k) != model[k])
        if changed:
            raise ConfigError(f"{output_dir} was trained with other {', '.join(changed)}: "
                              "pass --no-resume to start over or choose another run folder")
        if stored.get("data", data) != data:
            log.info("training data changed since %s was written (%s -> %s): starting over",
                     output_dir, stored.get("data"), data)
            resume = False
        elif recipe is not None and stored.get("recipe", recipe) != recipe:
            changed = sorted(k for k in recipe if stored["recipe"].get(k) != recipe[k])
            log.info("training settings changed since %s was written (%s): starting over",
                     output_dir, ", ".join(changed))
            resume = False
    if not resume:
        for old in output_dir.glob(f"{CHECKPOINT_PREFIX}*"):
            shutil.rmtree(old)
    marker.write_text(json.dumps({**model, "data": data, "recipe": recipe}, indent=1))


def log_step(writer, label: str, step: int, last_step: int, losses: list[float], step_times: list[float],
             batch_size: int, lr: float, data_share: float | None) -> None:
    """TensorBoard scalars, and a line a person can follow in the terminal and the flow-run log:
    ``train-standardizer: step 40/60, loss 0.1234, 3.2 samples/s, ETA 6 s``."""
    recent = step_times[-20:]
    rate = batch_size * len(recent) / sum(recent) if recent and sum(recent) > 0 else 0.0
    eta = (last_step - step) * batch_size / rate if rate else float("nan")
    log.info("%s: step %d/%d, loss %.4f, %.2f samples/s, ETA %.0f s", label, step, last_step, losses[-1], rate, eta)
    if writer is not None:
        writer.add_scalar("train/loss", losses[-1], step)
        writer.add_scalar("train/lr", lr, step)
        writer.add_scalar("train/data_share", data_share or 0.0, step)
        writer.add_scalar("train/samples_per_second", rate, step)


@dataclass
class Fitted:
    """What :func:`fit` leaves for the model's own finish (validation, export)."""

    state: TrainState
    ema: EMAModel | None
    writer: Any                                        # TensorBoard writer (main process) or None
    params: list[torch.nn.Parameter]


def fit(model: torch.nn.Module, params: list[torch.nn.Parameter], train_data: Any, cfg: Any, output_dir: Path,
        accelerator: Accelerator, result: LoopTimes, label: str,
        loss_fn: Callable[[torch.nn.Module, dict[str, Any], torch.Generator], torch.Tensor],
        register_hooks: Callable[[Accelerator], None], resume: bool = True, stop_at: int | None = None,
        after_step: Callable[[int, Fitted], None] | None = None) -> Fitted:
    """AdamW + warmup then ``cfg.lr_schedule`` (constant or cosine to 0 at ``cfg.steps``), optional EMA, accelerate (multi-GPU, mixed precision), exact resume
    from the newest ``checkpoint-<step>`` (model state via ``register_hooks``, optimizer, scheduler, RNG, EMA,
    step and data position), deterministic per-step noise, TensorBoard and progress lines, resumable
    checkpoints every ``cfg.checkpoint_every`` steps; trains until ``cfg.steps`` (or ``stop_at``).

    ``loss_fn(prepared_model, batch, generator)`` is the model's loss; ``result`` is filled in place.
    """
    from diffusers.optimization import get_scheduler

    from serialgen.training.data import EpochBatches, EpochItems, make_loader, seed_of

    device = accelerator.device
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    lr_scheduler = get_scheduler(cfg.lr_schedule, optimizer,
                                 num_warmup_steps=cfg.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=cfg.steps * accelerator.num_processes)
    ema = EMAModel(params, decay=cfg.ema_decay) if cfg.ema_decay else None
    state = TrainState()
    register_hooks(accelerator)
    prepared, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    accelerator.register_for_checkpointing(state)
    if ema is not None:
        ema.to(device)
        accelerator.register_for_checkpointing(ema)
    latest = latest_checkpoint(output_dir) if resume else None
    if latest is not None:
        accelerator.load_state(str(latest))
    result.step = result.resumed_from = state.step
    result.checkpoint = latest
    fitted = Fitted(state, ema, tensorboard(output_dir / "logs") if accelerator.is_main_process else None, params)
    last_step = min(cfg.steps, stop_at) if stop_at is not None else cfg.steps
    sampler = EpochBatches(len(train_data), cfg.batch_size, cfg.seed, state.epoch, state.batch_in_epoch,
                           accelerator.process_index, accelerator.num_processes)
    remaining = last_step - state.step
    batches = islice(make_loader(EpochItems(train_data), sampler, cfg.num_workers, device.type == "cuda"),
                     remaining) if remaining > 0 else ()
    tick = time.perf_counter()
    for batch in batches:
        started = time.perf_counter()
        if state.step == result.resumed_from:
            result.loader_start_seconds = started - tick
        else:
            result.data_times.append(started - tick)
        generator = torch.Generator().manual_seed(seed_of(cfg.seed, accelerator.process_index, state.step))
        with accelerator.accumulate(prepared):
            loss = loss_fn(prepared, batch, generator)
            accelerator.backward(loss)
            if accelerator.sync_gradients and cfg.max_grad_norm:
                accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(params)
        result.losses.append(accelerator.gather(loss.detach()).mean().item())  # also syncs the device
        result.step_times.append(time.perf_counter() - started)
        state.step += 1
        state.batch_in_epoch += 1
        if state.batch_in_epoch == sampler.batches_per_epoch:
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        if accelerator.is_main_process and (state.step % cfg.log_every == 0 or state.step == last_step):
            log_step(fitted.writer, label, state.step, last_step, result.losses, result.step_times, cfg.batch_size,
                     lr_scheduler.get_last_lr()[0], result.data_share)
        if cfg.checkpoint_every and (state.step % cfg.checkpoint_every == 0 or state.step == last_step):
            result.checkpoint = save_checkpoint(accelerator, output_dir, state.step, cfg.checkpoints_total_limit)
        if after_step is not None:
            after_step(state.step, fitted)
        tick = time.perf_counter()
    result.step = state.step
    return fitted
