"""The probes' networks: a small conv trunk, an identity embedder and a multi-head attribute classifier.

Small on purpose: they must train in minutes on two CPU cores and only need to see colours, shapes and
silhouettes at the models' own 64x96 scale. Configs are plain dicts so a folder's ``probes.json``
rebuilds them exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F


def _conv(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class ConvTrunk(nn.Module):
    """Stem + one strided double-conv stage per width; output: mean- and max-pooled features concatenated."""

    def __init__(self, widths: Sequence[int]) -> None:
        super().__init__()
        layers, channels = _conv(3, widths[0], 2), widths[0]  # stride-2 stem: colours and shapes need no full-res features
        for width in widths:
            layers += _conv(channels, width, 2) + _conv(width, width, 1)
            channels = width
        self.features = nn.Sequential(*layers)
        self.out_features = 2 * channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, out_features)."""
        h = self.features(x * 2 - 1)
        return torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1)


class IdentityEmbedder(nn.Module):
    """Background-removed, figure-framed image -> unit-norm identity embedding (cosine = ID-Sim)."""

    def __init__(self, widths: Sequence[int], dim: int) -> None:
        super().__init__()
        self.trunk = ConvTrunk(widths)
        self.head = nn.Sequential(nn.Dropout(0.1), nn.Linear(self.trunk.out_features, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.trunk(x)), dim=1)


class AttributeClassifier(nn.Module):
    """Whole image -> one logit vector per attribute (framing, view, background, action)."""

    def __init__(self, widths: Sequence[int], classes: Mapping[str, int]) -> None:
        super().__init__()
        self.trunk = ConvTrunk(widths)
        self.heads = nn.ModuleDict({name: nn.Linear(self.trunk.out_features, n) for name, n in classes.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.trunk(x)
        return {name: head(features) for name, head in self.heads.items()}


class CosineClassifier(nn.Module):
    """Training-only head of the identity embedder: scaled cosine to one learned centre per training
    character, with an additive margin (CosFace), so embeddings of one character gather on a sphere."""

    def __init__(self, dim: int, classes: int, scale: float = 16.0, margin: float = 0.2) -> None:
        super().__init__()
        self.centres = nn.Parameter(torch.randn(classes, dim) * 0.01)
        self.scale, self.margin = scale, margin

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cosine = embeddings @ F.normalize(self.centres, dim=1).T
        cosine = cosine - self.margin * F.one_hot(labels, cosine.shape[1])
        return F.cross_entropy(self.scale * cosine, labels)
