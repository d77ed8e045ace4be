"""Personalizer training pairs: built per mode from the lake's tables, and read as tensors.

Modes (the paper's Table 2):

- ``two_stage`` (the method): reference = the standardized image (``standardized``, one standardizer
  version), target = the real image it came from (``real_images``);
- ``paired_one_stage``: pairs the two-stage model made itself: reference = the real image (not
  standardized), target = a ``generations`` row the two-stage adapter produced from it, caption = its prompt;
- ``unpaired``: reference = target = the real image.

Captions come from ``real_images.caption``; when absent, :data:`CAPTION_TEMPLATES` by domain.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from serialgen.models.ip_adapter import reference_pixels
from serialgen.storage.images import decode_image
from serialgen.storage.lake import Lake

MODES = ("two_stage", "paired_one_stage", "unpaired")
#: The caption of a real image that has none, by its domain (None: unknown).
CAPTION_TEMPLATES = {"anime": "an anime character, full body", "real": "a photo of a person, full body",
                     None: "a character, full body"}
_REAL = ["image_id", "image", "caption", "domain", "split"]


def caption_of(row: dict[str, Any]) -> str:
    caption = (row.get("caption") or "").strip()
    return caption or CAPTION_TEMPLATES.get(row.get("domain"), CAPTION_TEMPLATES[None])


def build_pairs(lake: Lake, mode: str, standardizer_version: str | None = None) -> list[dict[str, Any]]:
    """The `personalizer_pairs` rows of ``mode`` from the current tables (a FileNotFoundError saying
    which stage to run when the mode's inputs are missing)."""
    if mode not in MODES:
        raise ValueError(f"unknown personalizer mode {mode!r}; choose one of: {', '.join(MODES)}")
    real = {r["image_id"]: r for r in lake.read("real_images", columns=_REAL).to_pylist()}
    if not real:
        raise FileNotFoundError(f"no `real_images` in lake {lake.uri}: run `serialgen ingest-real` first")
    if mode == "unpaired":
        return [_pair(mode, r["image_id"], "real_images", r["image"], r["image_id"], "real_images", r["image"],
                      caption_of(r), None, r["split"]) for r in real.values()]
    if mode == "two_stage":
        version = standardizer_version or newest_version(lake, "standardized", "model_version")
        if version is None:
            raise FileNotFoundError(f"no `standardized` rows in lake {lake.uri}: run `serialgen standardize` first")
        rows = lake.read("standardized", columns=["image_id", "model_version", "image"],
                         filter=f"model_version = '{_quote(version)}'").to_pylist()
        return [_pair(mode, s["image_id"], "standardized", s["image"], s["image_id"], "real_images",
                      real[s["image_id"]]["image"], caption_of(real[s["image_id"]]), version,
                      real[s["image_id"]]["split"]) for s in rows if s["image_id"] in real]
    generations = lake.read("generations", columns=["generation_id", "method", "reference_ids", "prompt", "image",
                                                    "standardizer_version"],
                            filter="method = 'two_stage'").to_pylist()
    pairs = [_pair(mode, g["reference_ids"][0], "real_images", real[g["reference_ids"][0]]["image"], g["generation_id"],
                   "generations", g["image"], g["prompt"], g["standardizer_version"],
                   real[g["reference_ids"][0]]["split"])
             for g in generations if len(g["reference_ids"] or []) == 1 and g["reference_ids"][0] in real]
    if not pairs:
        raise FileNotFoundError(f"no two_stage `generations` of real images in lake {lake.uri}: train the two_stage "
                                "adapter and run `serialgen generate` on the real images first")
    return pairs


def newest_version(lake: Lake, table: str, column: str) -> str | None:
    """The value of ``column`` on the most recently written row of ``table``."""
    rows = lake.read(table, columns=[column, "written_at"])
    if rows.num_rows == 0:
        return None
    return rows.sort_by([("written_at", "descending")]).column(column)[0].as_py()


def _pair(mode: str, reference_id: str, reference_source: str, reference_image: bytes, target_id: str,
          target_source: str, target_image: bytes, caption: str, standardizer_version: str | None,
          split: str | None) -> dict[str, Any]:
    pair_id = hashlib.sha256(f"{reference_source}:{reference_id}|{target_source}:{target_id}".encode()).hexdigest()[:32]
    return {"mode": mode, "pair_id": pair_id, "reference_id": reference_id, "reference_source": reference_source,
            "reference_image": reference_image, "target_id": target_id, "target_source": target_source,
            "target_image": target_image, "caption": caption, "standardizer_version": standardizer_version,
            "split": split or "train"}


def _quote(value: str) -> str:
    return value.replace("'", "''")


def on_white(image: np.ndarray) -> np.ndarray:
    """uint8 HxW, HxWx3 or HxWx4 -> HxWx3; a transparent background becomes white."""
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.shape[2] == 4:
        alpha = image[..., 3:].astype(np.float32) / 255
        return np.rint(image[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    return image


def rgb_on_white(data: bytes) -> np.ndarray:
    """Encoded image -> HxWx3 uint8 (see :func:`on_white`)."""
    return on_white(decode_image(data))


def cover_crop(image: np.ndarray, size: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
    """Resize ``image`` to cover ``size`` (H, W), centre-crop it; returns the [-1, 1] CHW tensor and SDXL's
    micro-conditioning: the original (H, W) and the crop's top-left in the resized image."""
    height, width = image.shape[:2]
    scale = max(size[0] / height, size[1] / width)
    resized_h, resized_w = max(size[0], round(height * scale)), max(size[1], round(width * scale))
    resized = np.asarray(Image.fromarray(image).resize((resized_w, resized_h), Image.BICUBIC))
    top, left = (resized_h - size[0]) // 2, (resized_w - size[1]) // 2
    crop = resized[top:top + size[0], left:left + size[1]]
    tensor = torch.from_numpy(np.array(crop)).permute(2, 0, 1).float() / 127.5 - 1
    return tensor, (height, width), (top, left)


class PersonalizerPairs(Dataset):
    """One mode and split of `personalizer_pairs`, pinned to a table version, in pair_id order (so a
    rewrite of identical rows keeps every index: resume stays exact).

    Items: ``pixel_values`` (target, [-1, 1], ``size``), ``reference_pixels`` (white-square padded,
    CLIP-normalised), ``time_ids`` (original H, W, crop top, left, target H, W), ``input_ids`` /
    ``input_ids_2`` (both tokenizers, padded to their max length), ``pair_id``.
    """

    def __init__(self, lake: Lake, mode: str, split: str, size: tuple[int, int], tokenizers, processor,
                 version: int | None = None) -> None:
        ds = lake.dataset("personalizer_pairs", version)
        if ds is None:
            raise FileNotFoundError(f"no `personalizer_pairs` in lake {lake.uri}: run `serialgen train-personalizer`")
        self.lake, self.version, self.size = lake, ds.version, size
        self.tokenizers, self.processor = tokenizers, processor
        meta = ds.to_table(columns=["mode", "split", "pair_id"], with_row_id=False).to_pylist()
        chosen = [(r["pair_id"], i) for i, r in enumerate(meta) if r["mode"] == mode and r["split"] == split]
        self.rows = [i for _, i in sorted(chosen)]
        self._ds = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self._ds is None:  # opened here, in the reading process (Lance is not fork-safe)
            self._ds = self.lake.dataset("personalizer_pairs", self.version)
        row = self._ds.take([self.rows[index]], columns=["pair_id", "reference_image", "target_image",
                                                         "caption"]).to_pylist()[0]
        target, original, crop = cover_crop(rgb_on_white(row["target_image"]), self.size)
        item = {"pair_id": row["pair_id"], "pixel_values": target,
                "reference_pixels": reference_pixels(self.processor, [rgb_on_white(row["reference_image"])])[0],
                "time_ids": torch.tensor([*original, *crop, *self.size], dtype=torch.float32)}
        for key, tokenizer in zip(("input_ids", "input_ids_2"), self.tokenizers):
            item[key] = tokenizer(row["caption"], padding="max_length", max_length=tokenizer.model_max_length,
                                  truncation=True, return_tensors="pt").input_ids[0]
        return item

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_ds": None}
