"""Reference framing: crop the reference to its figure before the ReferenceNet reads it.

In a wide shot a full figure covers a few of a small ReferenceNet's tokens (at patch 8 and 64x96,
about 2 x 5 of 8 x 12), each mixing figure and background. Cropped to the box of its foreground
(plus a margin, at the model's aspect ratio, zoomed at most ``max_zoom`` times) the figure covers
most of them. The box comes from the background mask the model is given anyway (FBDM's input), so
training and inference frame alike; the reference pose and the mask are cropped with the image.
Close-ups, whose figure already fills the frame, stay as they are.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def figure_boxes(background_mask: torch.Tensor, margin: float = 0.1, max_zoom: float = 4.0) -> torch.Tensor:
    """(B, 1, H, W) mask (1 = background) -> affine maps (B, 2, 3) from the framed image to the input.

    The box is the foreground's bounding box grown by ``margin`` of its size on each side, widened or
    heightened to the frame's aspect ratio, never smaller than the frame / ``max_zoom``; a mask
    without foreground gives the identity.
    """
    batch, _, height, width = background_mask.shape
    foreground = background_mask[:, 0] < 0.5
    rows, cols = foreground.any(2), foreground.any(1)                  # (B, H), (B, W)
    top, bottom = _first(rows), height - _first(rows.flip(1))
    left, right = _first(cols), width - _first(cols.flip(1))
    box_h = ((bottom - top) * (1 + 2 * margin)).float()
    box_w = ((right - left) * (1 + 2 * margin)).float()
    box_h = torch.maximum(torch.maximum(box_h, box_w * height / width), box_h.new_tensor(height / max_zoom))
    scale = box_h / height                                             # the box has the frame's aspect
    theta = background_mask.new_zeros(batch, 2, 3, dtype=torch.float32)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, 0, 2] = (left + right).float() / width - 1                  # box centre in [-1, 1]
    theta[:, 1, 2] = (top + bottom).float() / height - 1
    empty = ~rows.any(1)
    theta[empty] = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], device=theta.device)
    return theta


def frame_reference(reference: torch.Tensor, background_mask: torch.Tensor, reference_pose: torch.Tensor,
                    margin: float = 0.1, max_zoom: float = 4.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Crop reference (B, 3, H, W), mask (B, 1, H, W) and pose (B, 3, H, W) to each figure's box.

    Outside the input the image repeats its border, the mask is background and the pose is empty; the
    mask comes back soft at the figure's edge (FBDM averages it per token anyway).
    """
    theta = figure_boxes(background_mask, margin, max_zoom)
    grid = F.affine_grid(theta.to(reference.dtype), list(reference.shape), align_corners=False)
    sample = lambda x, **kw: F.grid_sample(x, grid.to(x.dtype), align_corners=False, **kw)  # noqa: E731
    image = sample(reference, padding_mode="border")
    mask = 1 - sample(1 - background_mask)
    pose = sample(reference_pose)
    return image, mask, pose


def _first(flags: torch.Tensor) -> torch.Tensor:
    """Index of the first True along dim 1 (0 when none)."""
    return flags.to(torch.uint8).argmax(1)
