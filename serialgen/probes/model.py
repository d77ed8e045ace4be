"""The probes as one object, saved to and loaded from one folder (the only loader).

Folder layout (``<lake>/_checkpoints/probes/`` unless ``probes.checkpoint_dir`` is set)::

    probes.json               format, input size, nets' configs, vocabulary, held-out validation
    identity.safetensors      IdentityEmbedder weights
    attributes.safetensors    AttributeClassifier weights
    README.md                 what the probes measure and how well (written from probes.json)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from serialgen.probes.inputs import attribute_input, identity_input
from serialgen.probes.nets import AttributeClassifier, IdentityEmbedder
from serialgen.synthetic.vocabulary import ATTRIBUTES

CONFIG_FILE, IDENTITY_FILE, ATTRIBUTES_FILE = "probes.json", "identity.safetensors", "attributes.safetensors"
FORMAT = "serialgen-probes/1"


class Probes:
    """An identity embedder and attribute classifiers: measuring instruments, never a model's encoder."""

    def __init__(self, identity: IdentityEmbedder, attributes: AttributeClassifier, config: dict[str, Any],
                 version: str = "unsaved") -> None:
        self.identity, self.attributes = identity.eval(), attributes.eval()
        self.config, self.version = config, version
        self.size = (int(config["height"]), int(config["width"]))
        self.batch_size = 64

    @property
    def validation(self) -> dict[str, Any]:
        return self.config.get("validation", {})

    @property
    def label(self) -> str:
        return f"serialgen probes@{self.version} (trained on {self.config.get('train_characters', '?')} synthetic characters)"

    @torch.no_grad()
    def embed_prepared(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] float (N, 3, H, W) identity inputs -> (N, D) unit-norm embeddings."""
        x = x.float() / 255 if x.dtype == torch.uint8 else x
        out = [self.identity(x[i:i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
        return torch.cat(out) if out else torch.empty(0, self.config["embedding_dim"])

    @torch.no_grad()
    def classify_prepared(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 or float (N, 3, H, W) attribute inputs -> {attribute: (N, classes) probabilities}."""
        x = x.float() / 255 if x.dtype == torch.uint8 else x
        parts = [self.attributes(x[i:i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
        return {name: torch.cat([p[name] for p in parts]).softmax(1) for name in ATTRIBUTES}

    def embed(self, images: Sequence[np.ndarray], foregrounds: Sequence[np.ndarray]) -> torch.Tensor:
        """Images (HxWx3 uint8) with their figure masks (HxW uint8, 255 = figure) -> (N, D) unit embeddings."""
        if not len(images):
            return torch.empty(0, self.config["embedding_dim"])
        return self.embed_prepared(torch.stack([identity_input(im, fg, self.size)
                                                for im, fg in zip(images, foregrounds)]))

    def classify(self, images: Sequence[np.ndarray]) -> list[dict[str, str]]:
        """Each image's most likely label per attribute."""
        if not len(images):
            return []
        probs = self.classify_prepared(torch.stack([attribute_input(im, self.size) for im in images]))
        best = {name: p.argmax(1).tolist() for name, p in probs.items()}
        return [{name: ATTRIBUTES[name][best[name][i]] for name in ATTRIBUTES} for i in range(len(images))]

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.identity.state_dict().items()}, str(folder / IDENTITY_FILE))
        save_file({k: v.contiguous() for k, v in self.attributes.state_dict().items()}, str(folder / ATTRIBUTES_FILE))
        (folder / CONFIG_FILE).write_text(json.dumps(self.config, indent=1))
        (folder / "README.md").write_text(model_card(self.config))
        self.version = weights_version(folder)
        return folder


def build_probes(config: dict[str, Any]) -> Probes:
    """Untrained nets of ``config`` (the keys :func:`probe_config` writes)."""
    identity = IdentityEmbedder(config["identity_widths"], config["embedding_dim"])
    attributes = AttributeClassifier(config["attribute_widths"], {n: len(v) for n, v in config["vocabulary"].items()})
    return Probes(identity, attributes, config)


def probe_config(cfg: Any) -> dict[str, Any]:
    """The folder's config from ``ProbesSettings``: what rebuilds the nets and reads their outputs."""
    return {"format": FORMAT, "width": cfg.width, "height": cfg.height, "identity_widths": list(cfg.identity_widths),
            "attribute_widths": list(cfg.attribute_widths), "embedding_dim": cfg.embedding_dim,
            "vocabulary": {name: list(labels) for name, labels in ATTRIBUTES.items()}}


def load_probes(folder: str | Path) -> Probes:
    """The probes in ``folder``; FileNotFoundError naming the first missing file and what it is for."""
    folder = Path(folder)
    purpose = "the evaluation probes (written by `serialgen train-probes`, or set probes.checkpoint_dir)"
    for name in (CONFIG_FILE, IDENTITY_FILE, ATTRIBUTES_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"missing {name} in {folder}: {purpose}")
    config = json.loads((folder / CONFIG_FILE).read_text())
    if config.get("format") != FORMAT or {k: tuple(v) for k, v in config["vocabulary"].items()} != ATTRIBUTES:
        raise ValueError(f"{folder / CONFIG_FILE}: format {config.get('format')!r} or vocabulary differs from this "
                         f"version's ({FORMAT}): retrain with `serialgen train-probes`")
    probes = build_probes(config)
    probes.identity.load_state_dict(load_file(str(folder / IDENTITY_FILE)))
    probes.attributes.load_state_dict(load_file(str(folder / ATTRIBUTES_FILE)))
    probes.version = weights_version(folder)
    return probes


def weights_version(folder: Path) -> str:
    """Content hash of the two weight files: a retrain that changes nothing keeps the version."""
    digest = hashlib.sha256()
    for name in (IDENTITY_FILE, ATTRIBUTES_FILE):
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()[:12]


def model_card(config: dict[str, Any]) -> str:
    v = config.get("validation", {})
    lines = ["# serialgen evaluation probes", "",
             "Measuring instruments for the offline profiles (tiny, small): an identity embedder (ID-Sim, AP-ID-Sim,",
             "identity retrieval) and attribute classifiers (prompt accuracy). Trained by `serialgen train-probes` on",
             "synthetic renders, pairs and standards of the train split. Never used as a conditioning encoder of a",
             "trained model (a model could then fit its own ruler).", "",
             f"Input: {config['width']}x{config['height']} RGB; identity on the figure with its background removed,",
             "cropped to the figure's box; attributes on the whole image.", "",
             "## Held-out validation (characters never trained on)", ""]
    for key, value in v.items():
        lines.append(f"- {key}: {json.dumps(value)}")
    return "\n".join(lines) + "\n"
