"""The README's figures of synthetic-data fidelity from a lake with renders (``serialgen assets`` + ``serialgen render``).

    PYTHONPATH=. python docs/fidelity_figures.py LAKE

writes docs/render_framings.png (one row per character: the standard, then renders labelled with
their framing and expression, keypoints drawn) and docs/pairs_estimator_noise.png (one row per pair:
input | exact mask | mask as a segmenter gives it | exact pose | pose as an estimator gives it | target).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from serialgen.compositing.backgrounds import procedural_background
from serialgen.compositing.pairs import RENDER_COLUMNS, PairComposer
from serialgen.config import CompositeSettings
from serialgen.pose_drawing import draw_pose, overlay_pose
from serialgen.storage import Lake
from serialgen.storage.images import decode_image, encode_png

DOCS = Path(__file__).parent
ORDER = {"full": 0, "cutoff": 1, "bust": 2, "head": 3}


def _label(cell: np.ndarray, text: str) -> Image.Image:
    img = Image.fromarray(cell).convert("RGB")
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, img.width, 11), fill=(255, 255, 255))
    draw.text((2, 0), text[:32], fill=(0, 0, 0))
    return img


def _sheet(rows: list[list[Image.Image]]) -> Image.Image:
    height = rows[0][0].height
    width = max(sum(c.width + 2 for c in row) for row in rows)
    sheet = Image.new("RGB", (width, len(rows) * (height + 2)), (90, 90, 90))
    for r, row in enumerate(rows):
        x = 0
        for cell in row:
            sheet.paste(cell, (x, r * (height + 2)))
            x += cell.width + 2
    return sheet


def render_framings(lake: Lake, per_row: int = 7) -> Image.Image:
    standards = lake.read("standards", columns=["character_id", "image", "keypoints"]).to_pylist()
    renders = lake.read("renders", columns=["character_id", "rgba", "keypoints", "framing", "expression"]).to_pylist()
    rows = []
    for standard in sorted(standards, key=lambda s: s["character_id"]):
        mine = [r for r in renders if r["character_id"] == standard["character_id"]]
        mine.sort(key=lambda r: ORDER[r["framing"].split("-")[0]])
        cells = [_label(overlay_pose(decode_image(standard["image"], "RGB"), np.asarray(standard["keypoints"])),
                        "standard")]
        cells += [_label(overlay_pose(decode_image(r["rgba"], "RGBA"), np.asarray(r["keypoints"])),
                         f"{r['framing']} {r['expression'].split(',')[0]}") for r in mine[:per_row]]
        rows.append(cells)
    return _sheet(rows)


def pairs_with_noise(lake: Lake, n: int = 8) -> Image.Image:
    width, height = lake.read("renders", columns=["width", "height"]).to_pylist()[0].values()
    lake.upsert("backgrounds", [{"background_id": f"bg{i}", "source_uri": f"procedural://0/{i}", "width": width,
                                 "height": height, "image": encode_png(procedural_background(0, i, width, height))}
                                for i in range(4)], "figures")
    cfg = CompositeSettings(estimator_noise_probability=1.0, shadow_probability=0.7, crop_probability=0.2)
    composer = PairComposer(lake, cfg, [f"bg{i}" for i in range(4)])
    renders = lake.read("renders", columns=[*RENDER_COLUMNS, "framing"])
    full = [i for i, f in enumerate(renders.column("framing").to_pylist()) if f in ("full", "bust")]
    renders = renders.take(full[:: max(1, len(full) // n)][:n]).select(RENDER_COLUMNS)
    pairs = composer.compose(renders, composer.plan(renders))
    rows = []
    for i, meta in enumerate(pairs.meta):
        mask = lambda m: np.repeat((~m * 255).astype(np.uint8)[..., None], 3, axis=2)  # noqa: E731 - white = character
        canvas = (pairs.images[i].shape[1], pairs.images[i].shape[0])
        rows.append([_label(pairs.images[i], "input"), _label(mask(pairs.true_background_masks[i]), "exact mask"),
                     _label(mask(pairs.background_masks[i]), "segmenter-like"),
                     _label(draw_pose(pairs.true_keypoints[i], *canvas), "exact pose"),
                     _label(pairs.pose_images[i], "estimator-like"),
                     _label(decode_image(meta["target_image"], "RGB"), "target")])
    return _sheet(rows)


if __name__ == "__main__":
    lake = Lake(sys.argv[1])
    render_framings(lake).save(DOCS / "render_framings.png")
    pairs_with_noise(lake).save(DOCS / "pairs_estimator_noise.png")
