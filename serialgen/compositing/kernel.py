"""The vectorised compositing kernel: a batch of RGBA characters onto a batch of backgrounds.

Image, alpha (hence the background mask) and the soft shadow are warped by one sampling grid per
sample, built from the same ``p' = scale * p + offset`` that moves the keypoints
(:func:`serialgen.compositing.augment.transform_keypoints`), so they agree to sub-pixel precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from serialgen.compositing.augment import Augmentation, transform_keypoints

#: The shadow is soft: it is warped and blurred at 1/SHADOW_REDUCTION of the canvas resolution.
SHADOW_REDUCTION = 4


@dataclass(frozen=True)
class Composited:
    image: np.ndarray            # (B, H, W, 3) uint8
    background_mask: np.ndarray  # (B, H, W) bool, True where the pixel is background (alpha < 0.5)
    keypoints: np.ndarray        # (B, 18, 3) float32, moved with the character; visibility 0 outside
    shadow: np.ndarray           # (B, H, W) float32, how much the cast shadow darkens each pixel (0..1)


def composite(rgba: np.ndarray, keypoints: np.ndarray, backgrounds: np.ndarray,
              augs: Sequence[Augmentation]) -> Composited:
    """Composite ``rgba`` (B, h, w, 4) uint8 over ``backgrounds`` (B, H, W, 3) uint8 as ``augs`` say."""
    batch, src_h, src_w = rgba.shape[:3]
    height, width = backgrounds.shape[1:3]
    scale = torch.tensor([a.scale for a in augs], dtype=torch.float32)
    offset = torch.tensor([a.offset for a in augs], dtype=torch.float32)

    with torch.no_grad():
        fg = torch.from_numpy(np.ascontiguousarray(rgba)).permute(0, 3, 1, 2).float() / 255
        alpha = fg[:, 3:]
        premultiplied = torch.cat([fg[:, :3] * alpha, alpha], dim=1)
        # Prefilter before shrinking (sigma = (1/scale - 1) / 2): no aliasing, and a symmetric blur
        # keeps every body part centred on its keypoint.
        antialias = ((1 / scale - 1) / 2).clamp(min=0)
        shrunk = antialias > 0.1
        if bool(shrunk.any()):
            premultiplied[shrunk] = _gaussian_blur(premultiplied[shrunk], antialias[shrunk])
        warped = _warp(premultiplied, scale, offset, (src_w, src_h), (width, height), (height, width))
        a = warped[:, 3:]

        bg = torch.from_numpy(np.ascontiguousarray(backgrounds)).permute(0, 3, 1, 2).float() / 255
        bg = _jitter_background(bg, augs)
        shadow = _shadow(alpha, scale, offset, (src_w, src_h), (width, height), augs)
        bg = bg * (1 - shadow)

        out = warped[:, :3] + (1 - a) * bg
        brightness = torch.tensor([x.brightness for x in augs]).view(-1, 1, 1, 1)
        contrast = torch.tensor([x.contrast for x in augs]).view(-1, 1, 1, 1)
        out = ((out - 0.5) * contrast + 0.5) * brightness
        image = (out.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        mask = (a[:, 0] < 0.5).numpy()

    kp = transform_keypoints(keypoints, scale.numpy(), offset.numpy(), (width, height))
    return Composited(image=image, background_mask=mask, keypoints=kp, shadow=shadow[:, 0].numpy())


def _warp(src: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, src_size: tuple[int, int],
          canvas: tuple[int, int], out_hw: tuple[int, int]) -> torch.Tensor:
    """Sample ``src`` so that source point p lands at ``scale * p + offset`` on the canvas.

    ``out_hw`` may be coarser than the canvas (same mapping, fewer samples). With
    ``align_corners=False`` normalised coordinates span pixel edges, matching continuous pixel
    coordinates where pixel i covers [i, i + 1).
    """
    (sw, sh), (cw, ch) = src_size, canvas
    ax, ay = cw / (scale * sw), ch / (scale * sh)
    bx = ax - 2 * offset[:, 0] / (scale * sw) - 1
    by = ay - 2 * offset[:, 1] / (scale * sh) - 1
    zero = torch.zeros_like(ax)
    theta = torch.stack([torch.stack([ax, zero, bx], 1), torch.stack([zero, ay, by], 1)], 1)
    grid = F.affine_grid(theta, [src.shape[0], src.shape[1], *out_hw], align_corners=False)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _jitter_background(bg: torch.Tensor, augs: Sequence[Augmentation]) -> torch.Tensor:
    """Saturation and per-channel gain of the background only (the character keeps its colours).

    Both are linear in RGB, so one 3x3 matrix per sample: ``diag(gain) @ (s I + (1 - s) / 3)``.
    """
    saturation = torch.tensor([a.background_saturation for a in augs]).view(-1, 1, 1)
    gain = torch.tensor([a.background_gain for a in augs], dtype=torch.float32)
    matrix = gain[:, :, None] * (saturation * torch.eye(3) + (1 - saturation) / 3)
    return torch.einsum("bij,bjhw->bihw", matrix, bg).clamp(0, 1)


def _shadow(alpha: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, src_size: tuple[int, int],
            canvas: tuple[int, int], augs: Sequence[Augmentation]) -> torch.Tensor:
    """Per-sample soft drop shadow (B, 1, H, W) in [0, opacity]: the silhouette offset and blurred."""
    opacity = torch.tensor([a.shadow_opacity for a in augs]).view(-1, 1, 1, 1)
    width, height = canvas
    if not bool((opacity > 0).any()):
        return torch.zeros(alpha.shape[0], 1, height, width)
    shift = torch.tensor([a.shadow_offset for a in augs], dtype=torch.float32)
    small = (max(1, height // SHADOW_REDUCTION), max(1, width // SHADOW_REDUCTION))
    silhouette = _warp(alpha, scale, offset + shift, src_size, canvas, small)
    sigma = torch.tensor([a.shadow_sigma for a in augs]) * small[0] / height
    blurred = _gaussian_blur(silhouette, sigma)
    return F.interpolate(blurred, size=(height, width), mode="bilinear", align_corners=False) * opacity


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with one sigma per sample (grouped convolution).

    A sigma near 0 gives an exact identity kernel.
    """
    sigma = sigma.clamp(min=1e-3)
    radius = max(1, int(torch.ceil(3 * sigma.max()).item()))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-taps[None, :] ** 2 / (2 * sigma[:, None] ** 2))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(x.shape[1], dim=0)
    groups = x.shape[0] * x.shape[1]
    y = F.pad(x.reshape(1, groups, *x.shape[2:]), (radius, radius, radius, radius), mode="replicate")
    y = F.conv2d(y, kernel.view(groups, 1, -1, 1), groups=groups)
    y = F.conv2d(y, kernel.view(groups, 1, 1, -1), groups=groups)
    return y.reshape(x.shape)
