"""The light convolutional pose encoder shared by the pose guider and RPIM.

Animate Anyone's pose guider: 3x3 convs with channels 16, 32, 96, 256 (three stride-2 steps, /8,
the VAE's factor) and a final conv to the embedding width; zero-initialised when its output is added
to a pretrained network, so training starts from that network's behaviour.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn import functional as F


class PoseGuider(ModelMixin, ConfigMixin):
    """Pose image (B, 3, H, W) in [0, 1] -> features (B, embedding_channels, H/8, W/8)."""

    @register_to_config
    def __init__(self, conditioning_channels: int = 3, block_out_channels: tuple[int, ...] = (16, 32, 96, 256),
                 embedding_channels: int = 320, zero_init: bool = True) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(conditioning_channels, block_out_channels[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        for c_in, c_out in zip(block_out_channels[:-1], block_out_channels[1:]):
            self.blocks.append(nn.Conv2d(c_in, c_in, 3, padding=1))
            self.blocks.append(nn.Conv2d(c_in, c_out, 3, padding=1, stride=2))
        self.conv_out = nn.Conv2d(block_out_channels[-1], embedding_channels, 3, padding=1)
        if zero_init:
            nn.init.zeros_(self.conv_out.weight)
            nn.init.zeros_(self.conv_out.bias)

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.conv_in(pose))
        for block in self.blocks:
            x = F.silu(block(x))
        return self.conv_out(x)
