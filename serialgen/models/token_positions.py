"""Token positions for reference attention: where on the frame each self-attention token sits.

Reference attention (``serialgen.models.reference_attention``) lets a denoiser token read any
ReferenceNet token, but attention itself has no notion of place: a small UNet trained from scratch only
knows where a token is through what its convolutions learned from the zero-padded border, and must
discover that "the target's head reads the reference's head" before a reference can decide any colour.
A pretrained SD UNet at 64x64 latents brings that knowledge with it; at 8x12 tokens from scratch it is
slow and seed-dependent to learn. This module adds, in both UNets' ``attn1`` inputs, a learned
projection of fixed Fourier features of each token's normalised (x, y) centre, one projection per
layer shared by the ReferenceNet and the denoiser, so equal places give equal offsets on both sides.
"""

from __future__ import annotations

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


def fourier_features(height: int, width: int, frequencies: int) -> torch.Tensor:
    """(height * width, 4 * frequencies) sin/cos of each token centre's y and x in [-1, 1], row-major
    (the order diffusers flattens a feature map into tokens)."""
    y = (torch.arange(height, dtype=torch.float32) + 0.5) / height * 2 - 1
    x = (torch.arange(width, dtype=torch.float32) + 0.5) / width * 2 - 1
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    scales = math.pi * 2.0 ** torch.arange(frequencies, dtype=torch.float32) / 2
    angles = torch.cat([yy.reshape(-1, 1) * scales, xx.reshape(-1, 1) * scales], 1)
    return torch.cat([angles.sin(), angles.cos()], 1)


class TokenPositions(ModelMixin, ConfigMixin):
    """One linear map per ``attn1`` layer from a token's Fourier position features to the layer's width."""

    @register_to_config
    def __init__(self, layer_channels: tuple[int, ...] = (), frequencies: int = 4) -> None:
        super().__init__()
        self.projections = nn.ModuleList(nn.Linear(4 * frequencies, c) for c in layer_channels)

    def forward(self, index: int, hidden_states: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``hidden_states`` (B, h*w, C) of layer ``index`` on a ``grid`` = (h, w) token map."""
        projection = self.projections[index]
        features = fourier_features(*grid, self.config.frequencies).to(projection.weight.device,
                                                                        projection.weight.dtype)
        return hidden_states + projection(features).to(hidden_states.dtype)
