"""Personalizer (IP-Adapter on SDXL) training: only the adapter learns, with the standardizer's loop
qualities (accelerate, exact resume, optional EMA, TensorBoard; see :mod:`serialgen.training.loop`).

Each step's noise, timesteps and CFG dropout come from a generator seeded by (seed, rank, step) and
the batch order is a pure function of (seed, epoch, batch), so a checkpoint only holds the adapter,
the optimizer, the LR scheduler, the EMA and the step/data position: resume is exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from diffusers import DDPMScheduler
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset, default_collate

from serialgen.config import PersonalizerSettings
from serialgen.models.ip_adapter import (IPAdapter, embed_images, encode_references, install_ip_adapter, reference_processor,
                                         unconditional_embeds)
from serialgen.models.sdxl import SDXLParts
from serialgen.training.data import sample_timesteps, seed_of
from serialgen.training.loop import LoopTimes, fit, make_accelerator


class TextToImage(nn.Module):
    """SDXL's parts with its conditioning (both text encoders, size/crop micro-conditioning), frozen, and an
    optional IP-Adapter (``adapter``): :class:`Personalizer` trains the adapter alone, the base-model trainer
    the UNet (with the adapter inside it, when the base learns an image path)."""

    def __init__(self, parts: SDXLParts) -> None:
        super().__init__()
        self.unet, self.vae = parts.unet, parts.vae
        self.text_encoder, self.text_encoder_2 = parts.text_encoder, parts.text_encoder_2
        self.image_encoder = parts.image_encoder
        self.tokenizers = (parts.tokenizer, parts.tokenizer_2)
        self.scheduler_config = parts.scheduler_config
        self.adapter: IPAdapter | None = None
        self._unconditional: torch.Tensor | None = None  # the frozen encoder's "no image", computed once
        for module in parts.frozen_modules().values():
            module.requires_grad_(False).eval()

    def install_adapter(self, image_tokens: int, seed: int, init: Path | None = None) -> IPAdapter:
        """Put an IP-Adapter into the UNet: drawn from ``seed``, or the exported weights ``init`` (a file
        in the stock layout, e.g. the one `train-base` trained with its base) when given."""
        self.adapter = install_ip_adapter(self.unet, self.image_encoder.config, image_tokens, seed)
        self._unconditional = None  # its layout (tokens or one vector) is the new adapter's
        if init is not None:
            from safetensors.torch import load_file

            try:
                self.adapter.load_export_state_dict(load_file(str(init)))
            except (KeyError, RuntimeError) as exc:
                raise ValueError(f"{init}: not an adapter of {image_tokens} image tokens for this base "
                                 f"(personalizer.image_tokens must match the file's): {exc}") from None
        return self.adapter

    def embed_references(self, images: list[np.ndarray]) -> torch.Tensor:
        """uint8 HxWx3 references -> their embeddings in the installed adapter's layout (frozen encoder, once each)."""
        return embed_images(self.image_encoder, reference_processor(self.image_encoder.config), images,
                            self.adapter.full)

    @torch.no_grad()
    def reference_embeds(self, batch: dict[str, Any], keep: torch.Tensor | None) -> torch.Tensor:
        """The batch's image embeddings: encoded from ``reference_pixels``, or precomputed ones
        (``image_embeds``, the frozen encoder's output); rows where ``keep`` is False get the
        unconditional embedding (the encoder on zero pixels). A batch without references gets the
        unconditional embedding in every row (text-only use of a base with an image path)."""
        if "reference_pixels" in batch:
            return encode_references(self.image_encoder, batch["reference_pixels"], self.adapter.full, keep)
        if self._unconditional is None or self._unconditional.device != self.image_encoder.device:
            self._unconditional = unconditional_embeds(self.image_encoder, self.adapter.full)
        uncond = self._unconditional
        if "image_embeds" not in batch:
            return uncond.expand(len(batch["pixel_values"]), *uncond.shape[1:])
        embeds = batch["image_embeds"].to(self.image_encoder.device)
        if keep is None:
            return embeds
        return torch.where(keep.to(embeds.device).view(-1, *[1] * (embeds.dim() - 1)), embeds, uncond.to(embeds))

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, prompt_embeds: torch.Tensor,
                pooled: torch.Tensor, time_ids: torch.Tensor, image_embeds: torch.Tensor | None = None) -> torch.Tensor:
        dtype = self.unet.dtype
        added = {"text_embeds": pooled.to(dtype), "time_ids": time_ids.to(dtype)}
        if image_embeds is not None:
            added["image_embeds"] = [image_embeds.to(dtype)]
        return self.unet(noisy.to(dtype), timesteps, encoder_hidden_states=prompt_embeds.to(dtype),
                         added_cond_kwargs=added).sample

    @torch.no_grad()
    def encode_prompt(self, input_ids: torch.Tensor, input_ids_2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SDXL's text conditioning: both encoders' penultimate hidden states concatenated, and the second
        encoder's projected pooled embedding (as ``StableDiffusionXLPipeline.encode_prompt``)."""
        first = self.text_encoder(input_ids.to(self.text_encoder.device), output_hidden_states=True)
        second = self.text_encoder_2(input_ids_2.to(self.text_encoder_2.device), output_hidden_states=True)
        return torch.cat([first.hidden_states[-2], second.hidden_states[-2]], -1), second.text_embeds

    @torch.no_grad()
    def encode_latents(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        vae_dtype = self.vae.dtype
        sample = self.vae.encode(pixels.to(self.vae.device, vae_dtype)).latent_dist.sample(generator)
        return sample.float() * self.vae.config.scaling_factor

    def training_scheduler(self) -> DDPMScheduler:
        return DDPMScheduler(**{k: v for k, v in self.scheduler_config.items() if k != "timestep_spacing"})


class Personalizer(TextToImage):
    """Frozen SDXL (UNet, VAE, both text encoders) and image encoder, plus the trainable IP-Adapter: drawn
    from ``seed``, or starting from the exported adapter ``init``."""

    def __init__(self, parts: SDXLParts, image_tokens: int = 257, seed: int = 0, init: Path | None = None) -> None:
        super().__init__(parts)
        self.install_adapter(image_tokens, seed, init).requires_grad_(True).train()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.adapter.parameters())


@dataclass
class PersonalizerTrainResult(LoopTimes):
    finished: bool = False                             # reached cfg.steps (EMA weights are now in the adapter)


def train_personalizer(model: Personalizer, train_data: Dataset, cfg: PersonalizerSettings, output_dir: Path,
                       resume: bool = True, stop_at: int | None = None,
                       accelerator: Accelerator | None = None) -> PersonalizerTrainResult:
    """Train the adapter on ``train_data`` (:class:`PersonalizerPairs` items) to ``cfg.steps`` (or ``stop_at``).

    ``output_dir`` holds ``checkpoint-<step>/`` (the adapter in the export layout + optimizer, LR
    scheduler, RNG, EMA, step and data position) and ``logs/`` (TensorBoard). With ``resume`` the
    latest checkpoint is continued. When the last step is reached the adapter holds the weights to
    export (the EMA weights if EMA is on).
    """
    output_dir = Path(output_dir)
    accelerator = accelerator or make_accelerator(cfg, output_dir)
    device = accelerator.device
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    for module in (model.unet, model.text_encoder, model.text_encoder_2, model.image_encoder):
        module.to(device) if weight_dtype == torch.float32 else module.to(device, weight_dtype)
    model.vae.to(device)  # float32: the SDXL VAE overflows in float16
    model.adapter.to(device, torch.float32)  # trainable weights stay float32 (autocast computes in low precision)
    if cfg.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
    result = fit_diffusion(model, train_data, cfg, output_dir, accelerator, PersonalizerTrainResult(),
                           "train-personalizer", _register_checkpoint_hooks, resume, stop_at)
    result.finished = result.step >= cfg.steps
    return result


def fit_diffusion(model: TextToImage, train_data: Dataset, cfg: Any, output_dir: Path, accelerator: Accelerator,
                  result: LoopTimes, label: str, register_hooks: Callable[[Accelerator], None], resume: bool,
                  stop_at: int | None) -> LoopTimes:
    """Both text-to-image trainings (base model, adapter): :func:`diffusion_loss` through the shared loop;
    at the last step the trainable weights are the ones to export (the EMA weights if EMA is on)."""
    device = accelerator.device
    noise_scheduler = model.training_scheduler()

    def loss_fn(prepared: nn.Module, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        return diffusion_loss(prepared, model, noise_scheduler, batch, generator, device, cfg)

    fitted = fit(model, model.trainable_parameters(), train_data, cfg, output_dir, accelerator, result, label,
                 loss_fn, register_hooks, resume, stop_at)
    if result.step >= cfg.steps and fitted.ema is not None:
        fitted.ema.copy_to(fitted.params)
    if fitted.writer is not None:
        fitted.writer.close()
    accelerator.wait_for_everyone()
    return result


def prediction_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet predicts under the schedule's ``prediction_type``: the noise, v or the clean sample."""
    kind = scheduler.config.prediction_type
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    return latents if kind == "sample" else noise


def dropout_masks(size: int, cfg: PersonalizerSettings, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (keep_text, keep_image): text dropped with ``text_dropout``, the image with
    ``image_dropout``, both with ``both_dropout`` (exclusive draws of one uniform number)."""
    u = torch.rand(size, generator=generator)
    image, both = getattr(cfg, "image_dropout", 0.0), getattr(cfg, "both_dropout", 0.0)  # none: a base model
    text_only, image_only = cfg.text_dropout, cfg.text_dropout + image
    both = image_only + both
    drop_text = (u < text_only) | ((u >= image_only) & (u < both))
    drop_image = (u >= text_only) & (u < both)
    return ~drop_text, ~drop_image


def diffusion_loss(prepared: nn.Module, model: TextToImage, noise_scheduler, batch: dict[str, Any],
                   generator: torch.Generator, device: torch.device, cfg: PersonalizerSettings | None = None,
                   scale: float | None = None) -> torch.Tensor:
    """The epsilon / v / x0 MSE of one batch. Noise, timesteps and (with ``cfg``) CFG dropout come from
    ``generator``; without ``cfg`` nothing is dropped (evaluation). ``scale`` overrides the adapter scale.
    Without an adapter (a text-only base) the batch needs no references and only text is dropped."""
    latents = model.encode_latents(batch["pixel_values"], generator)
    size = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator)
    if cfg is not None and cfg.noise_offset:
        noise = noise + cfg.noise_offset * torch.randn((*latents.shape[:2], 1, 1), generator=generator)
    timesteps = sample_timesteps(size, noise_scheduler.config.num_train_timesteps,
                                 cfg.high_noise_share if cfg is not None else 0.0, generator)
    keep_text, keep_image = dropout_masks(size, cfg, generator) if cfg is not None else (None, None)
    noise, timesteps = noise.to(device), timesteps.to(device)
    prompt_embeds, pooled = model.encode_prompt(batch["input_ids"], batch["input_ids_2"])
    if keep_text is not None:  # SDXL's unconditional text is zeros (force_zeros_for_empty_prompt)
        keep = keep_text.to(device)
        prompt_embeds = prompt_embeds * keep[:, None, None]
        pooled = pooled * keep[:, None]
    image_embeds = model.reference_embeds(batch, keep_image) if model.adapter is not None else None
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    target = prediction_target(noise_scheduler, latents, noise, timesteps)
    if scale is not None:
        model.adapter.set_scale(scale)
    try:
        prediction = prepared(noisy, timesteps, prompt_embeds, pooled, batch["time_ids"].to(device), image_embeds)
    finally:
        if scale is not None:
            model.adapter.set_scale(1.0)
    return F.mse_loss(prediction.float(), target.float())


@torch.no_grad()
def heldout_loss(model: Personalizer, data: Dataset, n: int, batch_size: int, seed: int = 0, scale: float = 1.0,
                 shuffle_references: bool = False, repeats: int = 4, references: bool = True) -> float | None:
    """Mean denoising loss on the first ``n`` held-out items, each with ``repeats`` fixed (noise,
    timestep) draws that depend only on ``seed`` and the item's position, so every model and scale
    is scored on the same noise. ``shuffle_references`` pairs each target with another item's reference;
    ``references`` False gives every item the unconditional image (what the adapter learned for "no image")."""
    n = min(n, len(data))
    if n == 0:
        return None
    device = model.unet.device
    scheduler = model.training_scheduler()
    items = [data[i] for i in range(n)]
    if shuffle_references and n > 1:
        others = [items[(i + 1) % n]["reference_pixels"] for i in range(n)]
        items = [{**item, "reference_pixels": ref} for item, ref in zip(items, others)]
    if not references:
        items = [{k: v for k, v in item.items() if k not in ("reference_pixels", "image_embeds")} for item in items]
    losses = []
    for repeat in range(repeats):
        for first in range(0, n, batch_size):
            batch = default_collate(items[first:first + batch_size])
            generator = torch.Generator().manual_seed(seed_of(seed, repeat, first))
            loss = diffusion_loss(model, model, scheduler, batch, generator, device, scale=scale)
            losses.append((loss.item(), len(batch["pair_id"])))
    return sum(l * k for l, k in losses) / sum(k for _, k in losses)


def _register_checkpoint_hooks(accelerator: Accelerator) -> None:
    """Checkpoints hold the adapter alone (in the export layout), never the frozen SDXL."""
    from safetensors.torch import load_file, save_file

    def save(models, weights, folder):
        for m in models:
            save_file(accelerator.unwrap_model(m).adapter.export_state_dict(),
                      str(Path(folder) / "adapter.safetensors"))
        weights.clear()

    def load(models, folder):
        while models:
            accelerator.unwrap_model(models.pop()).adapter.load_export_state_dict(
                load_file(str(Path(folder) / "adapter.safetensors")))

    accelerator.register_save_state_pre_hook(save)
    accelerator.register_load_state_pre_hook(load)

