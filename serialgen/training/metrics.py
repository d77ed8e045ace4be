"""PSNR and SSIM on image batches with an explicit data range (images in [0, data_range]).

The one implementation the project uses (training validation and the evaluate stage's Table 3),
on torchmetrics' functional metrics, per image rather than averaged over the batch.
"""

from __future__ import annotations

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
