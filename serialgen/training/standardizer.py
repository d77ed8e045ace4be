"""Standardizer training: one loop for CPU (tiny), one GPU, or many GPUs/nodes, with exact resume.

Built on accelerate rather than Ray Train: the same script runs in-process (tests, a Prefect
task) and under ``accelerate launch`` on several GPUs or nodes; it gives mixed precision, DDP and
``save_state``/``load_state`` (optimizer, LR scheduler, RNG, custom state) with diffusers' own
save/load hooks, so checkpoints stay diffusers-style folders. Ray stays where it pays, in the
data stages; the training data arrives through a torch loader over Lance.

Exact resume: the sampler is a pure function of (seed, epoch, batch index) and each step's
noise, timesteps and reference dropout come from a generator seeded by (seed, rank, step), so a
checkpoint only needs the step and the data position besides the optimizer and LR scheduler.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import ProjectConfiguration
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel, compute_snr
from torch.nn import functional as F
from torch.utils.data import Dataset

from serialgen.config import StandardizerSettings
from serialgen.models.standardizer import Standardizer
from serialgen.pipelines.standardization import StandardizationPipeline
from serialgen.training.data import EpochBatches, EpochItems, make_loader, seed_of
from serialgen.training.metrics import psnr, ssim

CHECKPOINT_PREFIX = "checkpoint-"


@dataclass
class Validation:
    """PSNR/SSIM (data range 1) of DDIM standardizations of held-out pairs, and their image grid."""

    n: int
    psnr: float | None
    ssim: float | None
    grid: np.ndarray | None = None  # rows: input | reference pose | target | standardized (uint8 HxWx3)

    def metrics(self) -> dict[str, Any]:
        return {"val_pairs": self.n, "val_psnr": self.psnr, "val_ssim": self.ssim}


@dataclass
class TrainResult:
    step: int
    resumed_from: int
    losses: list[float] = field(default_factory=list)  # this invocation's per-step losses
    checkpoint: Path | None = None                     # last resumable checkpoint folder
    model_dir: Path | None = None                      # exported Standardizer (EMA weights if EMA)
    validation: Validation | None = None
    loader_start_seconds: float = 0.0                  # waiting for the first batch (worker start-up)
    data_times: list[float] = field(default_factory=list)  # seconds waiting for each later batch
    step_times: list[float] = field(default_factory=list)  # seconds of each step's forward/backward/update

    @property
    def data_share(self) -> float | None:
        """The loader's share of the time per step after the first batch."""
        total = sum(self.data_times) + sum(self.step_times[1:])
        return sum(self.data_times) / total if total else None


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


def train_standardizer(model: Standardizer, train_data: Dataset, cfg: StandardizerSettings, output_dir: Path,
                       validation_data: Dataset | None = None, resume: bool = True, stop_at: int | None = None,
                       accelerator: Accelerator | None = None,
                       on_validation: Callable[[int, Validation], None] | None = None) -> TrainResult:
    """Train ``model`` on ``train_data`` (pairs items) for ``cfg.steps`` steps (or until ``stop_at``).

    ``output_dir`` holds ``checkpoint-<step>/`` (resumable: ``model/`` + optimizer, LR scheduler,
    RNG, step and data position), ``logs/`` (TensorBoard), ``validation/`` grids and, after the last
    step, ``model/`` (the exported Standardizer). With ``resume`` the latest checkpoint is continued.
    """
    output_dir = Path(output_dir)
    accelerator = accelerator or make_accelerator(cfg, output_dir)
    device = accelerator.device
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    model.vae.to(device)  # float32: the SD VAE overflows in float16
    model.image_encoder.to(device, weight_dtype)
    if model.standard_pose is None and len(train_data):
        model.standard_pose = _standard_pose(train_data[0])

    params = model.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    lr_scheduler = get_scheduler("constant_with_warmup", optimizer,
                                 num_warmup_steps=cfg.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=cfg.steps * accelerator.num_processes)
    ema = EMAModel(params, decay=cfg.ema_decay) if cfg.ema_decay else None
    state = TrainState()
    _register_checkpoint_hooks(accelerator)
    prepared, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    accelerator.register_for_checkpointing(state)
    if ema is not None:
        ema.to(device)
        accelerator.register_for_checkpointing(ema)

    latest = latest_checkpoint(output_dir) if resume else None
    if latest is not None:
        accelerator.load_state(str(latest))
    result = TrainResult(step=state.step, resumed_from=state.step, checkpoint=latest)
    writer = _tensorboard(output_dir / "logs") if accelerator.is_main_process else None
    noise_scheduler = model.training_scheduler()
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
            loss = diffusion_loss(prepared, model, noise_scheduler, batch, cfg, generator, device)
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
        if writer is not None and (state.step % cfg.log_every == 0 or state.step == last_step):
            writer.add_scalar("train/loss", result.losses[-1], state.step)
            writer.add_scalar("train/lr", lr_scheduler.get_last_lr()[0], state.step)
            writer.add_scalar("train/data_share", result.data_share or 0.0, state.step)
        if cfg.checkpoint_every and (state.step % cfg.checkpoint_every == 0 or state.step == last_step):
            result.checkpoint = _save_checkpoint(accelerator, output_dir, state.step, cfg.checkpoints_total_limit)
        if cfg.validate_every and state.step % cfg.validate_every == 0 and state.step < cfg.steps:
            _validate_and_log(model, ema, validation_data, cfg, output_dir, state.step, writer, on_validation,
                              accelerator)
        tick = time.perf_counter()
    model.clear_reference()

    result.step = state.step
    if state.step >= cfg.steps:
        result.validation = _validate_and_log(model, ema, validation_data, cfg, output_dir, state.step, writer,
                                              on_validation, accelerator)
        if accelerator.is_main_process:
            with _ema_weights(ema, params):
                result.model_dir = model.save_pretrained(output_dir / "model")
    if writer is not None:
        writer.close()
    accelerator.wait_for_everyone()
    return result


def make_accelerator(cfg: StandardizerSettings, output_dir: Path) -> Accelerator:
    """An Accelerator for ``cfg``; in one process, a later run may use another mixed precision."""
    if AcceleratorState._shared_state.get("_mixed_precision") not in (None, cfg.mixed_precision):
        AcceleratorState._reset_state()  # the process-wide state pins the first run's precision
    return Accelerator(mixed_precision=cfg.mixed_precision,
                       project_config=ProjectConfiguration(project_dir=str(output_dir)))


def validate(model: Standardizer, data: Dataset | None, cfg: StandardizerSettings) -> Validation:
    """Standardize the first ``cfg.validation_pairs`` held-out pairs (DDIM, ``cfg.inference_steps``) and score them."""
    n = min(cfg.validation_pairs, len(data)) if data is not None else 0
    if n == 0:
        return Validation(0, None, None)
    pipeline = StandardizationPipeline(model, model.denoising_unet.device)
    scores, rows = [], []
    for first in range(0, n, cfg.batch_size):
        batch = torch.utils.data.default_collate([data[i] for i in range(first, min(n, first + cfg.batch_size))])
        output = pipeline.standardize(batch["input_image"], batch["background_mask"], batch["reference_pose_image"],
                                      batch["target_pose_image"], cfg.inference_steps, cfg.guidance_scale, cfg.seed)
        prediction, target = (output.cpu() + 1) / 2, (batch["target_image"] + 1) / 2
        scores.append(torch.stack([psnr(prediction, target), ssim(prediction, target)], 1))
        rows.append(torch.cat([(batch["input_image"] + 1) / 2, batch["reference_pose_image"], target, prediction], -1))
    model.train()
    scores = torch.cat(scores)
    grid = torch.cat([torch.cat(list(r), -2) for r in rows], -2)
    grid = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Validation(n, scores[:, 0].mean().item(), scores[:, 1].mean().item(), grid)


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = _checkpoints(output_dir)
    return found[-1] if found else None


def _checkpoints(output_dir: Path) -> list[Path]:
    """``checkpoint-<step>`` folders, oldest first."""
    return sorted(Path(output_dir).glob(f"{CHECKPOINT_PREFIX}*"), key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def diffusion_loss(prepared: torch.nn.Module, model: Standardizer, noise_scheduler, batch: dict[str, Any],
                   cfg: StandardizerSettings, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """The (min-SNR weighted) diffusion loss of one batch, with noise offset and reference dropout.

    ``prepared`` is ``model`` as accelerate wrapped it (DDP, autocast); noise, timesteps and dropout
    come from ``generator`` (CPU), so a seeded generator reproduces a step exactly.
    """
    reference = batch["input_image"].to(device)
    latents = model.encode_images(batch["target_image"].to(device)).float()
    reference_latents = model.encode_images(reference).float()
    embeds = model.embed_images(reference).float()
    size = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator)
    if cfg.noise_offset:
        noise = noise + cfg.noise_offset * torch.randn((*latents.shape[:2], 1, 1), generator=generator)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (size,), generator=generator)
    keep = torch.rand(size, generator=generator) >= cfg.reference_dropout
    noise, timesteps, keep = noise.to(device), timesteps.to(device), keep.to(device)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    elif prediction_type == "sample":
        target = latents
    else:
        target = noise
    prediction = prepared(noisy, timesteps, reference_latents, embeds, batch["background_mask"].to(device),
                          batch["reference_pose_image"].to(device), batch["target_pose_image"].to(device), keep)
    loss = F.mse_loss(prediction.float(), target.float(), reduction="none").flatten(1).mean(1)
    if cfg.snr_gamma:
        snr = compute_snr(noise_scheduler, timesteps)
        weight = torch.clamp(snr, max=cfg.snr_gamma)  # Min-SNR-gamma in x0 terms, per prediction type
        weight = {"v_prediction": weight / (snr + 1), "sample": weight}.get(prediction_type, weight / snr)
        loss = loss * weight
    return loss.mean()


def _validate_and_log(model: Standardizer, ema: EMAModel | None, data: Dataset | None, cfg: StandardizerSettings,
                      output_dir: Path, step: int, writer, on_validation,
                      accelerator: Accelerator) -> Validation | None:
    result = None
    if accelerator.is_main_process:
        with _ema_weights(ema, model.trainable_parameters()):
            result = validate(model, data, cfg)
        if result.grid is not None:
            from serialgen.storage.images import encode_png

            path = output_dir / "validation" / f"step-{step:07d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_png(result.grid))
            writer.add_image("val/grid", result.grid, step, dataformats="HWC")
            writer.add_scalar("val/psnr", result.psnr, step)
            writer.add_scalar("val/ssim", result.ssim, step)
        if on_validation is not None:
            on_validation(step, result)
    accelerator.wait_for_everyone()
    return result


class _ema_weights:
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


def _register_checkpoint_hooks(accelerator: Accelerator) -> None:
    """Save the model as a Standardizer folder inside each accelerate checkpoint (diffusers' pattern)."""

    def save(models, weights, folder):
        for m in models:
            accelerator.unwrap_model(m).save_pretrained(Path(folder) / "model")
        weights.clear()

    def load(models, folder):
        while models:
            target = accelerator.unwrap_model(models.pop())
            target.load_state_dict(Standardizer.from_pretrained(Path(folder) / "model").state_dict())

    accelerator.register_save_state_pre_hook(save)
    accelerator.register_load_state_pre_hook(load)


def _save_checkpoint(accelerator: Accelerator, output_dir: Path, step: int, keep: int) -> Path:
    folder = output_dir / f"{CHECKPOINT_PREFIX}{step:07d}"
    if accelerator.is_main_process:
        accelerator.save_state(str(folder))
        checkpoints = _checkpoints(output_dir)
        for old in checkpoints[:-keep] if keep > 0 else []:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return folder


def _standard_pose(item: dict[str, Any]) -> np.ndarray:
    """The target pose of a training pair as uint8 HxWx3: the model's default target at inference."""
    return (item["target_pose_image"].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _tensorboard(folder: Path):
    from tensorboardX import SummaryWriter

    return SummaryWriter(str(folder))
