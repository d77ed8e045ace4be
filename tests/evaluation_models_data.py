"""Test data: tiny random CLIP and ArcFace files in the real models' formats, so the loaders real weights go
through (serialgen.evaluation.clip / face) are tested offline. Never used by the product: a number from
a random network is not a result (the offline profiles measure with serialgen.probes).

* a tiny open_clip ViT registered with ``open_clip.add_model_config`` and saved as a ``local-dir:``
  folder (``open_clip_config.json`` + ``open_clip_model.safetensors``), text side on open_clip's
  shipped BPE vocabulary, loaded back by :class:`~serialgen.evaluation.clip.ClipModel` like ViT-H/14;
* a tiny ArcFace-convention face embedder (1x3x112x112 -> 1x512) exported to ONNX, loaded by
  :class:`~serialgen.evaluation.face.FaceEmbedder` like insightface's ``w600k_r50.onnx``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from serialgen.evaluation.clip import CONFIG_FILE, WEIGHT_FILES
from serialgen.evaluation.face import FACE_SIZE

TINY_LABEL = "tiny random CLIP / face model — numbers not comparable to the paper"
TINY_CLIP_NAME = "serialgen-tiny-clip"
TINY_CLIP_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
#: The OpenAI CLIP normalisation laion's ViT-H/14 uses.
PREPROCESS = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
              "interpolation": "bicubic", "resize_mode": "shortest"}


def build_tiny_clip(folder: str | Path, seed: int = 0) -> Path:
    """Write a random tiny open_clip model to ``folder`` (a ``local-dir:`` checkpoint folder)."""
    import open_clip

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as configs:
        (Path(configs) / f"{TINY_CLIP_NAME}.json").write_text(json.dumps(TINY_CLIP_CONFIG))
        open_clip.add_model_config(configs)
        torch.manual_seed(seed)
        model = open_clip.create_model(TINY_CLIP_NAME, pretrained=None)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / WEIGHT_FILES[0]))
    (folder / CONFIG_FILE).write_text(json.dumps({
        "name": TINY_CLIP_NAME, "label": f"{TINY_CLIP_NAME} ({TINY_LABEL})",
        "model_cfg": TINY_CLIP_CONFIG, "preprocess_cfg": PREPROCESS}, indent=1))
    return folder


class TinyArcFace(nn.Module):
    """ArcFace's shape in miniature: strided conv stages, then flatten -> linear -> BatchNorm1d to 512."""

    def __init__(self, dim: int = 512) -> None:
        super().__init__()
        stages, channels = [], 3
        for width in (16, 32, 64):
            stages += [nn.Conv2d(channels, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.PReLU(width)]
            channels = width
        self.features = nn.Sequential(*stages, nn.AdaptiveAvgPool2d(7))
        self.embedding = nn.Sequential(nn.Flatten(), nn.Linear(channels * 49, dim), nn.BatchNorm1d(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(self.features(x))


def build_tiny_face_model(path: str | Path, seed: int = 0) -> Path:
    """Export a random :class:`TinyArcFace` to ONNX at ``path`` (input ``input.1`` Nx3x112x112, output 512)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = TinyArcFace().eval()
    torch.onnx.export(model, torch.zeros(1, 3, FACE_SIZE, FACE_SIZE), str(path), input_names=["input.1"],
                      output_names=["embedding"], dynamic_axes={"input.1": {0: "batch"}, "embedding": {0: "batch"}},
                      dynamo=False)
    return path
