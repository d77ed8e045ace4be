"""Captioned synthetic images and reference pairs, held in memory as uint8 tensors and token ids.

The base model learns from every train-split render, pair and standard, captioned from its metadata
(:func:`serialgen.synthetic.vocabulary.caption`; part of them also name the character's hair and clothes); the personalizer's synthetic modes pair each of those
targets with a reference of the same character (:mod:`serialgen.training.synthetic_pairs`). At the offline
profiles' sizes (64x96) the whole train split is ~150 MB, so reading it once beats decoding PNGs per step.
References are encoded once by the frozen image encoder: items carry their embeddings, not pixels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from serialgen.synthetic.labelled import LabelledImage
from serialgen.synthetic.vocabulary import caption
from serialgen.training.personalizer_data import cover_crop


@dataclass
class CaptionedImage:
    """One synthetic image at the model's size, its caption and where it came from."""

    character_id: str
    key: str
    source: str
    labels: dict[str, str | None]
    caption: str
    pixels: torch.Tensor                 # (3, H, W) uint8
    original: tuple[int, int]            # SDXL micro-conditioning "original size": the model's (H, W), see captioned()
    looks: dict[str, str] | None = None  # the character's appearance in words (procedural characters)

    def described(self) -> CaptionedImage:
        """This image captioned with the character's appearance (unchanged when it is not known)."""
        return replace(self, caption=caption(self.labels, looks=self.looks)) if self.looks else self

    def rgb(self) -> np.ndarray:
        """The pixels as an HxWx3 uint8 array (a view)."""
        return self.pixels.permute(1, 2, 0).numpy()


def captioned(items: Iterable[LabelledImage], size: tuple[int, int], appearance_share: float = 0.0,
              ) -> list[CaptionedImage]:
    """``items`` resized to cover ``size`` (H, W) and centre-cropped, with captions from their labels; the
    captions of ``appearance_share`` of them (chosen by a hash of the key) also describe the character's
    appearance (the base model's captions; prompts and the adapter's captions never do).

    The micro-conditioning says original size = ``size``, no crop: what generation passes by default
    (renders share one aspect ratio, so the resize crops nothing), so training and inference agree."""
    out = []
    for item in items:
        tensor, _, _ = cover_crop(item.rgb, size)
        pixels = torch.round((tensor + 1) * 127.5).clamp(0, 255).to(torch.uint8)
        described = item.looks is not None and _unit(item.key) < appearance_share
        out.append(CaptionedImage(item.character_id, item.key, item.source, dict(item.labels),
                                  caption(item.labels, looks=item.looks if described else None), pixels, tuple(size),
                                  item.looks))
    return out


def _unit(key: str) -> float:
    """A stable number in [0, 1) from ``key``."""
    return int(hashlib.sha256(f"appearance:{key}".encode()).hexdigest()[:8], 16) / 2 ** 32


def tokenize(tokenizers: Sequence, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Both tokenizers' ids, padded to their max length: (N, L) each."""
    return tuple(tokenizer(list(texts), padding="max_length", max_length=tokenizer.model_max_length,
                           truncation=True, return_tensors="pt").input_ids for tokenizer in tokenizers)


class CaptionedImages(Dataset):
    """Targets with their captions; with ``reference_embeds`` and ``reference_of`` also the embedding of
    each target's reference (row ``reference_of[i]``), for adapter training.

    Items: ``pixel_values`` ([-1, 1]), ``input_ids`` / ``input_ids_2``, ``time_ids`` (original H, W, crop
    0, 0, target H, W) and, with references, ``image_embeds``.
    """

    def __init__(self, images: Sequence[CaptionedImage], tokenizers: Sequence,
                 reference_embeds: torch.Tensor | None = None, reference_of: Sequence[int] | None = None) -> None:
        if (reference_embeds is None) != (reference_of is None):
            raise ValueError("reference_embeds and reference_of come together")
        if reference_of is not None and len(reference_of) != len(images):
            raise ValueError(f"{len(reference_of)} references for {len(images)} targets")
        self.pixels = torch.stack([i.pixels for i in images]) if images else torch.empty(0, 3, 1, 1, dtype=torch.uint8)
        self.input_ids, self.input_ids_2 = tokenize(tokenizers, [i.caption for i in images])
        height, width = self.pixels.shape[-2:]
        self.time_ids = torch.tensor([[*i.original, 0, 0, height, width] for i in images], dtype=torch.float32)
        self.reference_embeds = reference_embeds
        self.reference_of = torch.as_tensor(np.asarray(reference_of, np.int64)) if reference_of is not None else None

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = {"pair_id": index, "pixel_values": self.pixels[index].float() / 127.5 - 1,
                "input_ids": self.input_ids[index], "input_ids_2": self.input_ids_2[index],
                "time_ids": self.time_ids[index]}
        if self.reference_of is not None:
            item["image_embeds"] = self.reference_embeds[self.reference_of[index]]
        return item


def with_references(images: Sequence[CaptionedImage], targets: Sequence[int], references: Sequence[int],
                    tokenizers: Sequence, encode: Callable[[list[np.ndarray]], torch.Tensor],
                    shown: Callable[[int], np.ndarray] | None = None) -> CaptionedImages:
    """Targets ``images[t]``, each with the embedding of its reference ``images[r]`` (``references`` pairs with
    ``targets``); every distinct reference is encoded once, by ``encode`` on what ``shown(r)`` returns (default
    the reference's own pixels; two-stage: its standardized version)."""
    unique = sorted(set(references))
    embeds = encode([shown(r) if shown is not None else images[r].rgb() for r in unique])
    position = {r: k for k, r in enumerate(unique)}
    return CaptionedImages([images[t] for t in targets], tokenizers, embeds, [position[r] for r in references])
