"""Labelled probe images from the lake (:mod:`serialgen.synthetic.labelled`) as both probes see them.

Pairs come with the estimator-like mask the standardizer is given, so the identity probe learns to live
with a segmenter's errors. The split is the lake's, by character.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from serialgen.compositing.split import split_of
from serialgen.probes.inputs import attribute_input, identity_input, stack_uint8
from serialgen.storage import Lake
from serialgen.synthetic.labelled import labelled_images
from serialgen.synthetic.vocabulary import PROBED


@dataclass
class ProbeImages:
    """N images as both probes see them, with their character, split, source and labels (-1: unknown)."""

    identity: torch.Tensor                  # (N, 3, H, W) uint8, figure on white, framed
    attributes: torch.Tensor                # (N, 3, H, W) uint8, whole image
    character_ids: list[str]
    splits: list[str]
    sources: list[str]                      # render | pair | standard
    labels: dict[str, np.ndarray]           # attribute -> (N,) class index, -1 unknown

    def __len__(self) -> int:
        return len(self.character_ids)

    def subset(self, index: np.ndarray | list[int]) -> ProbeImages:
        index = np.asarray(index, np.int64)
        pick = torch.from_numpy(index)
        return ProbeImages(self.identity[pick], self.attributes[pick], [self.character_ids[i] for i in index],
                           [self.splits[i] for i in index], [self.sources[i] for i in index],
                           {k: v[index] for k, v in self.labels.items()})

    def where(self, split: str) -> ProbeImages:
        return self.subset([i for i, s in enumerate(self.splits) if s == split])

    def label_names(self, attribute: str) -> list[str | None]:
        names = PROBED[attribute]
        return [names[i] if i >= 0 else None for i in self.labels[attribute]]


class _Collector:
    def __init__(self, size: tuple[int, int], test_fraction: float) -> None:
        self.size, self.test_fraction = size, test_fraction
        self.identity: list[torch.Tensor] = []
        self.attributes: list[torch.Tensor] = []
        self.rows: list[tuple[str, str, dict[str, str | None]]] = []

    def add(self, character_id: str, source: str, rgb: np.ndarray, foreground: np.ndarray,
            labels: dict[str, str | None]) -> None:
        self.identity.append(identity_input(rgb, foreground, self.size))
        self.attributes.append(attribute_input(rgb, self.size))
        self.rows.append((character_id, source, labels))

    def images(self) -> ProbeImages:
        labels = {name: np.array([names.index(lab[name]) if lab.get(name) in names else -1
                                  for _, _, lab in self.rows], np.int64) for name, names in PROBED.items()}
        ids = [r[0] for r in self.rows]
        return ProbeImages(stack_uint8(self.identity), stack_uint8(self.attributes), ids,
                           [split_of(c, self.test_fraction) for c in ids], [r[1] for r in self.rows], labels)


def read_probe_images(lake: Lake, size: tuple[int, int], test_fraction: float) -> ProbeImages:
    """Every render, pair and standard of the lake, prepared for both probes; labels are the prompt
    attributes and, for procedural characters, their appearance (:data:`~serialgen.synthetic.vocabulary.PROBED`)."""
    out = _Collector(size, test_fraction)
    for item in labelled_images(lake):
        out.add(item.character_id, item.source, item.rgb, item.foreground, {**item.labels, **(item.looks or {})})
    return out.images()
