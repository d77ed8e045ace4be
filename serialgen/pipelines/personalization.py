"""Personalized generation: stock diffusers ``StableDiffusionXLPipeline`` (DDIM, the paper's 20
steps) with our exported IP-Adapter installed, fed image embeddings we compute: each reference is
padded to a white square, encoded, and several references of one character are averaged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, StableDiffusionXLPipeline

from serialgen.models.ip_adapter import (encode_references, load_ip_adapter_weights, reference_pixels, reference_processor,
                                         unconditional_embeds)
from serialgen.models.sdxl import SDXLParts

SAMPLER = "ddim"


class PersonalizationPipeline:
    """SDXL + one trained adapter; ``embed`` a character's references once, then ``generate`` per prompt."""

    def __init__(self, parts: SDXLParts, adapter_file: Path, device: str | torch.device = "cpu") -> None:
        scheduler = DDIMScheduler(**parts.scheduler_config, clip_sample=False, set_alpha_to_one=False)
        self.pipe = StableDiffusionXLPipeline(
            vae=parts.vae, text_encoder=parts.text_encoder, text_encoder_2=parts.text_encoder_2,
            tokenizer=parts.tokenizer, tokenizer_2=parts.tokenizer_2, unet=parts.unet, scheduler=scheduler,
            image_encoder=parts.image_encoder, feature_extractor=reference_processor(parts.image_encoder.config))
        self.adapter = load_ip_adapter_weights(parts.unet, parts.image_encoder.config, adapter_file)
        self.pipe.to(device)
        self.pipe.set_progress_bar_config(disable=True)

    @torch.no_grad()
    def embed(self, references: list[np.ndarray]) -> torch.Tensor:
        """(2, 1, tokens, dim) / (2, 1, dim): the unconditional embedding (encoder on zero pixels) and the
        mean embedding of ``references`` (uint8 HxWx3), in the pipeline's ``ip_adapter_image_embeds`` layout."""
        pixels = reference_pixels(self.pipe.feature_extractor, references)
        embeds = encode_references(self.pipe.image_encoder, pixels, self.adapter.full).mean(0, keepdim=True)
        return torch.cat([self.unconditional(), embeds])

    @torch.no_grad()
    def unconditional(self) -> torch.Tensor:
        """The embedding classifier-free guidance contrasts with: the encoder run on all-zero pixels."""
        return unconditional_embeds(self.pipe.image_encoder, self.adapter.full)

    @torch.no_grad()
    def generate(self, prompt: str, embeds: torch.Tensor, seed: int, scale: float, height: int, width: int,
                 steps: int, guidance_scale: float) -> np.ndarray:
        """One image (uint8 HxWx3) of ``prompt`` for the embedded character (:meth:`embed`), seeded by ``seed``."""
        return self.generate_batch([prompt], embeds, [seed], scale, height, width, steps, guidance_scale)[0]

    @torch.no_grad()
    def generate_batch(self, prompts: list[str], embeds: torch.Tensor, seeds: list[int], scale: float, height: int,
                       width: int, steps: int, guidance_scale: float) -> list[np.ndarray]:
        """One image per (prompt, seed) of one embedded character (:meth:`embed`), denoised as one batch; image i
        depends only on its prompt and seed. One character per call: the stock pipeline gives every item of a
        batch the same reference (measured: rows of ``ip_adapter_image_embeds`` are not matched one to one with
        the batch items, which then all draw alike)."""
        self.adapter.set_scale(scale)
        if guidance_scale <= 1:  # no classifier-free guidance: only the conditional embedding
            embeds = embeds[1:]
        output = self.pipe(prompt=list(prompts), ip_adapter_image_embeds=[embeds], height=height, width=width,
                           num_inference_steps=steps, guidance_scale=guidance_scale, output_type="np",
                           generator=[torch.Generator().manual_seed(int(seed)) for seed in seeds])
        return list((np.clip(output.images, 0, 1) * 255).round().astype(np.uint8))
