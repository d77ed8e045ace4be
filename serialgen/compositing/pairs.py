"""Render rows -> training pairs: the one implementation behind the Ray stage and the dynamic loader.

:class:`PairComposer` checks that each render's character has a standard (a pair names it by
``character_id``; readers join it), looks up a seeded background (Lance point reads, cached), draws
the augmentation from the pair's own seed, runs the batched kernel and redraws the reference pose
from the moved keypoints. Bad items become error entries, never exceptions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from serialgen.compositing.augment import Augmentation, alpha_bbox, pair_rng, sample_augmentation
from serialgen.compositing.backgrounds import crop_background
from serialgen.compositing.estimator_noise import degrade_keypoints, degrade_mask
from serialgen.compositing.plan import make_pair_id
from serialgen.compositing.kernel import Composited, composite
from serialgen.compositing.split import split_of
from serialgen.config import CompositeSettings
from serialgen.pose_drawing import draw_pose
from serialgen.storage import Lake
from serialgen.storage.lookup import LakeLookup
from serialgen.storage.images import ImageDecodeError, decode_image, encode_mask, encode_png
from serialgen.storage.schemas import PAIRS

#: The `renders` columns compositing needs.
RENDER_COLUMNS = ["character_id", "pose_id", "view_id", "rgba", "keypoints"]

#: What the composer emits: the `pairs` payload plus ``error`` (null for a good pair).
OUTPUT_SCHEMA = PAIRS.payload_schema.append(pa.field("error", pa.string()))


@dataclass(frozen=True)
class Planned:
    """One pair to make: a render row (index into the batch) and its background slot."""

    row: int
    k: int


@dataclass
class ComposedPairs:
    """A batch of pairs as arrays (what the dynamic loader consumes) plus their metadata.

    Per-item lists, not stacked arrays: renders of different sizes may share a batch.
    """

    meta: list[dict[str, Any]]      # per good pair: ids, split, background, augmentation
    images: list[np.ndarray]        # (H, W, 3) uint8 composited inputs
    background_masks: list[np.ndarray]  # (H, W) bool, True = background, as a segmenter would give it
    keypoints: np.ndarray           # (B, 18, 3) float32 reference keypoints as a pose estimator would give them
    pose_images: list[np.ndarray]   # (H, W, 3) uint8, drawn from ``keypoints``
    true_background_masks: list[np.ndarray]  # the exact masks (labels for a segmenter)
    true_keypoints: np.ndarray      # the exact keypoints, moved with the character (labels for a pose estimator)
    errors: list[tuple[dict[str, Any], str]]  # (ids of the failed pair, reason)


class PairComposer:
    """Composites planned (render, background slot) items into pairs; deterministic per (seed, pair, epoch)."""

    def __init__(self, lake: Lake, cfg: CompositeSettings, background_ids: Sequence[str],
                 versions: dict[str, int | None] | None = None) -> None:
        versions = versions or {}
        self.cfg = cfg
        self.background_ids = sorted(background_ids)
        self.backgrounds = LakeLookup(lake, "backgrounds", "background_id", ["background_id", "image"],
                                      lambda r: decode_image(r["image"], "RGB"), capacity=32,
                                      version=versions.get("backgrounds"))
        # Only whether a standard exists: pairs name it by character_id, readers join it.
        self.standards = LakeLookup(lake, "standards", "character_id", ["character_id"], lambda r: True,
                                    capacity=0, version=versions.get("standards"))

    def plan(self, renders: pa.Table, skip: Callable[[str], bool] = lambda pair_id: False) -> list[Planned]:
        """Every (render, slot) of ``renders`` whose pair id ``skip`` does not reject."""
        cols = [renders.column(c).to_pylist() for c in ("character_id", "pose_id", "view_id")]
        return [Planned(i, k) for i, ids in enumerate(zip(*cols))
                for k in range(self.cfg.backgrounds_per_render) if not skip(make_pair_id(*ids, k))]

    def compose(self, renders: pa.Table, planned: Sequence[Planned], epoch: int = 0) -> ComposedPairs:
        """Pairs for ``planned`` items of ``renders`` (columns :data:`RENDER_COLUMNS`)."""
        ids = renders.select(["character_id", "pose_id", "view_id"]).to_pylist()
        rgba = _decode_renders(renders, {p.row for p in planned})
        keypoints = renders.column("keypoints")

        meta, items, errors = [], [], []
        choices = []
        for p in planned:
            r = ids[p.row]
            info = dict(r, pair_id=make_pair_id(r["character_id"], r["pose_id"], r["view_id"], p.k))
            info["split"] = split_of(info["character_id"], self.cfg.test_fraction)
            rng = pair_rng(self.cfg.seed, info["pair_id"], epoch)
            info["background_id"] = self.background_ids[rng.integers(len(self.background_ids))] \
                if self.background_ids else None
            choices.append((p, info, rng))
        backgrounds = self.backgrounds.get(i["background_id"] for _, i, _ in choices if i["background_id"])

        for p, info, rng in choices:
            image = rgba[p.row]
            reason = _unusable(image, info, self.standards, backgrounds)
            if reason:
                errors.append((info, reason))
                continue
            canvas = (image.shape[1], image.shape[0])
            aug = sample_augmentation(rng, alpha_bbox(image[..., 3]), canvas, self.cfg)
            bg = crop_background(backgrounds[info["background_id"]], aug.background_crop, aug.background_flip, canvas)
            meta.append({**info, "augmentation": aug.to_json()})
            kp = np.asarray(keypoints[p.row].as_py() or np.zeros((18, 3)), np.float32)
            items.append((image, kp, bg, aug))

        images, true_masks, true_keypoints, shadows = _composite_by_size(items)
        masks, keypoints = list(true_masks), true_keypoints.copy()
        for i, ((image, kp, _bg, aug), shadow) in enumerate(zip(items, shadows)):
            if aug.estimator is not None:  # the input side as a segmenter and a pose estimator see it
                canvas = (image.shape[1], image.shape[0])
                masks[i] = degrade_mask(true_masks[i], shadow, aug.estimator)
                keypoints[i] = degrade_keypoints(true_keypoints[i], np.any(kp[:, :2] != 0, axis=1), canvas,
                                                 aug.estimator)
        poses = [draw_pose(kp, img.shape[1], img.shape[0]) for kp, img in zip(keypoints, images)]
        return ComposedPairs(meta, images, masks, keypoints, poses, true_masks, true_keypoints, errors)

    def __call__(self, renders: pa.Table, planned: Sequence[Planned], epoch: int = 0) -> pa.Table:
        """Pairs for ``planned`` as rows of :data:`OUTPUT_SCHEMA` (images PNG-encoded)."""
        return encode_pairs(self.compose(renders, planned, epoch))


def encode_pairs(pairs: ComposedPairs) -> pa.Table:
    """Arrays -> the `pairs` columns (+ ``error``); the mask is stored 255 = background."""
    rows = []
    for i, m in enumerate(pairs.meta):
        rows.append({**m, "input_image": encode_png(pairs.images[i]),
                     "background_mask": encode_mask(pairs.background_masks[i]),
                     "reference_keypoints": pairs.keypoints[i].tolist(),
                     "reference_pose_image": encode_png(pairs.pose_images[i]),
                     "true_background_mask": encode_mask(pairs.true_background_masks[i]),
                     "true_reference_keypoints": pairs.true_keypoints[i].tolist(), "error": None})
    empty = {f.name: None for f in OUTPUT_SCHEMA}
    rows += [{**empty, **info, "error": reason} for info, reason in pairs.errors]
    return pa.Table.from_pylist(rows, schema=OUTPUT_SCHEMA)


def _unusable(image: np.ndarray | str, info: dict[str, Any], standards: LakeLookup, backgrounds: dict) -> str | None:
    """Why a planned pair cannot be made, or None."""
    if isinstance(image, str):
        return image
    if alpha_bbox(image[..., 3]) is None:
        return "render has an empty alpha"
    if info["character_id"] not in standards:
        return f"no standard image for character {info['character_id']}"
    if info["background_id"] not in backgrounds:
        return "no background available"
    return None


def _decode_renders(renders: pa.Table, rows: set[int]) -> dict[int, np.ndarray | str]:
    """Decoded RGBA per needed row, or the reason it cannot be used."""
    column = renders.column("rgba")
    out: dict[int, np.ndarray | str] = {}
    for i in rows:
        data = column[i].as_py()
        try:
            out[i] = decode_image(data, "RGBA") if data else "render has no rgba image"
        except ImageDecodeError as exc:
            out[i] = f"render rgba: {exc}"
    return out


def _composite_by_size(items: list[tuple[np.ndarray, np.ndarray, np.ndarray, Augmentation]]
                       ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, list[np.ndarray]]:
    """Run the kernel once per render size present (usually one); (images, masks, keypoints, shadows) in item order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (image, *_rest) in enumerate(items):
        groups.setdefault(image.shape, []).append(i)
    images, masks, shadows = [None] * len(items), [None] * len(items), [None] * len(items)
    keypoints = np.zeros((len(items), 18, 3), np.float32)
    for idx in groups.values():
        out: Composited = composite(np.stack([items[i][0] for i in idx]), np.stack([items[i][1] for i in idx]),
                                    np.stack([items[i][2] for i in idx]), [items[i][3] for i in idx])
        for j, i in enumerate(idx):
            images[i], masks[i], keypoints[i], shadows[i] = \
                out.image[j], out.background_mask[j], out.keypoints[j], out.shadow[j]
    return images, masks, keypoints, shadows
