"""Labelled probe images from the lake: every render, composited pair and standard view, with the
character it shows and what its metadata says (framing, view, background kind, action).

Renders come on white (background ``plain``), pairs over their procedural backgrounds with the
estimator-like mask the standardizer is given (so the identity probe learns to live with a segmenter's
errors), standards in the A-pose (action ``standing``). The split is the lake's, by character.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from serialgen.compositing.split import split_of
from serialgen.evaluation.metrics import remove_background
from serialgen.probes.inputs import attribute_input, identity_input, stack_uint8
from serialgen.storage import Lake
from serialgen.storage.images import decode_image, decode_mask
from serialgen.synthetic.vocabulary import ATTRIBUTES, action_label, background_label, framing_label, view_label


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
        names = ATTRIBUTES[attribute]
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
                                  for _, _, lab in self.rows], np.int64) for name, names in ATTRIBUTES.items()}
        ids = [r[0] for r in self.rows]
        return ProbeImages(stack_uint8(self.identity), stack_uint8(self.attributes), ids,
                           [split_of(c, self.test_fraction) for c in ids], [r[1] for r in self.rows], labels)


def read_probe_images(lake: Lake, size: tuple[int, int], test_fraction: float) -> ProbeImages:
    """Every render, pair and standard of the lake, prepared for both probes."""
    motion_of_pose = _motion_names(lake)
    renders: dict[tuple[str, str, int], dict[str, Any]] = {}
    out = _Collector(size, test_fraction)
    for row in lake.read("renders", columns=["character_id", "pose_id", "view_id", "rgba", "framing",
                                             "camera"]).to_pylist():
        rgba = decode_image(row["rgba"], "RGBA")
        labels = {"framing": framing_label(row["framing"]), "view": view_label(row["camera"]),
                  "background": "plain", "action": action_label(motion_of_pose.get(row["pose_id"]))}
        renders[(row["character_id"], row["pose_id"], row["view_id"])] = labels
        out.add(row["character_id"], "render", remove_background(rgba, lambda im: im[..., 3]), rgba[..., 3], labels)
    kinds = {r["background_id"]: background_label(r["source_uri"])
             for r in lake.read("backgrounds", columns=["background_id", "source_uri"]).to_pylist()}
    for row in lake.read("pairs", columns=["character_id", "pose_id", "view_id", "background_id", "input_image",
                                           "background_mask", "augmentation"]).to_pylist():
        render = renders.get((row["character_id"], row["pose_id"], row["view_id"]), {})
        cut = json.loads(row["augmentation"] or "{}").get("cut_side")
        labels = {**render, "framing": framing_label(render.get("framing"), cut),
                  "background": kinds.get(row["background_id"])}
        out.add(row["character_id"], "pair", decode_image(row["input_image"], "RGB"),
                255 - decode_mask(row["background_mask"]), labels)
    for row in lake.read("standards", columns=["character_id", "image", "mask"]).to_pylist():
        labels = {"framing": "full", "view": "front", "background": "plain", "action": "standing"}
        out.add(row["character_id"], "standard", decode_image(row["image"], "RGB"), decode_mask(row["mask"]), labels)
    return out.images()


def _motion_names(lake: Lake) -> dict[str, str]:
    names = {r["motion_id"]: r["name"] for r in lake.read("motions", columns=["motion_id", "name"]).to_pylist()}
    return {r["pose_id"]: names.get(r["motion_id"]) for r in lake.read("poses", columns=["pose_id", "motion_id"]).to_pylist()}
