"""FBDM, the Foreground-Background Distinction Module (paper section 3.3, eq. 3).

Per ReferenceNet self-attention layer two learnable tokens, v_b and v_f, are added to the
background and foreground tokens of the layer's input by the background mask resized to the
layer's resolution: f~ = (f + v_b) m' + (f + v_f) (1 - m') = f + v_b m' + v_f (1 - m').
The tokens start at zero, so a pretrained ReferenceNet starts unchanged; a ReferenceNet trained from
scratch has nothing to protect, and its tokens start at the scale of the normalised tokens they are added
to (``init_std`` 1), so keys tell foreground from background from the first step.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class ForegroundBackgroundTokens(ModelMixin, ConfigMixin):
    """One (background, foreground) token pair per layer; ``layer_channels`` gives their widths."""

    @register_to_config
    def __init__(self, layer_channels: tuple[int, ...] = (), init_std: float = 0.0) -> None:
        super().__init__()
        self.tokens = nn.ParameterList([nn.Parameter(torch.randn(2, c) * init_std if init_std else torch.zeros(2, c))
                                        for c in layer_channels])

    def forward(self, index: int, hidden_states: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
        """``hidden_states`` (B, N, C); ``background`` (B, N, 1) in [0, 1], 1 = background."""
        v_b, v_f = self.tokens[index].to(hidden_states.dtype)
        background = background.to(hidden_states.dtype)
        return hidden_states + background * v_b + (1 - background) * v_f
