"""Small torch nets trained by ``train-preprocessors`` and exported to ONNX in the real models' conventions.

* :class:`TinySegmenter`: U2-Net's interface (1x3x320x320 normalised in, 1x1x320x320 in [0, 1] out).
* :class:`TinyDetector`: YOLOX's interface (raw 0..255 pixels in; per anchor of strides 8/16/32:
  centre offset, log size, sigmoid objectness, sigmoid person score).
* :class:`TinySimCC`: RTMPose/DWPose's interface (normalised crop in; ``simcc_x`` Kx2W and
  ``simcc_y`` Kx2H out, K = 133, sigmoid so the peak is the score).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from serialgen.preprocessing.pose import WHOLEBODY_KEYPOINTS, YOLOX_STRIDES


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.SiLU())


class TinySegmenter(nn.Module):
    """Average-pooled to 1/4 (silhouettes need no fine texture), encoder to 1/16, decoder with one skip."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.down1 = nn.Sequential(nn.AvgPool2d(4), _conv(3, width), _conv(width, width, 2))   # 1/8
        self.down2 = nn.Sequential(_conv(width, 2 * width, 2), _conv(2 * width, 2 * width))   # 1/16
        self.up = _conv(3 * width, width)
        self.head = nn.Conv2d(width, 1, 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Foreground logits at 1/4 of the input size (the training loss's resolution)."""
        skip = self.down1(x)
        deep = F.interpolate(self.down2(skip), size=skip.shape[-2:], mode="bilinear", align_corners=False)
        out = self.head(self.up(torch.cat([skip, deep], 1)))
        return F.interpolate(out, scale_factor=2.0, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(F.interpolate(self.logits(x), size=x.shape[-2:], mode="bilinear", align_corners=False))


class TinyDetector(nn.Module):
    """A three-level conv backbone with one decoupled-free head per stride, in YOLOX's output layout."""

    def __init__(self, width: int = 16, classes: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv(3, width, 2), _conv(width, width, 2), _conv(width, 2 * width, 2))  # /8
        self.level16 = _conv(2 * width, 2 * width, 2)
        self.level32 = _conv(2 * width, 2 * width, 2)
        self.heads = nn.ModuleList(nn.Conv2d(2 * width, 5 + classes, 1) for _ in YOLOX_STRIDES)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, 5 + C) before the sigmoids: the training target's space."""
        f8 = self.stem(x / 255.0)
        f16 = self.level16(f8)
        f32 = self.level32(f16)
        return torch.cat([h(f).flatten(2).transpose(1, 2) for h, f in zip(self.heads, (f8, f16, f32))], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = self.raw(x)
        return torch.cat([raw[..., :4], torch.sigmoid(raw[..., 4:])], -1)


class TinySimCC(nn.Module):
    """Conv features -> per-keypoint vectors -> SimCC logits along x (2W bins) and y (2H bins)."""

    def __init__(self, size: tuple[int, int], width: int = 32, keypoints: int = WHOLEBODY_KEYPOINTS,
                 hidden: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(_conv(3, width // 2, 2), _conv(width // 2, width, 2), _conv(width, width),
                                      _conv(width, width, 2), nn.Conv2d(width, keypoints, 1))
        cells = (size[0] // 8) * (size[1] // 8)
        self.to_hidden = nn.Linear(cells, hidden)
        self.x_head = nn.Linear(hidden, 2 * size[1])
        self.y_head = nn.Linear(hidden, 2 * size[0])

    def logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.silu(self.to_hidden(self.features(x).flatten(2)))
        return self.x_head(h), self.y_head(h)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sx, sy = self.logits(x)
        return torch.sigmoid(sx), torch.sigmoid(sy)


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, input_name: str,
                output_names: list[str]) -> Path:
    """Export ``model`` (eval mode, fixed input shape like the real files) to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    model.eval()
    with torch.no_grad():
        torch.onnx.export(model, (example,), str(partial), input_names=[input_name], output_names=output_names,
                          opset_version=17, dynamo=False)
    partial.replace(path)
    return path
