"""ingest-real: every PIL mode converted, EXIF orientation, content-hash ids, bad files -> errors, character
split, rerun adds nothing."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from serialgen.config import load_settings
from serialgen.stages.ingest_real import run_ingest_real
from serialgen.storage.images import decode_image
from serialgen.storage.runs import errors_of


def _save(img: Image.Image, path, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def _gradient(width: int = 40, height: int = 30) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return np.dstack([xx * 6, yy * 8, (xx + yy) * 3]).astype(np.uint8)


def test_modes_orientation_duplicates_bad_files_and_rerun(settings, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rgb = _gradient()
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:, :10] = 0
    _save(Image.fromarray(rgb).convert("L"), folder / "grey.png", "PNG")
    _save(Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA"), folder / "grey_alpha.png", "PNG")
    _save(Image.fromarray(rgb).convert("P"), folder / "palette.png", "PNG")
    _save(Image.fromarray(np.dstack([rgb, alpha])), folder / "rgba.png", "PNG")
    _save(Image.fromarray(np.dstack([rgb, alpha])), folder / "rgba_copy.png", "PNG")      # duplicate pixels
    _save(Image.fromarray(rgb).convert("CMYK"), folder / "cmyk.jpg", "JPEG")
    _save(Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).convert("I;16"), folder / "deep.png", "PNG")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    _save(Image.fromarray(rgb), folder / "rotated.jpg", "JPEG", exif=exif)
    (folder / "empty.png").write_bytes(b"")
    whole = _save(Image.fromarray(rgb), folder / "whole.png", "PNG")
    (folder / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (folder / "notes.jpg").write_text("not an image")
    _save(Image.fromarray(np.zeros((400, 400, 3), np.uint8)), folder / "huge.png", "PNG")
    settings = settings.model_copy(update={"ingest": settings.ingest.model_copy(update={"max_pixels": 100_000})})

    report = run_ingest_real(settings, images=str(folder))
    lake = settings.open_lake()
    rows = {r["source_uri"].rsplit("/", 1)[1]: r for r in lake.read("real_images").to_pylist()}
    errors = {r["key"].rsplit("/", 1)[1]: r["reason"] for r in errors_of(lake, "ingest-real").to_pylist()}
    assert errors.keys() == {"empty.png", "truncated.png", "notes.jpg", "huge.png"}
    assert errors["empty.png"].startswith("empty file")
    assert errors["truncated.png"].startswith("truncated or corrupt")
    assert errors["notes.jpg"].startswith("not an image")
    assert "exceeds ingest.max_pixels" in errors["huge.png"]

    # rgba.png and rgba_copy.png are one image (one of the two source URIs is kept).
    assert len(rows) == 8 and (report.ingested, report.duplicates) == (8, 1) and lake.count("real_images") == 8
    modes = {name: r["source_mode"] for name, r in rows.items()}
    assert {modes[n] for n in ("grey.png", "grey_alpha.png", "palette.png", "cmyk.jpg", "deep.png")} == \
        {"L", "LA", "P", "CMYK", "I;16"}
    assert rows["rotated.jpg"]["width"] == 30 and rows["rotated.jpg"]["height"] == 40
    for name, row in rows.items():
        pixels = decode_image(row["image"])
        assert pixels.dtype == np.uint8 and pixels.shape[2] == (4 if row["has_alpha"] else 3), name
    assert {n for n, r in rows.items() if r["has_alpha"]} == {"grey_alpha.png", "rgba.png"}
    deep = decode_image(rows["deep.png"]["image"])
    assert np.abs(deep[..., 0].astype(int) - rgb[..., 0]).max() <= 1   # 16-bit scaled, not clipped to white

    version = lake.version("real_images")
    again = run_ingest_real(settings, images=str(folder))
    assert (again.ingested, again.duplicates, again.skipped) == (0, 1, 8)
    assert lake.version("real_images") == version and len(errors_of(lake, "ingest-real")) == 4


def test_list_with_captions_domains_and_characters_keeps_a_character_on_one_side(settings, tmp_path):
    folder = tmp_path / "listed"
    folder.mkdir()
    lines = ["path,caption,domain,character_id"]
    for c in range(6):
        for k in range(3):
            image = np.full((24, 16, 3), (c * 40, k * 80, 7), np.uint8)
            _save(Image.fromarray(image), folder / f"c{c}_{k}.png", "PNG")
            lines.append(f"c{c}_{k}.png,character {c} view {k},{'anime' if c % 2 else 'real'},{c}")
    (folder / "list.csv").write_text("\n".join(lines) + "\n")
    settings = settings.model_copy(update={"ingest": settings.ingest.model_copy(update={"test_fraction": 0.5})})
    run_ingest_real(settings, images=str(folder / "list.csv"))
    rows = settings.open_lake().read("real_images").to_pylist()
    assert len(rows) == 18
    by_character = {}
    for r in rows:
        by_character.setdefault(r["character_id"], set()).add(r["split"])
        assert r["caption"].startswith(f"character {r['character_id']} ")
        assert r["domain"] == ("anime" if int(r["character_id"]) % 2 else "real")
    assert all(len(s) == 1 for s in by_character.values())
    assert {s for v in by_character.values() for s in v} == {"train", "test"}


def test_offline_default_spreads_over_characters_and_follows_their_split(tmp_path, ray_local):
    """Without --images: composited pairs and RGBA renders of every character, each on its character's split
    side, so the personalizer has train images and the held-out characters stay held out."""
    from composite_data import write_characters

    from serialgen.stages.composite import run_composite

    settings = load_settings(lake=str(tmp_path / "lake"), ray={"num_cpus": 2}, ingest={"procedural_images": 12},
                             composite={"backgrounds_procedural": 2})
    lake = settings.open_lake()
    characters = write_characters(lake, n_characters=6, poses=3)
    run_composite(settings)
    pair_split = dict(zip(*lake.read("pairs", columns=["character_id", "split"]).to_pydict().values()))
    assert set(pair_split.values()) == {"train", "test"}
    report = run_ingest_real(settings)
    rows = lake.read("real_images", columns=["character_id", "split", "source_uri", "has_alpha"]).to_pylist()
    assert report.errors == 0 and len(rows) == 12 + 3
    assert {r["character_id"] for r in rows} == set(characters)
    assert all(r["split"] == pair_split[r["character_id"]] for r in rows)
    assert sum(r["has_alpha"] for r in rows) == 3 and sum(r["source_uri"].startswith("pairs://") for r in rows) == 12
