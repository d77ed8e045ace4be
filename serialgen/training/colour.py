"""Joint colour augmentation: one random hue rotation applied to a reference and its target together.

A model asked to redraw a character from a reference can lower its loss by drawing the *average*
character's colours (a tinted template) and only slowly learns to read them from the reference. Turning
every colour of a pair by the same random angle around the grey axis makes new characters from the
same drawings (grey, black and white stay as they are, so a white background stays white); the
average colour then tells the model nothing, and only the reference does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

_AXIS = torch.full((3,), 1 / math.sqrt(3))
#: Bands of a figure's height (head and hair, torso, legs): the colours the recoloured template and the colour
#: embedding loss use.
FIGURE_BANDS = 3


def hue_rotation(angle: float) -> torch.Tensor:
    """(3, 3) matrix turning RGB colours by ``angle`` radians around the grey axis (Rodrigues' formula)."""
    k = _AXIS
    cross = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return math.cos(angle) * torch.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * torch.outer(k, k)


def rotate_hues(images: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1], one (3, 3) matrix per image -> the recoloured images, clamped to [-1, 1]."""
    unit = (images.float() + 1) / 2
    turned = torch.einsum("bij,bjhw->bihw", matrices.to(unit.device), unit)
    return (turned.clamp(0, 1) * 2 - 1).to(images.dtype)


def recolour_jointly(images: Sequence[torch.Tensor], share: float, generator: torch.Generator,
                     ) -> list[torch.Tensor]:
    """Each of ``images`` ((B, 3, H, W), [-1, 1], sample i of every tensor one pair) with the same random hue
    rotation for sample i, applied to a ``share`` of the samples (the rest unchanged); draws from ``generator``
    only when ``share`` > 0, so a recipe without it keeps its random stream."""
    if share <= 0:
        return list(images)
    size = images[0].shape[0]
    chosen = torch.rand(size, generator=generator) < share
    angles = torch.rand(size, generator=generator) * 2 * math.pi
    matrices = torch.stack([hue_rotation(float(a)) if c else torch.eye(3) for a, c in zip(angles, chosen)])
    return [rotate_hues(x, matrices) for x in images]


def figure_bands(foreground: torch.Tensor) -> list[torch.Tensor]:
    """``FIGURE_BANDS`` masks splitting the rows of a figure's (H, W) boolean foreground into equal bands, top to
    bottom (all ``foreground`` when it is empty)."""
    rows = foreground.any(1).nonzero()
    if not len(rows):
        return [foreground] * FIGURE_BANDS
    top, bottom = int(rows.min()), int(rows.max()) + 1
    edges = torch.linspace(top, bottom, FIGURE_BANDS + 1).round().long()
    index = torch.arange(foreground.shape[0])[:, None]
    return [foreground & (index >= edges[b]) & (index < edges[b + 1]) for b in range(FIGURE_BANDS)]


def band_colours(image: torch.Tensor, foreground: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean colour of each band of the figure of ``image`` (3, H, W) with its (H, W) boolean foreground:
    (FIGURE_BANDS, 3), zero for an empty band, and (FIGURE_BANDS,) booleans, True where the band has pixels."""
    bands = figure_bands(foreground)
    present = torch.stack([band.any() for band in bands])
    colours = torch.stack([image[:, band].mean(1) if band.any() else image.new_zeros(3) for band in bands])
    return colours, present
