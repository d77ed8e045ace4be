"""Training the probes on labelled synthetic images (metric learning on character id; one cross-entropy
per attribute). Augmentations change what a ruler must ignore (place, scale, mirror, exposure), never
what it measures (no colour shifts: colour is identity)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import torch
from torch.nn import functional as F

from serialgen.config import ProbesSettings
from serialgen.probes.data import ProbeImages
from serialgen.probes.inputs import close_up_theta
from serialgen.probes.model import FIGURE, SCENE
from serialgen.probes.nets import AttributeClassifier, CosineClassifier, IdentityEmbedder
from serialgen.synthetic.vocabulary import APPEARANCE

log = logging.getLogger(__name__)
#: Steps between progress lines (step, loss, samples/s) in the log.
LOG_EVERY = 250


#: Keeps a grid's scale and drops its translation (a plain zoom about the centre).
_NO_OFFSET = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])


def augment(batch: torch.Tensor, generator: torch.Generator, pad_white: bool, close_ups: float = 0.0) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float in [0, 1]: random scale 0.9-1.1, shift +-6 %, mirror, exposure +-10 %; and, for a
    ``close_ups`` share, only the top 20-60 % of the framed figure enlarged to the frame (a synthetic bust or head
    shot of the same character, which the renders hold few of)."""
    x = batch.float() / 255
    b = x.shape[0]
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    scale = 0.9 + 0.2 * rand(b)
    close_up = rand(b) < close_ups
    top = 0.2 + 0.4 * rand(b)
    scale = torch.where(close_up, top, scale)
    flip = torch.where(rand(b) < 0.5, -1.0, 1.0)
    theta = torch.where(close_up[:, None, None], close_up_theta(top), close_up_theta(scale) * _NO_OFFSET)
    theta[:, 0, 0] *= flip
    theta[:, :, 2] += (rand(b, 2) - 0.5) * 0.12 * scale[:, None]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if pad_white:
        x = 1 - F.grid_sample(1 - x, grid, align_corners=False)
    else:
        x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    return (x * (0.9 + 0.2 * rand(b, 1, 1, 1))).clamp(0, 1)


def _fit(parameters: list[torch.nn.Parameter], loss_fn: Callable[[np.ndarray], torch.Tensor], n: int,
         cfg: ProbesSettings, steps: int, name: str) -> dict[str, float]:
    rng = np.random.default_rng(cfg.seed)
    optimizer = torch.optim.AdamW(parameters, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, cfg.learning_rate, total_steps=max(steps, 1),
                                                   pct_start=0.15)
    losses, start = [], time.perf_counter()
    for _ in range(steps):
        loss = loss_fn(rng.integers(0, n, min(cfg.batch_size, n)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if len(losses) % LOG_EVERY == 0:
            log.info("%s probe: step %d/%d, loss %.4f, %.0f samples/s", name, len(losses), steps,
                     np.mean(losses[-LOG_EVERY:]), len(losses) * cfg.batch_size / (time.perf_counter() - start))
    return {"loss_first": round(float(np.mean(losses[:20])), 4), "loss_last": round(float(np.mean(losses[-20:])), 4),
            "steps": steps, "seconds": round(time.perf_counter() - start, 1)}


def train_identity(train: ProbeImages, cfg: ProbesSettings) -> tuple[IdentityEmbedder, dict[str, float]]:
    """CosFace over the training characters: same character close, different characters apart."""
    torch.manual_seed(cfg.seed)
    characters = sorted(set(train.character_ids))
    labels = torch.tensor([characters.index(c) for c in train.character_ids])
    model = IdentityEmbedder(cfg.identity_widths, cfg.embedding_dim)
    head = CosineClassifier(cfg.embedding_dim, len(characters))
    generator = torch.Generator().manual_seed(cfg.seed)
    model.train()

    def loss_fn(index: np.ndarray) -> torch.Tensor:
        pick = torch.from_numpy(index)
        return head(model(augment(train.identity[pick], generator, True, cfg.close_ups)), labels[pick])

    stats = _fit([*model.parameters(), *head.parameters()], loss_fn, len(train), cfg, cfg.identity_steps, "identity")
    return model.eval(), {**stats, "characters": len(characters)}


def train_scene(train: ProbeImages, cfg: ProbesSettings) -> tuple[AttributeClassifier, dict[str, float]]:
    """One cross-entropy per scene attribute (framing, background) on the whole image, each over the images
    whose metadata knows it."""
    return _train_classifier(train.attributes, train, SCENE, cfg, pad_white=False, name="scene")


def train_figure(train: ProbeImages, cfg: ProbesSettings) -> tuple[AttributeClassifier, dict[str, float]]:
    """One cross-entropy per figure attribute (view, action) on the figure on white: read at the probe's full
    size, however small the figure is in its frame, whatever the background."""
    return _train_classifier(train.identity, train, FIGURE, cfg, pad_white=True, name="figure")


def train_appearance(train: ProbeImages, cfg: ProbesSettings) -> tuple[AttributeClassifier, dict[str, float]]:
    """One cross-entropy per appearance attribute (hair, garments, colours) on the figure on white: what a
    standardized image must keep, read where it is, whatever the background."""
    return _train_classifier(train.identity, train, APPEARANCE, cfg, pad_white=True, name="appearance")


def _train_classifier(inputs: torch.Tensor, train: ProbeImages, vocabulary: dict[str, tuple[str, ...]],
                      cfg: ProbesSettings, pad_white: bool, name: str) -> tuple[AttributeClassifier, dict[str, float]]:
    """Labels -1 (unknown) are ignored."""
    torch.manual_seed(cfg.seed + 1)
    model = AttributeClassifier(cfg.attribute_widths, {n: len(labels) for n, labels in vocabulary.items()})
    targets = {n: torch.from_numpy(train.labels[n]) for n in vocabulary}
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    model.train()

    def loss_fn(index: np.ndarray) -> torch.Tensor:
        pick = torch.from_numpy(index)
        logits = model(augment(inputs[pick], generator, pad_white=pad_white))
        losses = [F.cross_entropy(logits[n], targets[n][pick], ignore_index=-1)
                  for n in logits if (targets[n][pick] >= 0).any()]
        return torch.stack(losses).sum()

    stats = _fit(list(model.parameters()), loss_fn, len(train), cfg, cfg.attribute_steps, name)
    return model.eval(), stats
