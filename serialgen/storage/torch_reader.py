"""PyTorch reading of training pairs: the materialised `pairs` table, and the tensor layout both
it and the on-the-fly :class:`serialgen.compositing.dynamic.DynamicPairs` return.

A pair's target is its character's `standards` row, joined here by ``character_id`` (the lake
stores each standard once, not in every pair of the character).

Lance datasets are not fork-safe: a dataset opens its Lance table lazily, inside the process that
reads, and never pickles an open handle; :func:`pairs_loader` uses spawn workers (or none).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from serialgen.storage.images import decode_image, decode_mask
from serialgen.storage.lake import Lake
from serialgen.storage.lookup import LakeLookup

#: The `pairs` columns a training item is built from (the target comes from `standards`).
PAIR_COLUMNS = ["pair_id", "character_id", "split", "input_image", "background_mask", "reference_keypoints",
                "reference_pose_image", "true_background_mask", "true_reference_keypoints"]


def pair_tensors(arrays: dict[str, Any], size: tuple[int, int] | None = None) -> dict[str, Any]:
    """Decoded pair arrays -> the training item (see /work/notes/pairs_api.md).

    ``arrays``: ids (str), ``input_image`` / ``reference_pose_image`` / ``target_image`` /
    ``target_pose_image`` HxWx3 uint8, ``background_mask`` / ``target_background_mask`` HxW bool (True = background),
    keypoints (18, 3). Images -> float32 CHW ([-1, 1] for photos, [0, 1] for pose drawings), mask ->
    float32 1xHxW in {0, 1}; everything at ``size`` (H, W), default the input's size.
    """
    height, width = arrays["input_image"].shape[:2]
    out_hw = size or (height, width)
    item = {k: arrays[k] for k in ("pair_id", "character_id", "split")}
    for name, low in (("input_image", -1.0), ("target_image", -1.0),
                      ("reference_pose_image", 0.0), ("target_pose_image", 0.0)):
        image = torch.tensor(np.asarray(arrays[name])).permute(2, 0, 1).float() / 255
        item[name] = resize_image(image, out_hw) * (1 - low) + low
    for name in ("background_mask", "true_background_mask", "target_background_mask"):
        mask = torch.tensor(np.asarray(arrays[name])).float()[None]
        if tuple(mask.shape[1:]) != tuple(out_hw):
            mask = F.interpolate(mask[None], size=out_hw, mode="nearest")[0]
        item[name] = mask
    for name, image_name in (("reference_keypoints", "input_image"), ("true_reference_keypoints", "input_image"),
                             ("target_keypoints", "target_image")):
        h, w = arrays[image_name].shape[:2]
        kp = torch.tensor(np.asarray(arrays[name], np.float32).reshape(18, 3))
        kp[:, 0] *= out_hw[1] / w
        kp[:, 1] *= out_hw[0] / h
        item[name] = kp
    return item


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, H, W) in [0, 1] -> (C, *size), antialiased: how every pair image reaches a model."""
    if tuple(image.shape[1:]) == tuple(size):
        return image
    return F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)


def decode_pair(row: dict[str, Any]) -> dict[str, Any]:
    """A stored `pairs` row (PNG bytes) -> the input side of the arrays :func:`pair_tensors` takes."""
    arrays = {k: row[k] for k in ("pair_id", "character_id", "split", "reference_keypoints",
                                  "true_reference_keypoints")}
    for name in ("input_image", "reference_pose_image"):
        arrays[name] = decode_image(row[name], "RGB")
    for name in ("background_mask", "true_background_mask"):
        arrays[name] = decode_mask(row[name]) >= 128
    return arrays


def standard_targets(lake: Lake, version: int | None = None, capacity: int = 64) -> LakeLookup:
    """``character_id`` -> the target side of its pairs (``target_image``, ``target_background_mask``,
    ``target_pose_image``, ``target_keypoints``)."""
    return LakeLookup(lake, "standards", "character_id", ["character_id", "image", "mask", "keypoints", "pose_image"],
                      _decode_standard, capacity, version)


def _decode_standard(row: dict[str, Any]) -> dict[str, Any]:
    return {"target_image": decode_image(row["image"], "RGB"), "target_pose_image": decode_image(row["pose_image"], "RGB"),
            "target_background_mask": decode_mask(row["mask"]) < 128,  # `standards.mask` is the foreground
            "target_keypoints": row["keypoints"]}


def with_target(arrays: dict[str, Any], targets: LakeLookup) -> dict[str, Any]:
    """``arrays`` joined with its character's standard; a character without one is an error naming it."""
    found = targets.get([arrays["character_id"]])
    if not found:
        raise KeyError(f"pair {arrays['pair_id']}: no `standards` row for character {arrays['character_id']!r} "
                       f"(table version {targets.version}); rerun `serialgen render`")
    return {**arrays, **found[arrays["character_id"]]}


class PairsDataset(Dataset):
    """The materialised `pairs` table of one split ("train", "test" or "all") with its targets from
    `standards`, both pinned to one version."""

    def __init__(self, lake: Lake, split: str = "train", size: tuple[int, int] | None = None,
                 version: int | None = None) -> None:
        ds = lake.dataset("pairs", version)
        if ds is None:
            raise FileNotFoundError(f"no `pairs` table in lake {lake.uri}: run `serialgen composite` first")
        self.lake, self.size, self.version = lake, size, ds.version
        splits = np.asarray(ds.to_table(columns=["split"]).column("split").to_pylist(), dtype=object)
        self.rows = np.arange(len(splits)) if split == "all" else np.flatnonzero(splits == split)
        self.targets = standard_targets(lake, lake.version("standards"))
        self._ds = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return pair_tensors(self.arrays(index), self.size)

    def arrays(self, index: int) -> dict[str, Any]:
        """The pair at ``index`` as arrays (the input of :func:`pair_tensors`)."""
        if self._ds is None:  # opened here, in the reading process
            self._ds = self.lake.dataset("pairs", self.version)
        row = self._ds.take([int(self.rows[index])], columns=PAIR_COLUMNS).to_pylist()[0]
        return with_target(decode_pair(row), self.targets)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_ds": None}


def pairs_loader(dataset: Dataset, batch_size: int, shuffle: bool = True, num_workers: int = 0,
                 seed: int = 0, **kwargs: Any) -> DataLoader:
    """A DataLoader over pairs; workers (if any) are spawned, never forked (Lance is not fork-safe).

    Workers are not persistent: each pass pickles the dataset afresh, so a
    ``DynamicPairs.set_epoch`` made before the pass reaches the workers.
    """
    generator = torch.Generator().manual_seed(seed)
    extra = {"multiprocessing_context": "spawn"} if num_workers > 0 else {}
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      generator=generator, **extra, **kwargs)
