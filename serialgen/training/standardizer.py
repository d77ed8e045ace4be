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

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel, compute_snr
from torch.nn import functional as F
from torch.utils.data import Dataset

from serialgen.compositing.split import TRAIN, split_of
from serialgen.config import Settings, StandardizerSettings
from serialgen.models.components import load_sd15_components, scratch_components
from serialgen.models.standardizer import Standardizer
from serialgen.pipelines.standardization import StandardizationPipeline
from serialgen.standard_skeleton import canonical_skeleton, mean_skeleton
from serialgen.training.colour import FIGURE_BANDS, band_colours, recolour_jointly
from serialgen.training.data import sample_timesteps
from serialgen.training.loop import Fitted, LoopTimes, fit, make_accelerator, prepare_run_folder, training_recipe
from serialgen.training.loop import ema_weights as _ema_weights
from serialgen.training.metrics import psnr, ssim


#: Settings that define the model: a run folder trained with others cannot be resumed.
MODEL_FIELDS = ("fbdm", "rpim", "width", "height", "model_dir", "vae_dir", "patch_size", "unet_channels",
                "layers_per_block", "prediction_type")


def build_standardizer(settings: Settings) -> Standardizer:
    """A fresh model for the profile (SD-1.5 from local folders, or from-scratch pixel-space components) whose
    target is one standard skeleton: the mean of the training characters' rendered standard views (the canonical
    skeleton at the render stage's standard-view rows when the lake has none)."""
    cfg, view = settings.standardizer, settings.render
    parts = (load_sd15_components(cfg.model_dir, cfg.vae_dir) if settings.profile == "sd15"
             else scratch_components(cfg.seed, cfg.patch_size, cfg.unet_channels, cfg.layers_per_block,
                                     prediction_type=cfg.prediction_type, attention_levels=cfg.attention_levels))
    model = Standardizer.from_components(parts, fbdm=cfg.fbdm, rpim=cfg.rpim, pretrained=settings.profile == "sd15",
                                         frame_reference=cfg.frame_reference, token_positions=cfg.token_positions,
                                         train_image_encoder=cfg.train_image_encoder)
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


def prepare_run_folder_for(settings: Settings, output_dir: Path, resume: bool, inputs: list[str]) -> None:
    """Resume rules of :func:`serialgen.training.loop.prepare_run_folder` for this standardizer definition."""
    model = {"profile": settings.profile,
             **settings.standardizer.model_dump(mode="json", include=set(MODEL_FIELDS))}
    lake = settings.open_lake()
    recipe = training_recipe(settings.standardizer)
    prepare_run_folder(output_dir, model, {name: lake.version(name) for name in inputs}, resume, recipe)


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
class TrainResult(LoopTimes):
    model_dir: Path | None = None                      # exported Standardizer (EMA weights if EMA)
    validation: Validation | None = None


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
    model.image_encoder.to(device, torch.float32 if model.train_image_encoder else weight_dtype)  # trained: float32
    if model.standard_keypoints is None:  # the canonical target, never one training character's skeleton
        model.set_standard_skeleton(canonical_skeleton(cfg.width, cfg.height), cfg.width, cfg.height)
    noise_scheduler = model.training_scheduler()

    def loss_fn(prepared: torch.nn.Module, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        return diffusion_loss(prepared, model, noise_scheduler, batch, cfg, generator, device)

    def after_step(step: int, fitted: Fitted) -> None:
        if cfg.validate_every and step % cfg.validate_every == 0 and step < cfg.steps:
            _validate_and_log(model, fitted.ema, validation_data, cfg, output_dir, step, fitted.writer, on_validation,
                              accelerator)

    result = TrainResult()
    fitted = fit(model, model.trainable_parameters(), train_data, cfg, output_dir, accelerator, result,
                 "train-standardizer", loss_fn, _register_checkpoint_hooks, resume, stop_at, after_step)
    model.clear_reference()
    if result.step >= cfg.steps:
        result.validation = _validate_and_log(model, fitted.ema, validation_data, cfg, output_dir, result.step,
                                              fitted.writer, on_validation, accelerator)
        if accelerator.is_main_process:
            with _ema_weights(fitted.ema, fitted.params):
                result.model_dir = model.save_pretrained(output_dir / "model")
    if fitted.writer is not None:
        fitted.writer.close()
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
                                      model.target_pose(1), cfg.inference_steps,
                                      cfg.guidance_scale, cfg.seed)
        prediction, target = (output.cpu() + 1) / 2, (batch["target_image"] + 1) / 2
        out.pair_ids += list(batch["pair_id"])
        out.character_ids += list(batch["character_id"])
        out.psnr = torch.cat([out.psnr, psnr(prediction, target)])
        out.ssim = torch.cat([out.ssim, ssim(prediction, target)])
        out.rows.append(torch.cat([(batch["input_image"] + 1) / 2, batch["reference_pose_image"], target, prediction], -1))
    return out


def self_referenced(batch: dict[str, Any], share: float,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reference side (image, background mask, pose) of ``batch``, with a ``share`` of its pairs given their own
    target (the standard view, its mask and its pose) instead: a copy task whose answer sits in the reference, so
    a model from scratch learns early that the reference decides the colours (``standardizer.self_reference``)."""
    sides = batch["input_image"], batch["background_mask"], batch["reference_pose_image"]
    if share <= 0:  # no draw from ``generator``: recipes without it keep their random stream
        return sides
    chosen = (torch.rand(len(sides[0]), generator=generator) < share).view(-1, 1, 1, 1)
    own = batch["target_image"], batch["target_background_mask"], batch["target_pose_image"]
    return tuple(torch.where(chosen, mine, theirs) for theirs, mine in zip(sides, own))


def colour_embedding_loss(embeds: torch.Tensor, targets: torch.Tensor, foregrounds: torch.Tensor) -> torch.Tensor:
    """MSE between the first ``FIGURE_BANDS`` x 3 numbers of each image embedding (B, 1, D) and the band colours of
    its target (B, 3, H, W) in [-1, 1] with foregrounds (B, H, W), empty bands left out: direct supervision that
    makes the trained image encoder carry the colours of each body band (``standardizer.colour_embedding``); the
    denoiser reads the embedding through its cross-attention."""
    colours, present = (torch.stack(x) for x in zip(*(band_colours(t, f) for t, f in zip(targets, foregrounds))))
    predicted = embeds[:, 0, :FIGURE_BANDS * 3].reshape(-1, FIGURE_BANDS, 3)
    errors = (predicted - colours.to(predicted)).square().mean(-1)
    return errors[present.to(errors.device)].mean() if present.any() else errors.sum() * 0


def diffusion_loss(prepared: torch.nn.Module, model: Standardizer, noise_scheduler, batch: dict[str, Any],
                   cfg: StandardizerSettings, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """The (min-SNR weighted) diffusion loss of one batch, with self-reference, joint colour augmentation, noise
    offset and reference dropout, plus the colour embedding term when it is on.

    ``prepared`` is ``model`` as accelerate wrapped it (DDP, autocast); noise, timesteps and dropout
    come from ``generator`` (CPU), so a seeded generator reproduces a step exactly.
    """
    reference, background_mask, reference_pose = self_referenced(batch, cfg.self_reference, generator)
    reference, target_image = recolour_jointly([reference, batch["target_image"]], cfg.colour_augment, generator)
    reference, background_mask, reference_pose = model.prepare_reference(
        reference.to(device), background_mask.to(device), reference_pose.to(device))
    latents = model.encode_images(target_image.to(device)).float()
    reference_latents = model.encode_images(reference).float()
    embeds = model.embed_images(reference).float()
    size = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator)
    if cfg.noise_offset:
        noise = noise + cfg.noise_offset * torch.randn((*latents.shape[:2], 1, 1), generator=generator)
    total = noise_scheduler.config.num_train_timesteps
    timesteps = sample_timesteps(size, total, cfg.high_noise_share, generator)
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
    prediction = prepared(noisy, timesteps, reference_latents, embeds, background_mask, reference_pose,
                          model.target_pose(size).to(device), keep)
    loss = F.mse_loss(prediction.float(), target.float(), reduction="none").flatten(1).mean(1)
    if cfg.snr_gamma:
        snr = compute_snr(noise_scheduler, timesteps)
        weight = torch.clamp(snr, max=cfg.snr_gamma)  # Min-SNR-gamma in x0 terms, per prediction type
        weight = {"v_prediction": weight / (snr + 1), "sample": weight}.get(prediction_type, weight / snr)
        loss = loss * weight
    loss = loss.mean()
    if cfg.colour_embedding:
        foreground = batch["target_background_mask"][:, 0] < 0.5
        loss = loss + cfg.colour_embedding * colour_embedding_loss(embeds, target_image, foreground)
    return loss


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


