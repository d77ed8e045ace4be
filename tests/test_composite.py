"""Compositing library (no Ray): geometry exactness of the kernel, split, backgrounds, pair readers."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from composite_data import disc_alpha, write_characters
from serialgen.compositing.augment import alpha_bbox, pair_rng, sample_augmentation
from serialgen.compositing.backgrounds import crop_background, ingest_image, procedural_background
from serialgen.compositing.dynamic import DynamicPairs
from serialgen.compositing.kernel import composite
from serialgen.compositing.pairs import RENDER_COLUMNS, PairComposer
from serialgen.compositing.split import TEST, split_of
from serialgen.config import CompositeSettings
from serialgen.pose_drawing import draw_pose
from serialgen.storage.images import ImageDecodeError, decode_image, encode_png
from serialgen.storage.torch_reader import PairsDataset, pairs_loader
from serialgen.synthetic.skeleton import COLORS

W, H, RADIUS = 64, 96, 3.0

#: Augmentation settings that switch one kind on at a time, then all at once.
AUGMENTATIONS = {
    "scale+placement": dict(crop_probability=0.0, shadow_probability=0.0, brightness=0.0, contrast=0.0,
                            background_jitter=0.0),
    "crop": dict(crop_probability=1.0, shadow_probability=0.0, brightness=0.0, contrast=0.0, background_jitter=0.0),
    "colour jitter": dict(crop_probability=0.0, shadow_probability=0.0, brightness=0.2, contrast=0.2,
                          background_jitter=0.4),
    "shadow": dict(crop_probability=0.0, shadow_probability=1.0, brightness=0.0, contrast=0.0, background_jitter=0.0),
    "all": dict(crop_probability=0.5, shadow_probability=0.5, brightness=0.2, contrast=0.2, background_jitter=0.4,
                scale_range=(0.4, 1.6)),
}


def grid_keypoints() -> np.ndarray:
    """18 well separated points (3 x 6 grid) so every disc can be measured on its own."""
    xs, ys = np.meshgrid(np.linspace(12.3, 51.7, 3), np.linspace(10.6, 85.2, 6))
    return np.stack([xs.ravel(), ys.ravel(), np.ones(18)], axis=1).astype(np.float32)


def disc_render(keypoints: np.ndarray, grey: int) -> np.ndarray:
    """Grey antialiased discs at the keypoints, transparent elsewhere (RGBA uint8)."""
    alpha = np.round(disc_alpha(keypoints, W, H, RADIUS) * 255).astype(np.uint8)
    return np.dstack([np.full((H, W, 3), grey, np.uint8), alpha])


def augmentations(kind: str, n: int, bbox) -> list:
    cfg = CompositeSettings(**AUGMENTATIONS[kind])
    return [sample_augmentation(pair_rng(0, f"{kind}-{i}"), bbox, (W, H), cfg) for i in range(n)]


@pytest.mark.parametrize("kind", list(AUGMENTATIONS))
def test_mask_and_keypoints_move_exactly_with_the_character(kind):
    kp = grid_keypoints()
    light, dark = disc_render(kp, 178), disc_render(kp, 76)   # same alpha, character 0.7 or 0.3 grey
    augs = augmentations(kind, 12, alpha_bbox(light[..., 3]))
    kps, grey = np.stack([kp] * len(augs)), np.full((len(augs), H, W, 3), 128, np.uint8)
    out = composite(np.stack([light] * len(augs)), kps, grey, augs)
    out_dark = composite(np.stack([dark] * len(augs)), kps, grey, augs)

    measured = 0
    for img, img_dark, mask, moved, aug in zip(out.image, out_dark.image, out.background_mask, out.keypoints, augs):
        # Background, shadow and jitter are the same in both: the difference is the transformed alpha
        # times 0.4 * contrast * brightness (no value clips in this range).
        diff = img.astype(np.float64).mean(axis=2) - img_dark.astype(np.float64).mean(axis=2)
        alpha = diff / ((178 - 76) * aug.contrast * aug.brightness)
        # The mask is exactly the transformed alpha thresholded at 0.5 (up to 8-bit rounding at 0.5).
        assert not np.any(mask[alpha > 0.52]), "foreground is never called background"
        assert np.all(mask[alpha < 0.48])
        expected = kp[:, :2] * aug.scale + np.asarray(aug.offset)
        for (x, y), (mx, my, vis) in zip(expected, moved):
            assert (mx, my) == pytest.approx((x, y), abs=1e-4)
            assert vis == (1.0 if 0 <= x < W and 0 <= y < H else 0.0)
            r = (RADIUS + 0.5) * aug.scale + 1.5  # the disc, its blur, and nothing of its neighbours
            if not (r <= x < W - r and r <= y < H - r):
                continue  # disc cut by the frame: its centroid moved legitimately
            yy, xx = np.mgrid[0:H, 0:W] + 0.5
            win = alpha * (np.hypot(xx - x, yy - y) <= r)
            cx, cy = (win * xx).sum() / win.sum(), (win * yy).sum() / win.sum()
            assert (cx, cy) == pytest.approx((x, y), abs=0.12), \
                f"{kind}: disc centroid off its keypoint by ({cx - x:.3f}, {cy - y:.3f}) at scale {aug.scale:.2f}"
            measured += 1
    assert measured > 50
    if kind == "crop":
        assert (out.keypoints[..., 2] == 0).any(), "crops must cut some keypoints off"


@pytest.mark.parametrize("render_cut", [(), ("bottom",), ("left", "bottom"), ("top", "bottom")])
def test_where_the_render_cut_the_figure_it_stays_cut_by_the_canvas(render_cut):
    """A bust (cut at the render's bottom) is composited with that cut on the canvas's border, never floating;
    uncut sides stay inside unless the drawn crop pushes them out."""
    yy, xx = np.mgrid[0:H, 0:W]
    x0, x1 = (0 if "left" in render_cut else 10), W - 12
    y0, y1 = (0 if "top" in render_cut else 14), (H if "bottom" in render_cut else H - 20)
    figure = ((xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)).astype(np.uint8) * 255
    rgba = np.dstack([np.full((H, W, 3), 200, np.uint8), figure])
    augs = augmentations("all", 40, alpha_bbox(figure))
    out = composite(np.stack([rgba] * len(augs)), np.zeros((len(augs), 18, 3), np.float32),
                    np.full((len(augs), H, W, 3), 60, np.uint8), augs)
    for mask, aug in zip(out.background_mask, augs):
        figure_at = {"left": ~mask[:, 0], "right": ~mask[:, -1], "top": ~mask[0], "bottom": ~mask[-1]}
        (left, top), (right, bottom) = (np.array([x, y]) * aug.scale + aug.offset for x, y in ((x0, y0), (x1, y1)))
        inside = {"left": left >= -1e-6, "right": right <= W + 1e-6, "top": top >= -1e-6, "bottom": bottom <= H + 1e-6}
        for side, on_border in figure_at.items():
            if side in render_cut or side == aug.cut_side:
                assert on_border.any(), f"{side}: cut by {'the render' if side in render_cut else 'the crop'}"
            elif aug.cut_side is None:
                assert inside[side], f"{side}: an uncut side stays inside the canvas"
    assert {a.cut_side for a in augs} >= {None, "left", "right", "top", "bottom"}


def test_shadow_and_jitter_touch_only_the_background():
    kp = grid_keypoints()
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    body = (((xx - W / 2) / 24) ** 2 + ((yy - H / 2) / 44) ** 2 <= 1).astype(np.uint8) * 255   # a solid figure
    rgba = np.dstack([np.full((H, W, 3), 255, np.uint8), body])
    bbox = alpha_bbox(rgba[..., 3])
    plain = augmentations("scale+placement", 6, bbox)
    shadow, jitter = augmentations("shadow", 6, bbox), augmentations("colour jitter", 6, bbox)
    varied = [replace(p, shadow_offset=s.shadow_offset, shadow_sigma=s.shadow_sigma, shadow_opacity=s.shadow_opacity,
                      background_gain=j.background_gain, background_saturation=j.background_saturation)
              for p, s, j in zip(plain, shadow, jitter)]
    only_shadow = [replace(v, background_gain=(1.0, 1.0, 1.0), background_saturation=1.0) for v in varied]
    grey = np.full((6, H, W, 3), 160, np.uint8)
    a, b, c = (composite(np.stack([rgba] * 6), np.stack([kp] * 6), grey, augs) for augs in (plain, varied, only_shadow))
    assert np.array_equal(a.background_mask, b.background_mask)
    changed = np.any(a.image != b.image, axis=3)
    assert changed[a.background_mask].mean() > 0.5, "shadow and jitter change the background"
    interior = ~a.background_mask & ~_edge(a.background_mask)
    assert interior.sum() > 6 * 300 and not np.any(changed & interior), "the character keeps its colours"
    assert np.all(c.image.astype(int) <= a.image.astype(int) + 1), "a shadow only darkens"
    assert np.any(c.image != a.image)


def _edge(mask: np.ndarray) -> np.ndarray:
    """Pixels next to the mask boundary (partially covered: both colours mix there)."""
    pad = np.pad(mask, ((0, 0), (1, 1), (1, 1)), mode="edge")
    near = [pad[:, 1 + dy:H + 1 + dy, 1 + dx:W + 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    return np.any([n != mask for n in near], axis=0)


def test_reference_pose_is_redrawn_at_the_moved_keypoints(lake):
    write_characters(lake, 2, 3, W, H)
    lake.upsert("backgrounds", [{"background_id": "bg", "source_uri": "procedural://0/0", "width": 96, "height": 144,
                                 "image": encode_png(procedural_background(0, 0, 96, 144))}], "t")
    composer = PairComposer(lake, CompositeSettings(backgrounds_per_render=2, estimator_noise_probability=0.0), ["bg"])
    renders = lake.read("renders", columns=RENDER_COLUMNS)
    pairs = composer.compose(renders, composer.plan(renders))
    assert len(pairs.meta) == 12 and not pairs.errors
    assert np.array_equal(pairs.keypoints, pairs.true_keypoints)
    for pose, kp in zip(pairs.pose_images, pairs.keypoints):
        assert np.array_equal(pose, draw_pose(kp, W, H))
        for (x, y, v), colour in zip(kp[[1, 4, 7, 10, 13]], np.asarray(COLORS)[[1, 4, 7, 10, 13]]):
            if v > 0:
                assert tuple(pose[int(y), int(x)]) == tuple(colour)


def test_missing_pairs_is_the_anti_join_of_planned_and_stored_ids():
    import pyarrow as pa

    from serialgen.compositing.plan import make_pair_id, missing_pairs, planned_pairs

    rng = np.random.default_rng(0)
    chars, poses = ["a", "team/b", "c-3"], [f"p{i}" for i in range(40)]
    combos = [(c, p, v) for c in chars for p in poses for v in range(3)]
    chosen = [combos[i] for i in rng.choice(len(combos), 200, replace=False)]
    keys = pa.table({"character_id": [c for c, _, _ in chosen], "pose_id": [p for _, p, _ in chosen],
                     "view_id": pa.array([v for _, _, v in chosen], pa.int32())})
    planned = planned_pairs(keys, 2)
    ids = [make_pair_id(*r.values(), k) for k in range(2) for r in keys.to_pylist()]
    assert planned.column("pair_id").to_pylist() == ids
    stored = [i for i in ids if rng.random() < 0.6] + ["zz/p1/0/0", "a/unknown-pose/0/1"]
    batches = [pa.array(stored[:100]), pa.array(stored[100:])]
    todo = missing_pairs(keys, 2, batches)
    got = sorted(make_pair_id(*keys.slice(r, 1).to_pylist()[0].values(), k)
                 for r, k in zip(todo.column("row").to_pylist(), todo.column("k").to_pylist()))
    assert got == sorted(set(ids) - set(stored)) and 0 < len(got) < len(set(ids))
    assert missing_pairs(keys, 1, []).num_rows == 200


def test_split_is_by_character_stable_and_about_the_fraction():
    ids = [f"character-{i}" for i in range(4000)]
    splits = [split_of(c, 0.2) for c in ids]
    assert splits == [split_of(c, 0.2) for c in ids]
    assert 0.18 < splits.count(TEST) / len(ids) < 0.22
    assert {split_of(c, 0.0) for c in ids} == {"train"}
    # Growing the fraction only moves characters into test, never out of it.
    assert all(split_of(c, 0.3) == TEST for c, s in zip(ids, splits) if s == TEST)


def test_procedural_backgrounds_are_seeded_and_varied():
    a = procedural_background(0, 5, 96, 64)
    assert np.array_equal(a, procedural_background(0, 5, 96, 64))
    many = np.stack([procedural_background(0, i, 96, 64) for i in range(12)]).astype(np.float32)
    means = many.mean(axis=(1, 2))
    assert np.ptp(means, axis=0).max() > 40, "palettes must differ"
    assert all(img.std() > 8 for img in many), "no flat backgrounds"
    diffs = [np.abs(many[i] - many[j]).mean() for i in range(12) for j in range(i + 1, 12)]
    assert min(diffs) > 10
    crop = crop_background(a, (1.0, 0.0, 0.5), True, (32, 48))
    assert crop.shape == (48, 32, 3)


def _encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_ingest_decodes_safely():
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    data, w, h = ingest_image(_encoded(rgb, "JPEG", exif=exif), 10_000_000, 1024)
    assert (w, h) == (40, 60) and decode_image(data).shape == (60, 40, 3)
    for img in (rgb.convert("P"), rgb.convert("LA"), rgb.convert("CMYK"), rgb.convert("RGBA"), rgb.convert("I;16")):
        data, w, h = ingest_image(_encoded(img, "TIFF" if img.mode == "CMYK" else "PNG"), 10_000_000, 1024)
        assert decode_image(data).shape == (40, 60, 3)
    data, w, h = ingest_image(_encoded(rgb, "PNG"), 10_000_000, 30)
    assert max(w, h) == 30
    with pytest.raises(ImageDecodeError, match="exceeds"):
        ingest_image(_encoded(rgb, "PNG"), 1000, 1024)       # a decompression bomb by our limit
    with pytest.raises(ImageDecodeError):
        ingest_image(b"definitely not an image", 10_000_000, 1024)
    with pytest.raises(ImageDecodeError):
        ingest_image(_encoded(rgb, "PNG")[:200], 10_000_000, 1024)  # truncated


def test_composer_reports_bad_renders_and_missing_standards(lake):
    write_characters(lake, 2, 2, W, H)
    lake.upsert("backgrounds", [{"background_id": "bg", "source_uri": "x", "width": 96, "height": 144,
                                 "image": encode_png(procedural_background(0, 1, 96, 144))}], "t")
    renders = lake.read("renders", columns=RENDER_COLUMNS).to_pylist()
    renders[0]["rgba"] = b"garbage"
    renders[1]["rgba"] = encode_png(np.zeros((H, W, 4), np.uint8))
    renders[2]["character_id"] = "no-such-character"
    import pyarrow as pa

    table = pa.Table.from_pylist(renders, schema=lake.read("renders", columns=RENDER_COLUMNS).schema)
    composer = PairComposer(lake, CompositeSettings(), ["bg"])
    pairs = composer.compose(table, composer.plan(table))
    reasons = " | ".join(r for _, r in pairs.errors)
    assert len(pairs.meta) == 1 and len(pairs.errors) == 3
    assert "empty alpha" in reasons and "no standard" in reasons and "not a readable image" in reasons


def test_dynamic_pairs_equal_the_materialised_ones_at_epoch_zero(lake, settings):
    write_characters(lake, 4, 2, W, H)
    lake.upsert("backgrounds", [{"background_id": f"bg{i}", "source_uri": f"procedural://0/{i}", "width": 96,
                                 "height": 144, "image": encode_png(procedural_background(0, i, 96, 144))}
                                for i in range(3)], "t")
    composer = PairComposer(lake, settings.composite, [f"bg{i}" for i in range(3)])
    renders = lake.read("renders", columns=RENDER_COLUMNS)
    lake.upsert("pairs", composer(renders, composer.plan(renders)).drop_columns(["error"]), "t")

    stored = PairsDataset(lake, "all")
    dynamic = DynamicPairs(lake, settings, "all")
    assert len(stored) == len(dynamic) == 8
    by_id = {dynamic[i]["pair_id"]: i for i in range(len(dynamic))}
    for i in range(len(stored)):
        a = stored[i]
        b = dynamic[by_id[a["pair_id"]]]
        assert a.keys() == b.keys()
        for key, value in a.items():
            assert torch.equal(value, b[key]) if torch.is_tensor(value) else value == b[key], key
    item = stored[0]
    assert item["input_image"].dtype == torch.float32 and item["input_image"].shape == (3, H, W)
    assert -1 <= item["input_image"].min() and item["input_image"].max() <= 1
    assert set(item["background_mask"].unique().tolist()) <= {0.0, 1.0} and item["background_mask"].shape == (1, H, W)
    assert 0 <= item["reference_pose_image"].min() and item["reference_pose_image"].max() <= 1
    assert item["reference_keypoints"].shape == (18, 3)
    dynamic.set_epoch(1)
    assert not torch.equal(dynamic[0]["input_image"], stored[[i for i in range(8) if stored[i]["pair_id"] ==
                                                              dynamic[0]["pair_id"]][0]]["input_image"])
    splits = {stored[i]["character_id"]: stored[i]["split"] for i in range(len(stored))}
    assert all(split_of(c, settings.composite.test_fraction) == s for c, s in splits.items())
    assert len(PairsDataset(lake, "train")) + len(PairsDataset(lake, "test")) == 8


def test_reader_resizes_and_a_spawned_loader_reads(lake, settings):
    write_characters(lake, 2, 2, W, H)
    lake.upsert("backgrounds", [{"background_id": "bg", "source_uri": "x", "width": 96, "height": 144,
                                 "image": encode_png(procedural_background(0, 2, 96, 144))}], "t")
    composer = PairComposer(lake, settings.composite, ["bg"])
    renders = lake.read("renders", columns=RENDER_COLUMNS)
    lake.upsert("pairs", composer(renders, composer.plan(renders)).drop_columns(["error"]), "t")
    full, half = PairsDataset(lake, "all"), PairsDataset(lake, "all", size=(48, 32))
    a, b = full[0], half[0]
    assert b["input_image"].shape == (3, 48, 32) and b["background_mask"].shape == (1, 48, 32)
    assert torch.allclose(b["reference_keypoints"][:, :2], a["reference_keypoints"][:, :2] / 2)
    loader = pairs_loader(half, batch_size=2, shuffle=False, num_workers=1)
    batch = next(iter(loader))
    assert batch["input_image"].shape == (2, 3, 48, 32) and len(batch["pair_id"]) == 2
