"""Pixel space behind the VAE interface: a lossless "autoencoder" for models trained from scratch.

Latent diffusion needs an autoencoder that reconstructs; a randomly initialised, frozen VAE
decodes every latent to noise. Models trained from scratch on CPU (the ``tiny`` and ``small``
profiles) therefore denoise pixels, folded into channels by pixel-unshuffle (a patch of p x p
pixels becomes 3 p^2 channels): reconstruction is exact (PSNR = inf) and the UNet still works at
1/p of the resolution. The module has the part of :class:`diffusers.AutoencoderKL`'s interface the
standardizer uses (``encode(x).latent_dist.mode()/.sample()``, ``decode(z).sample``,
``config.scaling_factor``) and saves/loads like it, so a checkpoint folder keeps one layout. Stock
``StableDiffusionXLPipeline`` reads two more config entries, derived here: its downsampling factor from
the length of ``block_out_channels`` (2^(len - 1) = p) and ``force_upcast`` (nothing to upcast).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn import functional as F


class _PointMass:
    """A latent "distribution" with all its mass on one point (``mode`` and ``sample`` agree)."""

    def __init__(self, latents: torch.Tensor) -> None:
        self.latents = latents

    def mode(self) -> torch.Tensor:
        return self.latents

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.latents


class PixelShuffleAutoencoder(ModelMixin, ConfigMixin):
    """RGB (B, 3, H, W) in [-1, 1] <-> latents (B, 3 p^2, H/p, W/p); exact and parameter-free."""

    @register_to_config
    def __init__(self, patch_size: int = 4, in_channels: int = 3, scaling_factor: float = 1.0,
                 block_out_channels: tuple[int, ...] | None = None, force_upcast: bool = False) -> None:
        super().__init__()
        if patch_size < 1 or patch_size & (patch_size - 1):
            raise ValueError(f"patch_size must be a power of two, got {patch_size}")
        levels = patch_size.bit_length()  # diffusers pipelines: vae_scale_factor = 2 ** (levels - 1)
        if block_out_channels is not None and len(block_out_channels) != levels:
            raise ValueError(f"block_out_channels must have {levels} entries for patch_size {patch_size}")
        self.register_to_config(block_out_channels=tuple(block_out_channels or (in_channels,) * levels))
        self.register_buffer("_device_anchor", torch.zeros(()), persistent=False)  # gives .device / .dtype

    @property
    def latent_channels(self) -> int:
        return self.config.in_channels * self.config.patch_size ** 2

    def encode(self, images: torch.Tensor, return_dict: bool = True) -> AutoencoderKLOutput:
        latents = F.pixel_unshuffle(images, self.config.patch_size)
        return AutoencoderKLOutput(latent_dist=_PointMass(latents)) if return_dict else (_PointMass(latents),)

    def decode(self, latents: torch.Tensor, return_dict: bool = True) -> DecoderOutput:
        images = F.pixel_shuffle(latents, self.config.patch_size)
        return DecoderOutput(sample=images) if return_dict else (images,)


def load_autoencoder(folder: str | Path, torch_dtype: torch.dtype | None = None) -> nn.Module:
    """The checkpoint's ``vae/`` folder as whichever class saved it (an SD VAE or pixel space)."""
    folder = Path(folder)
    config = folder / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"missing {config}: expected the standardizer's autoencoder config there")
    if json.loads(config.read_text()).get("_class_name") == PixelShuffleAutoencoder.__name__:
        # parameter-free (the config is the whole model); stays float32 like the SD VAE
        return PixelShuffleAutoencoder.from_config(PixelShuffleAutoencoder.load_config(folder))
    return AutoencoderKL.from_pretrained(folder, **({"torch_dtype": torch_dtype} if torch_dtype else {}))
