"""StandardizationPipeline: reference image + background mask + reference pose -> standardized image.

DDIM (20 steps by default) on the model's own noise schedule, classifier-free guidance on the
reference (the unconditional half has its reference tokens masked out and a zero image
embedding, as in training's reference dropout). The ReferenceNet runs once per call: its tokens
do not depend on the denoising step.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from serialgen.models.standardizer import Standardizer


class StandardizationPipeline:
    """Wraps a :class:`Standardizer` for inference on arrays (``__call__``) or model tensors (``standardize``)."""

    def __init__(self, model: Standardizer, device: str | torch.device | None = None) -> None:
        self.model = model.eval()
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model.to(self.device)

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu",
                        torch_dtype: torch.dtype | None = None) -> "StandardizationPipeline":
        return cls(Standardizer.from_pretrained(folder, torch_dtype=torch_dtype), device)

    @torch.no_grad()
    def standardize(self, reference: torch.Tensor, background_mask: torch.Tensor, reference_pose: torch.Tensor,
                    target_pose: torch.Tensor, num_inference_steps: int = 20, guidance_scale: float = 3.5,
                    seed: int | Sequence[int] = 0) -> torch.Tensor:
        """Batched model tensors (RGB in [-1, 1], mask {0, 1} with 1 = background, poses in [0, 1])
        -> standardized RGB in [-1, 1], (B, 3, H, W).

        ``seed``: one for the batch's noise, or one per image (an image's result then does not depend
        on the batch it is in)."""
        model, device = self.model, self.device
        reference, background_mask, reference_pose = model.prepare_reference(
            reference.to(device), background_mask.to(device), reference_pose.to(device))
        target_pose = target_pose.to(device)
        batch = reference.shape[0]
        embeds = model.embed_images(reference)
        reference_latents = model.encode_images(reference)
        model.write_reference(reference_latents.to(model.reference_unet.dtype), embeds.to(model.reference_unet.dtype),
                              background_mask, reference_pose)
        guided = guidance_scale > 1.0
        keep = torch.arange(2 * batch, device=device) >= batch if guided else None
        embeds = torch.cat([embeds, embeds]) if guided else embeds
        scheduler = model.inference_scheduler()
        scheduler.set_timesteps(num_inference_steps, device=device)
        latents = _initial_noise(reference_latents.shape, seed).to(device)
        latents = latents * scheduler.init_noise_sigma
        dtype = model.denoising_unet.dtype
        try:
            for t in scheduler.timesteps:
                model_input = torch.cat([latents, latents]) if guided else latents
                model_input = scheduler.scale_model_input(model_input, t).to(dtype)
                noise = model.denoise(model_input, t.expand(model_input.shape[0]), embeds.to(dtype), target_pose,
                                      keep).float()
                if guided:
                    uncond, cond = noise.chunk(2)
                    noise = uncond + guidance_scale * (cond - uncond)
                latents = scheduler.step(noise, t, latents).prev_sample
        finally:
            model.clear_reference()
        return model.decode_latents(latents).float()

    def __call__(self, reference: np.ndarray | Sequence[np.ndarray], background_mask: np.ndarray | Sequence[np.ndarray],
                 reference_pose: np.ndarray | Sequence[np.ndarray], target_pose: np.ndarray | None = None,
                 num_inference_steps: int = 20, guidance_scale: float = 3.5, seed: int | Sequence[int] = 0,
                 size: tuple[int, int] | None = None) -> list[np.ndarray]:
        """uint8 images (HxWx3; mask HxW, 255 = background) -> standardized uint8 HxWx3 images.

        Inputs are padded to the model's aspect ratio (image white, mask background, pose black)
        and resized to ``size`` = (height, width), by default the size of the model's standard pose.
        ``target_pose`` defaults to the standard pose saved with the model.
        """
        references, masks, poses = (_as_list(x) for x in (reference, background_mask, reference_pose))
        if target_pose is None:
            target = self.model.target_pose(1)
            size = size or tuple(target.shape[-2:])
            if tuple(target.shape[-2:]) != tuple(size):
                raise ValueError(f"size {size} differs from the standard pose's {tuple(target.shape[-2:])}: "
                                 "the model was trained on that one")
        else:
            size = size or target_pose.shape[:2]
            target = _fit(target_pose, size, 0, 1.0, 0.0)[None]
        to_tensor = lambda images, fill, scale, offset: torch.stack([  # noqa: E731
            _fit(im, size, fill, scale, offset) for im in images])
        out = self.standardize(
            to_tensor(references, 255, 2.0, -1.0), to_tensor(masks, 255, 1.0, 0.0).unsqueeze(1).round(),
            to_tensor(poses, 0, 1.0, 0.0), target, num_inference_steps, guidance_scale, seed)
        images = ((out + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return list(images)


def _as_list(images: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """One image (an array) or several (a sequence of arrays)."""
    return [images] if isinstance(images, np.ndarray) else list(images)


def _initial_noise(shape: torch.Size, seed: int | Sequence[int]) -> torch.Tensor:
    """Gaussian latents drawn on the CPU from one seed, or from one seed per batch item."""
    if isinstance(seed, (int, np.integer)):
        return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)
    return torch.stack([torch.randn(shape[1:], generator=torch.Generator("cpu").manual_seed(int(s)),
                                    dtype=torch.float32) for s in seed])


def pad_to_frame(image: np.ndarray, size: tuple[int, int], fill: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Pad ``image`` to the aspect ratio of ``size`` = (H, W) (centred, ``fill``) and resize it to ``size``.

    Returns the framed uint8 image and the padding box (left, top, right, bottom): where the original
    sits in the frame, in frame pixels, so outputs map back to the input.
    """
    height, width = size
    h, w = image.shape[:2]
    canvas_w, canvas_h = max(w, round(h * width / height)), max(h, round(w * height / width))
    canvas = np.full((canvas_h, canvas_w, *image.shape[2:]), fill, np.uint8)
    top, left = (canvas_h - h) // 2, (canvas_w - w) // 2
    canvas[top:top + h, left:left + w] = image
    resample = Image.NEAREST if image.ndim == 2 else Image.BILINEAR
    framed = np.asarray(Image.fromarray(canvas).resize((width, height), resample))
    sx, sy = width / canvas_w, height / canvas_h
    return framed, (round(left * sx), round(top * sy), round((left + w) * sx), round((top + h) * sy))


def _fit(image: np.ndarray, size: tuple[int, int], fill: int, scale: float, offset: float) -> torch.Tensor:
    """Pad to the aspect ratio of ``size`` (centred, ``fill``), resize, map uint8 to [offset, offset + scale]."""
    tensor = torch.from_numpy(pad_to_frame(image, size, fill)[0].astype(np.float32) / 255.0)
    tensor = tensor.permute(2, 0, 1) if tensor.ndim == 3 else tensor
    return tensor * scale + offset
