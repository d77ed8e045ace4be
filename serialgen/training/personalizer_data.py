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
import io
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from serialgen.models.ip_adapter import reference_pixels
from serialgen.storage.images import decode_image, on_white
from serialgen.storage.lake import Lake

MODES = ("two_stage", "paired_one_stage", "unpaired")
#: The caption of a real image that has none, by its domain (None: unknown).
CAPTION_TEMPLATES = {"anime": "an anime character, full body", "real": "a photo of a person, full body",
                     None: "a character, full body"}
_REAL = ["image_id", "image", "caption", "domain", "split"]


def caption_of(row: dict[str, Any]) -> str:
    caption = (row.get("caption") or "").strip()
    return caption or CAPTION_TEMPLATES.get(row.get("domain"), CAPTION_TEMPLATES[None])


def build_pairs(lake: Lake, mode: str, standardizer_version: str | None = None
                ) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """The `personalizer_pairs` rows of ``mode`` from the current tables, and the (key, reason) of rows that
    cannot make a pair (a FileNotFoundError saying which stage to run when the mode's inputs are missing)."""
    if mode not in MODES:
        raise ValueError(f"unknown personalizer mode {mode!r}; choose one of: {', '.join(MODES)}")
    real = {r["image_id"]: r for r in lake.read("real_images", columns=_REAL).to_pylist()}
    if not real:
        raise FileNotFoundError(f"no `real_images` in lake {lake.uri}: run `serialgen ingest-real` first")
    problems: list[tuple[str, str]] = []
    if mode == "unpaired":
        pairs = [_pair(mode, r["image_id"], "real_images", r["image"], r["image_id"], "real_images", r["image"],
                       caption_of(r), None, r["split"]) for r in real.values()]
    elif mode == "two_stage":
        version = standardizer_version or newest_version(lake, "standardized", "model_version")
        if version is None:
            raise FileNotFoundError(f"no `standardized` rows in lake {lake.uri}: run `serialgen standardize` first")
        rows = lake.read("standardized", columns=["image_id", "model_version", "image"],
                         filter=f"model_version = '{_quote(version)}'").to_pylist()
        problems += [(f"{mode}/standardized/{s['image_id']}", "standardized image without a `real_images` row")
                     for s in rows if s["image_id"] not in real]
        pairs = [_pair(mode, s["image_id"], "standardized", s["image"], s["image_id"], "real_images",
                       real[s["image_id"]]["image"], caption_of(real[s["image_id"]]), version,
                       real[s["image_id"]]["split"]) for s in rows if s["image_id"] in real]
    else:
        generations = lake.read("generations", columns=["generation_id", "method", "reference_ids", "prompt", "image",
                                                        "standardizer_version"],
                                filter="method = 'two_stage'").to_pylist()
        pairs = [_pair(mode, g["reference_ids"][0], "real_images", real[g["reference_ids"][0]]["image"],
                       g["generation_id"], "generations", g["image"], g["prompt"], g["standardizer_version"],
                       real[g["reference_ids"][0]]["split"])
                 for g in generations if len(g["reference_ids"] or []) == 1 and g["reference_ids"][0] in real]
        if not pairs:
            raise FileNotFoundError(f"no two_stage `generations` of real images in lake {lake.uri}: train the "
                                    "two_stage adapter and run `serialgen generate` on the real images first")
    readable = []
    for pair in pairs:
        reason = _unreadable(pair)
        if reason:
            problems.append((f"{mode}/{pair['target_source']}/{pair['target_id']}", reason))
        else:
            readable.append(pair)
    return readable, problems


def _unreadable(pair: dict[str, Any]) -> str | None:
    """Why a pair's images cannot be read (PIL's structural check, no full decode), or None."""
    for side in ("reference", "target"):
        try:
            with Image.open(io.BytesIO(pair[f"{side}_image"] or b"")) as image:
                image.verify()
        except Exception as exc:  # PIL raises many types for broken files
            return f"{side} image ({pair[f'{side}_source']} {pair[f'{side}_id']}) is not readable: {exc}"
    return None


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


def rgb_on_white(data: bytes) -> np.ndarray:
    """Encoded image -> HxWx3 uint8 (see :func:`serialgen.storage.images.on_white`)."""
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
