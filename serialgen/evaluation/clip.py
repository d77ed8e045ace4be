"""An open_clip model loaded from a local folder, embedding images and prompts for CLIP-I / CLIP-T.

The folder holds ``open_clip_config.json`` (``model_cfg`` + ``preprocess_cfg``) and the weights
(``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin``): the layout of laion's ViT-H/14
release and of the tiny random model the tests build (tests/evaluation_models_data.py). Loaded through
``open_clip``'s ``local-dir:`` schema, so nothing is ever downloaded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CONFIG_FILE = "open_clip_config.json"
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth")


class ClipModel:
    """Unit-norm image and text embeddings of one open_clip checkpoint; ``label`` names it in tables."""

    def __init__(self, folder: str | Path, label: str | None = None, batch_size: int = 32) -> None:
        import open_clip

        folder = Path(folder)
        config = check_clip_folder(folder)
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
        self.name = config.get("name") or folder.name
        self.label = label or config.get("label") or f"open_clip {self.name}"
        self.batch_size = batch_size

    @torch.no_grad()
    def embed_images(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """(N, D) unit-norm embeddings of uint8 HxWx3 images."""
        out = []
        for first in range(0, len(images), self.batch_size):
            batch = torch.stack([self.preprocess(Image.fromarray(np.asarray(im)[..., :3]))
                                 for im in images[first:first + self.batch_size]])
            out.append(self.model.encode_image(batch, normalize=True))
        return torch.cat(out) if out else torch.empty(0, 0)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, D) unit-norm embeddings of prompts."""
        out = [self.model.encode_text(self.tokenizer(list(texts[first:first + self.batch_size])), normalize=True)
               for first in range(0, len(texts), self.batch_size)]
        return torch.cat(out) if out else torch.empty(0, 0)


def check_clip_folder(folder: Path) -> dict:
    """The folder's config, or one FileNotFoundError line naming what is missing and what it is for."""
    purpose = "the CLIP model of CLIP-I / CLIP-T (set evaluate.clip_dir)"
    config = folder / CONFIG_FILE
    if not config.is_file():
        raise FileNotFoundError(f"missing {config.name} in {folder}: {purpose}")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise FileNotFoundError(f"missing {WEIGHT_FILES[0]} (or {', '.join(WEIGHT_FILES[1:])}) in {folder}: {purpose}")
    return json.loads(config.read_text())
