"""What each probe sees, computed one way for training, validation and evaluation.

Identity: the figure with its background removed (white, as CLIP-I removes it), cropped to the box of
its foreground plus a margin, so a wide shot and a close-up of one character reach the embedder at the
same scale. Attributes: the whole image as it is, background and framing included (they are what the
classifier reads).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from serialgen.evaluation.metrics import remove_background
from serialgen.models.framing import figure_boxes

#: Figure-box margin (share of the box per side) and the most a small figure is enlarged.
MARGIN, MAX_ZOOM = 0.1, 8.0


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(image)[..., :3])).permute(2, 0, 1)[None].float() / 255


def identity_input(image: np.ndarray, foreground: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """HxWx3 uint8 + HxW uint8 mask (255 = figure) -> (3, height, width) in [0, 1], figure on white, framed."""
    on_white = _tensor(remove_background(image, lambda _: foreground))
    background = 1 - torch.from_numpy(np.asarray(foreground, np.float32) / 255)[None, None]
    theta = figure_boxes(background, MARGIN, MAX_ZOOM)
    grid = F.affine_grid(theta, [1, 3, *size], align_corners=False)
    return (1 - F.grid_sample(1 - on_white, grid, align_corners=False))[0].clamp(0, 1)


def attribute_input(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """HxWx3 uint8 -> (3, height, width) in [0, 1], resized (antialiased) as a whole."""
    return F.interpolate(_tensor(image), size=size, mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)


def close_up_theta(top: torch.Tensor) -> torch.Tensor:
    """(B,) shares of the frame's height -> (B, 2, 3) affine grids showing the top ``top`` of a framed figure,
    centred and enlarged to the whole frame: a bust or head shot cut from a wider view of the same figure."""
    theta = torch.zeros(len(top), 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = top
    theta[:, 1, 2] = top - 1  # the crop's top edge on the frame's
    return theta


def close_up(figures: torch.Tensor, top: float) -> torch.Tensor:
    """Identity inputs (N, 3, H, W; uint8 or [0, 1]) -> the top ``top`` of each, enlarged, in [0, 1] on white."""
    x = figures.float() / 255 if figures.dtype == torch.uint8 else figures.float()
    grid = F.affine_grid(close_up_theta(torch.full((len(x),), top)), list(x.shape), align_corners=False)
    return 1 - F.grid_sample(1 - x, grid, align_corners=False)


def stack_uint8(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """(3, H, W) floats in [0, 1] -> one (N, 3, H, W) uint8 tensor (a quarter of the memory)."""
    return torch.stack([torch.round(t * 255).to(torch.uint8) for t in tensors]) if tensors else torch.empty(0)
