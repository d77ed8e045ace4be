"""The standardization model: ReferenceNet + denoising UNet + pose guider + FBDM + RPIM.

Animate-Anyone-style dual UNet without temporal layers (paper section 3.3). The ReferenceNet
runs once on the clean reference latents (t = 0) and writes its self-attention inputs, after FBDM
and RPIM, into a :class:`ReferenceBank`; the denoising UNet, conditioned on the target pose (pose
guider added after ``conv_in``) and the CLIP image embedding, attends to them.

A checkpoint is a folder of diffusers/transformers sub-folders (safetensors), like a pipeline:
``reference_unet/ denoising_unet/ pose_guider/ [fbdm/] [rpim/] [positions/] vae/ image_encoder/ scheduler/``
plus ``standardizer.json`` and, when known, ``standard_pose.png`` and ``standard_keypoints.json`` (the canonical
target skeleton, :mod:`serialgen.standard_skeleton`, and its drawing: the default target pose).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from torch import nn
from torch.nn import functional as F
from transformers import CLIPVisionModelWithProjection

from serialgen.models.components import Components
from serialgen.models.fbdm import ForegroundBackgroundTokens
from serialgen.models.loading import without_progress_bars
from serialgen.models import framing
from serialgen.models.pixel_space import PixelShuffleAutoencoder, load_autoencoder
from serialgen.models.pose_guider import PoseGuider
from serialgen.models.reference_attention import ReferenceBank, install_reference_attention, self_attention_channels
from serialgen.models.rpim import ReferencePoseInjection
from serialgen.models.token_positions import TokenPositions

#: OpenAI CLIP preprocessing constants (SD image variations and Animate Anyone use them).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CONFIG_NAME = "standardizer.json"
STANDARD_POSE_NAME = "standard_pose.png"
STANDARD_KEYPOINTS_NAME = "standard_keypoints.json"


class Standardizer(nn.Module):
    """All components plus the glue; ``forward`` is one training prediction (noise, epsilon)."""

    def __init__(self, reference_unet: UNet2DConditionModel, denoising_unet: UNet2DConditionModel,
                 pose_guider: PoseGuider, vae: AutoencoderKL | PixelShuffleAutoencoder, image_encoder: CLIPVisionModelWithProjection,
                 scheduler_config: dict[str, Any], fbdm: ForegroundBackgroundTokens | None = None,
                 rpim: ReferencePoseInjection | None = None, standard_pose: np.ndarray | None = None,
                 standard_keypoints: np.ndarray | None = None, frame_reference: bool = False,
                 positions: TokenPositions | None = None, train_image_encoder: bool = False) -> None:
        super().__init__()
        self.reference_unet, self.denoising_unet, self.pose_guider = reference_unet, denoising_unet, pose_guider
        self.fbdm, self.rpim, self.positions = fbdm, rpim, positions
        self.vae, self.image_encoder = vae, image_encoder
        self.vae.requires_grad_(False)
        self.image_encoder.requires_grad_(train_image_encoder)
        self.train_image_encoder = train_image_encoder  # from scratch: a random encoder tells the UNets little
        self.scheduler_config = dict(scheduler_config)
        self.standard_pose = standard_pose
        self.standard_keypoints = standard_keypoints  # (18, 3) pixels of standard_pose's frame
        self.frame_reference = frame_reference  # crop the reference to its figure (serialgen.models.framing)
        self.bank = ReferenceBank()
        self.layer_channels = install_reference_attention(reference_unet, denoising_unet, self.bank)
        self.bank.inject = self._inject if (fbdm is not None or rpim is not None) else None
        self.bank.position = self._position if positions is not None else None
        self._per_level: dict[int, dict[str, torch.Tensor]] = {}  # tokens of a UNet level -> its resized inputs
        self._grids: dict[int, tuple[int, int]] = {}  # tokens of a UNet level -> its (h, w)
        self._pose_residual: torch.Tensor | None = None
        denoising_unet.conv_in.register_forward_hook(self._add_pose)
        _freeze_unused_reference_tail(reference_unet)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_components(cls, parts: Components, fbdm: bool = True, rpim: bool = True,
                        pretrained: bool = True, frame_reference: bool = False,
                        token_positions: bool = False, train_image_encoder: bool = False) -> "Standardizer":
        """A fresh model (new pose guider, FBDM, RPIM) around loaded or random components.

        With ``pretrained`` UNets FBDM and RPIM start at zero (the ReferenceNet starts unchanged, as in
        the paper); from scratch they start at the scale of the tokens they modify. ``token_positions`` adds
        :class:`TokenPositions` (not in the paper: for UNets from scratch, which know no place);
        ``train_image_encoder`` trains the cross-attention's image encoder with the UNets (the paper's CLIP is
        pretrained and frozen; a random one carries little of the reference).
        """
        channels = parts.reference_unet.config.block_out_channels[0]
        layers = tuple(self_attention_channels(parts.reference_unet))
        return cls(
            parts.reference_unet, parts.denoising_unet, PoseGuider(3, parts.pose_channels, channels),
            parts.vae, parts.image_encoder, parts.scheduler_config,
            fbdm=ForegroundBackgroundTokens(layers, init_std=0.0 if pretrained else 1.0) if fbdm else None,
            rpim=ReferencePoseInjection(layers, parts.pose_channels, channels, zero_init=pretrained) if rpim else None,
            frame_reference=frame_reference,
            positions=TokenPositions(layers) if token_positions else None, train_image_encoder=train_image_encoder,
        )

    def set_standard_skeleton(self, keypoints: np.ndarray, width: int, height: int) -> None:
        """Make ``keypoints`` (18, 3) the target skeleton of every standardization, drawn at ``width`` x ``height``."""
        from serialgen.pose_drawing import draw_pose

        self.standard_keypoints = np.asarray(keypoints, np.float32)
        self.standard_pose = draw_pose(self.standard_keypoints, width, height)

    def target_pose(self, batch: int) -> torch.Tensor:
        """The standard pose as the denoiser reads it, (batch, 3, H, W) in [0, 1]: one tensor for every pair in
        training, validation, the ablation and inference, so the model never meets a target it did not learn."""
        if self.standard_pose is None:
            raise ValueError("this model has no standard pose: call set_standard_skeleton first")
        pose = torch.from_numpy(np.array(self.standard_pose)).permute(2, 0, 1).float() / 255
        return pose[None].expand(batch, -1, -1, -1)

    def trainable_modules(self) -> list[nn.Module]:
        encoder = self.image_encoder if self.train_image_encoder else None
        return [m for m in (self.reference_unet, self.denoising_unet, self.pose_guider, self.fbdm, self.rpim,
                            self.positions, encoder) if m is not None]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.trainable_modules() for p in m.parameters() if p.requires_grad]

    def enable_gradient_checkpointing(self) -> None:
        self.reference_unet.enable_gradient_checkpointing()
        self.denoising_unet.enable_gradient_checkpointing()

    def training_scheduler(self) -> DDPMScheduler:
        return DDPMScheduler.from_config(self.scheduler_config)

    def inference_scheduler(self) -> DDIMScheduler:
        return DDIMScheduler.from_config(self.scheduler_config)

    # -- reference preparation and frozen encoders ---------------------------------------------
    def prepare_reference(self, reference: torch.Tensor, background_mask: torch.Tensor,
                          reference_pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The reference side as the model reads it: cropped to the figure when ``frame_reference``."""
        if not self.frame_reference:
            return reference, background_mask, reference_pose
        return framing.frame_reference(reference, background_mask, reference_pose)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, generator: torch.Generator | None = None,
                      sample: bool = False) -> torch.Tensor:
        """RGB in [-1, 1] -> scaled latents (the distribution's mode, or a sample drawn with ``generator``)."""
        dist = self.vae.encode(images.to(self.vae.dtype)).latent_dist
        latents = dist.sample(generator) if sample else dist.mode()
        return latents * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> RGB in [-1, 1]."""
        return self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor).sample.clamp(-1, 1)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """RGB in [-1, 1] -> CLIP image embedding (B, 1, D) for cross-attention (resized to a square); with
        gradients only while training a trainable encoder."""
        size = self.image_encoder.config.image_size
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.train_image_encoder):
            x = F.interpolate((images.float() + 1) / 2, size=(size, size), mode="bilinear", antialias=True,
                              align_corners=False)
            mean = x.new_tensor(CLIP_MEAN).view(1, 3, 1, 1)
            std = x.new_tensor(CLIP_STD).view(1, 3, 1, 1)
            embeds = self.image_encoder(((x - mean) / std).to(self.image_encoder.dtype)).image_embeds
        return embeds.unsqueeze(1)

    # -- the two UNets --------------------------------------------------------------------------
    def write_reference(self, reference_latents: torch.Tensor, image_embeds: torch.Tensor,
                        background_mask: torch.Tensor, reference_pose: torch.Tensor) -> None:
        """Run the ReferenceNet (t = 0) and fill the bank; independent of the denoising step."""
        self.clear_reference()
        inputs = {"background": background_mask} if self.fbdm is not None else {}
        if self.rpim is not None:
            inputs["pose"] = self.rpim.encode(reference_pose.to(self.rpim.dtype))
        # Resized once per UNet level, here: outside the UNet's checkpointed blocks, whose
        # recomputation must repeat the forward exactly.
        for h, w in self._level_grids(reference_latents):
            self._per_level[h * w] = {k: F.interpolate(v, size=(h, w), mode="area") for k, v in inputs.items()}
        timestep = torch.zeros(reference_latents.shape[0], device=reference_latents.device, dtype=torch.long)
        self.reference_unet(reference_latents, timestep, encoder_hidden_states=image_embeds, return_dict=False)

    def clear_reference(self) -> None:
        """Drop the reference tokens and resized inputs (and the autograd graph they hold)."""
        self.bank.clear()
        self._per_level = {}

    def denoise(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, image_embeds: torch.Tensor,
                target_pose: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the noise; ``keep`` False drops a sample's reference (bank masked, embedding zeroed)."""
        self.bank.keep = keep
        if keep is not None:
            image_embeds = image_embeds * keep.view(-1, 1, 1).to(image_embeds.dtype)
        self._pose_residual = self.pose_guider(target_pose.to(self.pose_guider.dtype))
        self._level_grids(noisy_latents)
        try:
            return self.denoising_unet(noisy_latents, timesteps, encoder_hidden_states=image_embeds,
                                       return_dict=False)[0]
        finally:
            self._pose_residual = None

    def forward(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, reference_latents: torch.Tensor,
                image_embeds: torch.Tensor, background_mask: torch.Tensor, reference_pose: torch.Tensor,
                target_pose: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        self.write_reference(reference_latents, image_embeds, background_mask, reference_pose)
        return self.denoise(noisy_latents, timesteps, image_embeds, target_pose, keep)

    def _add_pose(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        if self._pose_residual is None:
            return output
        residual = self._pose_residual
        if residual.shape[0] != output.shape[0]:  # one pose serves [uncond, cond] (guidance)
            residual = residual.repeat(output.shape[0] // residual.shape[0], 1, 1, 1)
        return output + residual.to(output.dtype)

    def _level_grids(self, latents: torch.Tensor) -> list[tuple[int, int]]:
        """The (h, w) token map of each UNet level for ``latents`` (recorded for :meth:`_position`)."""
        h, w = latents.shape[-2:]
        grids = []
        for _ in self.reference_unet.config.block_out_channels:
            grids.append((h, w))
            h, w = -(-h // 2), -(-w // 2)
        self._grids = {gh * gw: (gh, gw) for gh, gw in grids}
        return grids

    def _position(self, index: int, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.positions(index, hidden_states, self._grids[hidden_states.shape[1]])

    def _inject(self, index: int, hidden_states: torch.Tensor) -> torch.Tensor:
        level = self._per_level[hidden_states.shape[1]]
        if self.fbdm is not None:
            hidden_states = self.fbdm(index, hidden_states, level["background"].flatten(2).transpose(1, 2))
        if self.rpim is not None:
            hidden_states = self.rpim(index, hidden_states, level["pose"])
        return hidden_states

    # -- persistence ----------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> Path:
        without_progress_bars()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("reference_unet", "denoising_unet", "pose_guider", "fbdm", "rpim", "positions", "vae",
                     "image_encoder"):
            module = getattr(self, name)
            if module is not None:
                module.save_pretrained(folder / name)
        self.training_scheduler().save_pretrained(folder / "scheduler")
        (folder / CONFIG_NAME).write_text(json.dumps({"fbdm": self.fbdm is not None, "rpim": self.rpim is not None,
                                                      "positions": self.positions is not None,
                                                      "frame_reference": self.frame_reference}))
        if self.standard_pose is not None:
            from serialgen.storage.images import encode_png

            (folder / STANDARD_POSE_NAME).write_bytes(encode_png(self.standard_pose))
        if self.standard_keypoints is not None:
            (folder / STANDARD_KEYPOINTS_NAME).write_text(json.dumps(self.standard_keypoints.tolist()))
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, torch_dtype: torch.dtype | None = None) -> "Standardizer":
        folder = Path(folder)
        config_file = folder / CONFIG_NAME
        if not config_file.is_file():
            raise FileNotFoundError(f"missing {config_file}: not a standardizer checkpoint folder "
                                    "(written by Standardizer.save_pretrained)")
        flags = json.loads(config_file.read_text())
        without_progress_bars()
        kw = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
        encoder_kw = {"dtype": torch_dtype} if torch_dtype is not None else {}  # transformers' name
        standard_pose = None
        if (folder / STANDARD_POSE_NAME).is_file():
            from serialgen.storage.images import decode_image

            standard_pose = decode_image((folder / STANDARD_POSE_NAME).read_bytes(), "RGB")
        keypoints_file = folder / STANDARD_KEYPOINTS_NAME
        standard_keypoints = (np.asarray(json.loads(keypoints_file.read_text()), np.float32)
                              if keypoints_file.is_file() else None)
        return cls(
            UNet2DConditionModel.from_pretrained(folder / "reference_unet", **kw),
            UNet2DConditionModel.from_pretrained(folder / "denoising_unet", **kw),
            PoseGuider.from_pretrained(folder / "pose_guider", **kw),
            load_autoencoder(folder / "vae", torch_dtype),
            CLIPVisionModelWithProjection.from_pretrained(folder / "image_encoder", **encoder_kw),
            dict(DDPMScheduler.load_config(folder / "scheduler")),
            fbdm=ForegroundBackgroundTokens.from_pretrained(folder / "fbdm", **kw) if flags["fbdm"] else None,
            rpim=ReferencePoseInjection.from_pretrained(folder / "rpim", **kw) if flags["rpim"] else None,
            standard_pose=standard_pose, standard_keypoints=standard_keypoints,
            frame_reference=flags.get("frame_reference", False),
            positions=TokenPositions.from_pretrained(folder / "positions", **kw) if flags.get("positions") else None,
        )


def _freeze_unused_reference_tail(unet: UNet2DConditionModel) -> None:
    """Freeze what only shapes the ReferenceNet's output after its last stored tokens: never used.

    Every trainable parameter then receives a gradient (DDP needs no ``find_unused_parameters``).
    """
    for module in (unet.conv_norm_out, unet.conv_out):
        if module is not None:
            module.requires_grad_(False)
    attentions = getattr(unet.up_blocks[-1], "attentions", None)
    if attentions:
        last = attentions[-1]
        last.proj_out.requires_grad_(False)
        block = last.transformer_blocks[-1]
        for part in (block.attn1, block.attn2, block.norm2, block.norm3, block.ff):
            if part is not None:
                part.requires_grad_(False)
