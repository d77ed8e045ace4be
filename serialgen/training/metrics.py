"""Image metrics with explicit ranges: PSNR and SSIM on batches, mask IoU and keypoint PCK on arrays."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F


def psnr(prediction: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB of (B, C, H, W) batches; identical images give +inf."""
    mse = (prediction.float() - target.float()).square().flatten(1).mean(1)
    return 10 * torch.log10(data_range ** 2 / mse)


def ssim(prediction: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, window: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004: Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03), channel mean.

    The window shrinks (odd) to fit images smaller than 11 pixels; borders are not padded ("valid").
    """
    x, y = prediction.float(), target.float()
    size = min(window, *x.shape[-2:])
    size -= 1 - size % 2
    coords = torch.arange(size, dtype=torch.float32, device=x.device) - size // 2
    g = torch.exp(-coords.square() / (2 * sigma ** 2))
    g = (g / g.sum())
    kernel = (g[:, None] * g[None, :]).expand(x.shape[1], 1, size, size)
    blur = lambda z: F.conv2d(z, kernel, groups=x.shape[1])  # noqa: E731
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x.square()
    var_y = blur(y * y) - mu_y.square()
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(1)


def mask_iou(prediction: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union of two boolean HxW foreground masks (1.0 when both are empty)."""
    union = np.logical_or(prediction, target).sum()
    return float(np.logical_and(prediction, target).sum() / union) if union else 1.0


def pck(prediction: np.ndarray, target: np.ndarray, size: float, threshold: float = 0.1,
        score_threshold: float = 0.3) -> tuple[int, int]:
    """(correct, counted) keypoints: every target keypoint with visibility > 0 counts; a prediction is correct
    when it scores above ``score_threshold`` and lies within ``threshold * size`` pixels (PCK, size = the
    person box's long side)."""
    visible = target[:, 2] > 0
    close = np.hypot(*(prediction[:, :2] - target[:, :2]).T) <= threshold * size
    return int((visible & close & (prediction[:, 2] > score_threshold)).sum()), int(visible.sum())
