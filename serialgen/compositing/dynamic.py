"""On-the-fly pairs (the paper merged backgrounds dynamically during training).

:class:`DynamicPairs` composites inside the training loader with the same :class:`PairComposer`
as the Ray stage: at epoch 0 an item equals the materialised pair of the same ``pair_id``; later
epochs draw fresh backgrounds and augmentations. Lance tables are opened lazily per process.
"""

from __future__ import annotations

import logging
from typing import Any

from torch.utils.data import Dataset

from serialgen.compositing.pairs import RENDER_COLUMNS, PairComposer, Planned
from serialgen.compositing.split import split_of
from serialgen.config import Settings
from serialgen.storage.lake import Lake
from serialgen.storage.torch_reader import PairsDataset, pair_tensors, standard_targets, with_target

log = logging.getLogger(__name__)


class DynamicPairs(Dataset):
    """Every (render, background slot) of the characters in ``split`` ("train", "test" or "all")."""

    def __init__(self, lake: Lake, settings: Settings, split: str = "train",
                 size: tuple[int, int] | None = None) -> None:
        cfg = settings.composite
        renders = lake.dataset("renders")
        if renders is None or not lake.exists("backgrounds"):
            raise FileNotFoundError(f"lake {lake.uri} needs `renders` and `backgrounds`: "
                                    "run `serialgen render` and `serialgen composite --dynamic` first")
        self.lake, self.size, self.epoch = lake, size, 0
        self.versions = {t: lake.version(t) for t in ("renders", "standards", "backgrounds")}
        characters = renders.to_table(columns=["character_id"]).column("character_id").to_pylist()
        keep = [i for i, c in enumerate(characters) if split == "all" or split_of(c, cfg.test_fraction) == split]
        self.items = [(i, k) for i in keep for k in range(cfg.backgrounds_per_render)]
        self.composer = PairComposer(lake, cfg, sorted(k for (k,) in lake.keys("backgrounds")), self.versions)
        self.targets = standard_targets(lake, self.versions["standards"])
        self._renders = None

    def set_epoch(self, epoch: int) -> None:
        """Fresh backgrounds and augmentations per epoch (call before each epoch's loader pass)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return pair_tensors(self.arrays(index), self.size)

    def arrays(self, index: int) -> dict[str, Any]:
        """The pair at ``index`` as arrays; an unusable render is logged and the next one used instead."""
        for step in range(len(self.items)):
            row, k = self.items[(index + step) % len(self.items)]
            arrays = self._compose(row, k)
            if arrays is not None:
                return arrays
        raise RuntimeError("no render in this split can be composited")

    def _compose(self, row: int, k: int) -> dict[str, Any] | None:
        if self._renders is None:  # opened here, in the reading process
            self._renders = self.lake.dataset("renders", self.versions["renders"])
        renders = self._renders.take([row], columns=RENDER_COLUMNS)
        pairs = self.composer.compose(renders, [Planned(0, k)], self.epoch)
        if pairs.errors:
            log.warning("dynamic pairs: skipping %s: %s", pairs.errors[0][0]["pair_id"], pairs.errors[0][1])
            return None
        meta = pairs.meta[0]
        return with_target({**{key: meta[key] for key in ("pair_id", "character_id", "split")},
                            "input_image": pairs.images[0], "background_mask": pairs.background_masks[0],
                            "reference_keypoints": pairs.keypoints[0], "reference_pose_image": pairs.pose_images[0],
                            "true_background_mask": pairs.true_background_masks[0],
                            "true_reference_keypoints": pairs.true_keypoints[0]}, self.targets)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_renders": None}


def pairs_dataset(settings: Settings, split: str = "train", size: tuple[int, int] | None = None) -> Dataset:
    """The training pairs the settings ask for: on the fly (``composite.dynamic``) or the `pairs` table."""
    lake = settings.open_lake()
    if settings.composite.dynamic:
        return DynamicPairs(lake, settings, split, size)
    return PairsDataset(lake, split, size)

