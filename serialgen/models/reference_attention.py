"""Reference attention through custom ``attn1`` processors (no patching of diffusers' blocks).

The ReferenceNet's self-attention layers *write* their input tokens into a :class:`ReferenceBank`;
the denoising UNet's self-attention layers *read* them: their keys and values are the concatenation
of their own tokens and the stored reference tokens. Both UNets share one config, so the i-th
``attn1`` of one matches the i-th of the other. With an empty bank a read layer is plain
self-attention (the stock processor), so the denoiser equals a plain UNet.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

#: ``inject(layer_index, tokens) -> tokens``: FBDM/RPIM applied to a ReferenceNet layer's input.
Injector = Callable[[int, torch.Tensor], torch.Tensor]


class ReferenceBank:
    """Reference tokens per self-attention layer, shared by both UNets' processors.

    ``keep`` (bool, one per denoiser sample) masks the reference tokens out for the samples whose
    reference is dropped (classifier-free guidance); None keeps them for all samples. ``position``, when
    set, adds each token's place to the input of every layer on both sides
    (:mod:`serialgen.models.token_positions`).
    """

    def __init__(self) -> None:
        self.features: dict[int, torch.Tensor] = {}
        self.keep: torch.Tensor | None = None
        self.inject: Injector | None = None
        self.position: Injector | None = None

    def clear(self) -> None:
        self.features.clear()
        self.keep = None


class _BankProcessor:
    """A self-attention processor bound to one layer's slot in the shared :class:`ReferenceBank`."""

    def __init__(self, bank: ReferenceBank, index: int) -> None:
        self.bank, self.index = bank, index
        self._attend = AttnProcessor2_0()


class ReferenceWriteProcessor(_BankProcessor):
    """ReferenceNet ``attn1``: inject FBDM/RPIM (and positions) into the input, store it, attend as usual."""

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, **kwargs) -> torch.Tensor:
        if self.bank.inject is not None:
            hidden_states = self.bank.inject(self.index, hidden_states)
        if self.bank.position is not None:
            hidden_states = self.bank.position(self.index, hidden_states)
        self.bank.features[self.index] = hidden_states
        return self._attend(attn, hidden_states, None, attention_mask, temb)


class ReferenceReadProcessor(_BankProcessor):
    """Denoiser ``attn1``: keys/values = [own tokens, reference tokens] when the bank holds them."""

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, **kwargs) -> torch.Tensor:
        if self.bank.position is not None:
            hidden_states = self.bank.position(self.index, hidden_states)
        reference = self.bank.features.get(self.index)
        if reference is None:
            return self._attend(attn, hidden_states, None, attention_mask, temb)
        batch, tokens = hidden_states.shape[:2]
        if reference.shape[0] != batch:  # one reference pass serves [uncond, cond] (guidance)
            reference = reference.repeat(batch // reference.shape[0], 1, 1)
        context = torch.cat([hidden_states, reference.to(hidden_states.dtype)], dim=1)
        mask = None
        if self.bank.keep is not None:
            blocked = torch.zeros(batch, 1, context.shape[1], dtype=hidden_states.dtype, device=hidden_states.device)
            blocked[:, :, tokens:] = torch.where(self.bank.keep.view(batch, 1, 1), 0.0, float("-inf"))
            mask = blocked
        return self._attend(attn, hidden_states, context, mask, temb)


def self_attention_layers(unet: UNet2DConditionModel) -> list[tuple[str, Attention]]:
    """The UNet's ``attn1`` modules in execution-independent (registration) order."""
    return [(name, module) for name, module in unet.named_modules()
            if isinstance(module, Attention) and name.endswith(".attn1")]


def install_reference_attention(reference_unet: UNet2DConditionModel, denoising_unet: UNet2DConditionModel,
                                bank: ReferenceBank) -> list[int]:
    """Put write processors in the ReferenceNet and read processors in the denoiser.

    Returns each layer's channel count (the width of the tokens FBDM/RPIM add to).
    """
    writers = self_attention_layers(reference_unet)
    readers = self_attention_layers(denoising_unet)
    if [n for n, _ in writers] != [n for n, _ in readers]:
        raise ValueError("ReferenceNet and denoising UNet must share one config (their attn1 layers differ)")
    for index, ((_, w), (_, r)) in enumerate(zip(writers, readers)):
        w.set_processor(ReferenceWriteProcessor(bank, index))
        r.set_processor(ReferenceReadProcessor(bank, index))
    return self_attention_channels(reference_unet)


def self_attention_channels(unet: UNet2DConditionModel) -> list[int]:
    """The token width of each ``attn1`` layer (what FBDM and RPIM add to)."""
    return [attn.to_q.in_features for _, attn in self_attention_layers(unet)]
