"""The standardizer's diffusers/transformers components: small from-scratch configs in pixel space
(tiny, small), SD-1.5-sized configs (random weights, for benchmarks) and loading SD-1.5 from local
folders only.

Nothing here downloads: ``sd15`` reads an SD-1.5 image-variation folder (``unet/``,
``image_encoder/``, ``scheduler/``) and a VAE folder; a missing file is a FileNotFoundError that
names the path and what belongs there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from serialgen.models.loading import without_progress_bars
from serialgen.models.pixel_space import PixelShuffleAutoencoder

#: The noise schedule of SD-1.5 (and of every tiny model), used by training (DDPM) and inference (DDIM).
SD15_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon", "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1,
}


@dataclass
class Components:
    """A UNet config (shared by ReferenceNet and denoiser), its weights, a VAE and an image encoder."""

    reference_unet: UNet2DConditionModel
    denoising_unet: UNet2DConditionModel
    vae: AutoencoderKL | PixelShuffleAutoencoder
    image_encoder: CLIPVisionModelWithProjection
    scheduler_config: dict[str, Any]
    pose_channels: tuple[int, ...]


#: The DDPM pixel-space schedule (Ho et al. 2020): its last step leaves no signal (alpha_bar_T ~ 4e-5),
#: unlike SD's latent schedule, so sampling from pure noise matches training. "Trailing" DDIM steps (Lin et
#: al. 2024) start sampling at t = 999, where training saw pure noise ("leading": 951 with 20 steps, and t = 1
#: with one step); one step then gives the model's x0 estimate from pure noise.
PIXEL_SCHEDULE: dict[str, Any] = {**SD15_SCHEDULE, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
                                  "steps_offset": 0, "timestep_spacing": "trailing"}


def scratch_components(seed: int = 0, patch_size: int = 4, block_out_channels: tuple[int, ...] = (32, 64),
                       layers_per_block: int = 1, attention_head_dim: int = 8,
                       prediction_type: str = "sample", attention_levels: int | None = None) -> Components:
    """Components for training from scratch: random UNets denoising pixel-unshuffled images.

    The autoencoder is :class:`PixelShuffleAutoencoder` (exact; a random VAE would decode noise),
    the pose encoders downsample by ``patch_size`` to the latent grid, and the CLIP image encoder is
    a small random frozen one (a fixed random feature of the reference; the appearance itself
    reaches the denoiser through reference attention).
    """
    import torch

    if patch_size < 2 or patch_size & (patch_size - 1):
        raise ValueError(f"patch_size must be a power of two >= 2, got {patch_size}")
    torch.manual_seed(seed)
    autoencoder = PixelShuffleAutoencoder(patch_size)
    levels = len(block_out_channels)
    attended = levels - 1 if attention_levels is None else attention_levels  # from the top; SD: all but the lowest
    width = block_out_channels[0]
    unet_config = dict(
        sample_size=8, in_channels=autoencoder.latent_channels, out_channels=autoencoder.latent_channels,
        layers_per_block=layers_per_block, block_out_channels=tuple(block_out_channels),
        down_block_types=("CrossAttnDownBlock2D",) * attended + ("DownBlock2D",) * (levels - attended),
        up_block_types=("UpBlock2D",) * (levels - attended) + ("CrossAttnUpBlock2D",) * attended,
        cross_attention_dim=width, attention_head_dim=attention_head_dim, norm_num_groups=8,
    )
    reference = UNet2DConditionModel(**unet_config)
    denoising = UNet2DConditionModel.from_config(reference.config)
    denoising.load_state_dict(reference.state_dict())
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, projection_dim=width, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        image_size=32, patch_size=8,
    ))
    strides = patch_size.bit_length() - 1  # stride-2 convs of the pose encoders: /patch_size
    pose_channels = tuple(16 * 2 ** i for i in range(strides + 1))
    schedule = {**PIXEL_SCHEDULE, "prediction_type": prediction_type}
    return Components(reference, denoising, autoencoder, encoder, schedule, pose_channels=pose_channels)


def tiny_components(seed: int = 0) -> Components:
    """Every component from small configs (diffusers-test sized), offline, CPU-fast, in pixel space."""
    return scratch_components(seed)


def sd15_configs() -> tuple[dict[str, Any], dict[str, Any], CLIPVisionConfig]:
    """SD-1.5 image-variation shaped configs (UNet with 768-d cross-attention, SD VAE, CLIP ViT-L/14)."""
    unet = dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8, layers_per_block=2,
                block_out_channels=(320, 640, 1280, 1280))
    vae = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
               block_out_channels=(128, 256, 512, 512),
               down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    encoder = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                               image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
    return unet, vae, encoder


def random_sd15_components() -> Components:
    """SD-1.5-sized components with random weights (GPU benchmarks without a download)."""
    unet_config, vae_config, encoder_config = sd15_configs()
    reference = UNet2DConditionModel(**unet_config)
    denoising = UNet2DConditionModel.from_config(reference.config)
    denoising.load_state_dict(reference.state_dict())
    return Components(reference, denoising, AutoencoderKL(**vae_config), CLIPVisionModelWithProjection(encoder_config),
                      dict(SD15_SCHEDULE), pose_channels=(16, 32, 96, 256))


def load_sd15_components(model_dir: Path | None, vae_dir: Path | None) -> Components:
    """Both UNets and the image encoder from a local SD-1.5 image-variation folder, the VAE from ``vae_dir``."""
    require_sd15_files(model_dir, vae_dir)
    without_progress_bars()
    model_dir, vae_dir = Path(model_dir), Path(vae_dir)
    reference = UNet2DConditionModel.from_pretrained(model_dir / "unet", local_files_only=True)
    denoising = UNet2DConditionModel.from_pretrained(model_dir / "unet", local_files_only=True)
    vae = AutoencoderKL.from_pretrained(vae_dir, local_files_only=True)
    encoder = CLIPVisionModelWithProjection.from_pretrained(model_dir / "image_encoder", local_files_only=True)
    schedule = dict(SD15_SCHEDULE)
    scheduler_file = model_dir / "scheduler" / "scheduler_config.json"
    if scheduler_file.is_file():
        import json

        stored = json.loads(scheduler_file.read_text())
        schedule.update({k: stored[k] for k in SD15_SCHEDULE if k in stored})
    return Components(reference, denoising, vae, encoder, schedule, pose_channels=(16, 32, 96, 256))


def require_sd15_files(model_dir: Path | None, vae_dir: Path | None) -> None:
    """Check (without loading) that the SD-1.5 folders hold what the standardizer needs; one clear
    FileNotFoundError naming the missing file, its folder and what belongs there."""
    if model_dir is None or vae_dir is None:
        raise FileNotFoundError(
            "the sd15 standardizer needs local weights: set standardizer.model_dir to an SD-1.5 image-variation "
            "folder (unet/, image_encoder/, scheduler/) and standardizer.vae_dir to a VAE folder "
            "(config.json + diffusion_pytorch_model.safetensors); nothing is downloaded")
    model_dir, vae_dir = Path(model_dir), Path(vae_dir)
    _require(model_dir / "unet", "the SD-1.5 image-variation UNet", "diffusion_pytorch_model")
    _require(model_dir / "image_encoder", "the CLIP vision encoder with projection", "model")
    _require(vae_dir, "the SD VAE (e.g. sd-vae-ft-mse)", "diffusion_pytorch_model")


def _require(folder: Path, what: str, weights_stem: str) -> None:
    config = folder / "config.json"
    weights = [folder / f"{weights_stem}.safetensors", folder / f"{weights_stem}.bin"]
    if not config.is_file():
        raise FileNotFoundError(f"missing {config}: expected the config of {what} there")
    if not any(w.is_file() for w in weights):
        raise FileNotFoundError(f"missing {weights[0]} (or .bin): expected the weights of {what} there")
