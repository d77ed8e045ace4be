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

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel, compute_snr
from torch.nn import functional as F
from torch.utils.data import Dataset

from serialgen.config import StandardizerSettings
from serialgen.models.standardizer import Standardizer
from serialgen.pipelines.standardization import StandardizationPipeline
from serialgen.standard_skeleton import canonical_skeleton
from serialgen.training.data import EpochBatches, EpochItems, make_loader, seed_of
from serialgen.training.loop import TrainState, latest_checkpoint, log_step, make_accelerator
from serialgen.training.loop import ema_weights as _ema_weights
from serialgen.training.loop import save_checkpoint as _save_checkpoint
from serialgen.training.loop import tensorboard as _tensorboard
from serialgen.training.metrics import psnr, ssim


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
    if model.standard_keypoints is None:  # the canonical target, never one training character's skeleton
        model.set_standard_skeleton(canonical_skeleton(cfg.width, cfg.height), cfg.width, cfg.height)

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
        if accelerator.is_main_process and (state.step % cfg.log_every == 0 or state.step == last_step):
            log_step(writer, "train-standardizer", state.step, last_step, result.losses, result.step_times, cfg.batch_size,
                     lr_scheduler.get_last_lr()[0], result.data_share)
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


def validate(model: Standardizer, data: Dataset | None, cfg: StandardizerSettings) -> Validation:
    """Standardize the first ``cfg.validation_pairs`` held-out pairs (DDIM, ``cfg.inference_steps``) and score them."""
    n = min(cfg.validation_pairs, len(data)) if data is not None else 0
    if n == 0:
        return Validation(0, None, None)
    scored = score_pairs(model, data, n, cfg)
    model.train()
    grid = torch.cat([torch.cat(list(r), -2) for r in scored.rows], -2)
    grid = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Validation(n, scored.psnr.mean().item(), scored.ssim.mean().item(), grid)


@dataclass
class PairScores:
    """Per-pair PSNR/SSIM (data range 1) of standardized held-out pairs, and their image rows."""

    pair_ids: list[str]
    character_ids: list[str]
    psnr: torch.Tensor
    ssim: torch.Tensor
    rows: list[torch.Tensor]  # per batch: input | reference pose | target | standardized, (B, 3, H, 4W) in [0, 1]


@torch.no_grad()
def score_pairs(model: Standardizer, data: Dataset, n: int, cfg: StandardizerSettings) -> PairScores:
    """Standardize the first ``n`` pairs of ``data`` (DDIM, ``cfg.inference_steps``) and score each against its target."""
    pipeline = StandardizationPipeline(model, model.denoising_unet.device)
    out = PairScores([], [], torch.empty(0), torch.empty(0), [])
    for first in range(0, n, cfg.batch_size):
        batch = torch.utils.data.default_collate([data[i] for i in range(first, min(n, first + cfg.batch_size))])
        output = pipeline.standardize(batch["input_image"], batch["background_mask"], batch["reference_pose_image"],
                                      batch["target_pose_image"], cfg.inference_steps, cfg.guidance_scale, cfg.seed)
        prediction, target = (output.cpu() + 1) / 2, (batch["target_image"] + 1) / 2
        out.pair_ids += list(batch["pair_id"])
        out.character_ids += list(batch["character_id"])
        out.psnr = torch.cat([out.psnr, psnr(prediction, target)])
        out.ssim = torch.cat([out.ssim, ssim(prediction, target)])
        out.rows.append(torch.cat([(batch["input_image"] + 1) / 2, batch["reference_pose_image"], target, prediction], -1))
    return out


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


