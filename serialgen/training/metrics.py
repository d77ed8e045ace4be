"""Image metrics with explicit ranges: PSNR and SSIM on image batches (images in [0, data_range]), mask IoU and
keypoint PCK on arrays.

The one implementation the project uses (training validation, the preprocessors' scores and the evaluate
stage's Table 3); PSNR/SSIM on torchmetrics' functional metrics, per image rather than averaged over the batch.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def psnr(prediction: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB of (B, C, H, W) batches; identical images give +inf."""
    return peak_signal_noise_ratio(prediction.float(), target.float(), data_range=data_range,
                                   reduction="none", dim=(1, 2, 3))


def ssim(prediction: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, window: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004: Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03), channel mean.

    The window shrinks (odd) to fit images smaller than 11 pixels.
    """
    size = min(window, *prediction.shape[-2:])
    size -= 1 - size % 2
    return structural_similarity_index_measure(prediction.float(), target.float(), data_range=data_range,
                                               kernel_size=size, sigma=sigma, reduction="none")


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
