"""RPIM, the Reference Pose Injection Module (paper section 3.3, eq. 4; supplement section 6).

The reference pose image goes through the pose guider's light conv net (16, 32, 96, 256 -> 320, /8);
per ReferenceNet self-attention layer one more conv maps it to the layer's channel count and
interpolation brings it to the layer's resolution before it is added to the layer's input.
The per-layer conv is 1x1: a 1x1 conv and area interpolation are both linear and commute, so we
interpolate first (cheap) and get exactly the paper's conv-then-interpolate. The per-layer convs
start at zero, so a pretrained ReferenceNet starts unchanged (``zero_init``); from scratch they keep
PyTorch's default initialisation, so the pose reaches the reference tokens from the first step.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from serialgen.models.pose_guider import PoseGuider


class ReferencePoseInjection(ModelMixin, ConfigMixin):
    """Pose encoder plus one zero-initialised 1x1 projection per ReferenceNet self-attention layer."""

    @register_to_config
    def __init__(self, layer_channels: tuple[int, ...] = (), pose_channels: tuple[int, ...] = (16, 32, 96, 256),
                 feature_channels: int = 320, zero_init: bool = True) -> None:
        super().__init__()
        self.encoder = PoseGuider(3, pose_channels, feature_channels, zero_init=False)
        self.projections = nn.ModuleList(nn.Conv2d(feature_channels, c, 1) for c in layer_channels)
        for proj in self.projections if zero_init else ():
            nn.init.zeros_(proj.weight)
            nn.init.zeros_(proj.bias)

    def encode(self, pose: torch.Tensor) -> torch.Tensor:
        """Reference pose image (B, 3, H, W) in [0, 1] -> features (B, feature_channels, H/8, W/8)."""
        return self.encoder(pose)

    def forward(self, index: int, hidden_states: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """``features`` already at the layer's resolution (B, F, h, w); ``hidden_states`` (B, h*w, C)."""
        pose = self.projections[index](features.to(self.projections[index].weight.dtype))
        return hidden_states + pose.flatten(2).transpose(1, 2).to(hidden_states.dtype)
