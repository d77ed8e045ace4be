"""The composite stage end to end on a real local Ray: Lance renders -> Ray Data -> Lance pairs; flow and CLI."""

from __future__ import annotations

import io
import json
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from composite_data import write_characters
from serialgen.compositing.split import split_of
from serialgen.stages.composite import run_composite
from serialgen.storage.images import decode_image, encode_png
from serialgen.storage.runs import errors_of, last_completed
from serialgen.storage.torch_reader import PairsDataset

pytestmark = pytest.mark.usefixtures("ray_local")


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def background_folder(tmp_path):
    """Two good photos (one a JPEG), a corrupt file, a truncated PNG and an oversized image."""
    folder = tmp_path / "backgrounds"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (120, 90, 3), np.uint8)).save(folder / "a.jpg", quality=90)
    (folder / "sub" / "b.png").write_bytes(_png(Image.fromarray(rng.integers(0, 255, (80, 100, 3), np.uint8))))
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (folder / "truncated.png").write_bytes(_png(Image.fromarray(rng.integers(0, 255, (80, 80, 3), np.uint8)))[:300])
    (folder / "bomb.png").write_bytes(_png(Image.new("L", (400, 400))))   # over max_background_pixels below
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_stage_writes_pairs_once_and_bad_inputs_go_to_errors(settings, lake, background_folder):
    settings.composite.backgrounds_per_render = 2
    settings.composite.backgrounds_procedural = 3
    settings.composite.max_background_pixels = 100_000
    settings.composite.write_rows = 8                      # several commits per run
    settings.composite.workers = 1                         # one actor start per run keeps this test short
    characters = write_characters(lake, n_characters=5, poses=3)
    bad = lake.read("renders", filter="pose_id = 'pose001' AND character_id = 'char0-002'").to_pylist()[0]
    bad["rgba"] = b"corrupt render bytes"
    lake.upsert("renders", [bad], "test")

    report = run_composite(settings, source=str(background_folder))
    assert (report.backgrounds_generated, report.backgrounds_ingested, report.backgrounds) == (3, 2, 5)
    assert report.pairs_written == 28 and lake.count("pairs") == 28
    errors = {row["key"]: row["reason"] for row in errors_of(lake, "composite").to_pylist()}
    assert {Path(k).name for k in errors if k.startswith(str(background_folder))} == \
        {"corrupt.jpg", "truncated.png", "bomb.png"}
    assert "exceeds" in errors[str(background_folder / "bomb.png")]
    assert {k for k in errors if k.startswith("char")} == {"char0-002/pose001/0/0", "char0-002/pose001/0/1"}

    pairs = lake.read("pairs", columns=["pair_id", "character_id", "split", "background_id"])
    assert len(set(pairs.column("pair_id").to_pylist())) == 28
    split_by_character = dict(zip(pairs.column("character_id").to_pylist(), pairs.column("split").to_pylist()))
    assert split_by_character == {c: split_of(c, 0.2) for c in characters}
    assert len(Counter(pairs.column("background_id").to_pylist())) > 1
    first = {r["pair_id"]: r for r in lake.read("pairs").to_pylist()}

    again = run_composite(settings, source=str(background_folder))
    assert (again.pairs_written, again.pairs_skipped, again.backgrounds_generated, again.backgrounds_ingested) == \
        (0, 28, 0, 0)
    assert lake.count("pairs") == 28

    forced = run_composite(settings, force=True)             # recomposite everything: replaced, not added
    assert forced.pairs_written == 28 and lake.count("pairs") == 28
    rerun = {r["pair_id"]: r for r in lake.read("pairs").to_pylist()}
    for pid, row in first.items():                           # seeded per pair: identical content and split
        assert rerun[pid]["input_image"] == row["input_image"] and rerun[pid]["split"] == row["split"]
        assert rerun[pid]["run_id"] == forced.run_id

    settings.composite.shadow_probability = 0.0              # a new recipe: no pair keeps the old one
    recipe = run_composite(settings)
    assert recipe.pairs_written == 28 and lake.count("pairs") == 28
    shadows = [json.loads(r["augmentation"])["shadow_opacity"] for r in lake.read("pairs").to_pylist()]
    assert shadows == [0.0] * 28 and any(json.loads(r["augmentation"])["shadow_opacity"] for r in first.values())
    settings.composite.write_rows = 16                       # how it is written is not what it makes
    assert run_composite(settings).pairs_written == 0

    bad["rgba"] = lake.read("renders", filter="pose_id = 'pose000' AND character_id = 'char0-002'") \
        .column("rgba")[0].as_py()
    lake.upsert("renders", [bad], "test")                    # fixed upstream: the next run fills the gap
    fixed = run_composite(settings)
    assert fixed.pairs_written == 2 and lake.count("pairs") == 30
    assert not [k for k in errors_of(lake, "composite").column("key").to_pylist() if k.startswith("char")]
    done = last_completed(lake, "composite")
    assert done["metrics"]["pairs_written"] == 2 and done["inputs"]["renders"] == lake.version("renders")


def test_pairs_name_their_standard_and_readers_join_it(settings, lake):
    """A pair stores only its input side; its target is the character's `standards` row, read at the pinned version."""
    settings.composite.backgrounds_procedural = 2
    settings.composite.workers = 1
    write_characters(lake, n_characters=3, poses=2, seed=5)
    run_composite(settings)
    stored = set(lake.dataset("pairs").schema.names)
    assert not stored & {"target_image", "target_pose_image", "target_keypoints"}
    standards = {r["character_id"]: r for r in lake.read("standards").to_pylist()}
    data = PairsDataset(lake, "all")
    assert len(data) == lake.count("pairs") == 6
    for i in range(len(data)):
        item = data.arrays(i)
        standard = standards[item["character_id"]]
        assert np.array_equal(item["target_image"], decode_image(standard["image"], "RGB"))
        assert np.array_equal(item["target_pose_image"], decode_image(standard["pose_image"], "RGB"))
        assert np.allclose(item["target_keypoints"], standard["keypoints"])

    character = data.arrays(0)["character_id"]
    changed = dict(standards[character], image=encode_png(np.zeros((8, 4, 3), np.uint8)))
    lake.upsert("standards", [changed], "test")              # a new standards version
    worker_copy = pickle.loads(pickle.dumps(data))           # as a spawned loader worker gets it: no cache
    assert worker_copy.arrays(0)["target_image"].shape != (8, 4, 3)  # still pinned to the version it opened
    assert PairsDataset(lake, "all").arrays(0)["target_image"].shape == (8, 4, 3)

    lake.delete("standards", f"character_id = '{character}'")
    with pytest.raises(KeyError, match=f"no `standards` row for character '{character}'"):
        PairsDataset(lake, "all").arrays(0)


def test_dynamic_mode_writes_no_pairs(settings, lake):
    settings.composite.dynamic = True
    settings.composite.backgrounds_procedural = 2
    write_characters(lake, n_characters=2, poses=2, seed=3)
    report = run_composite(settings)
    assert report.dynamic and report.pairs_written == 0 and not lake.exists("pairs")
    assert lake.count("backgrounds") == 2


@pytest.mark.slow
def test_cli_runs_the_composite_flow_with_artifacts(settings, lake, prefect_harness, monkeypatch):
    from prefect.client.orchestration import get_client
    from typer.testing import CliRunner

    from serialgen.cli import app

    write_characters(lake, n_characters=3, poses=2, seed=7)
    monkeypatch.setenv("SERIALGEN_COMPOSITE__BACKGROUNDS_PROCEDURAL", "2")
    result = CliRunner().invoke(app, ["--lake", settings.lake, "composite"])
    assert result.exit_code == 0, result.output
    assert "pairs written 6" in result.output
    assert lake.count("pairs") == 6
    assert (Path(settings.lake) / "_artifacts" / "composite_pairs.png").is_file()

    import asyncio

    async def artifacts():
        async with get_client() as client:
            return {a.key: a for a in await client.read_artifacts() if a.key and a.key.startswith("composite")}

    found = asyncio.run(artifacts())
    assert {"composite-counts", "composite-grid"} <= set(found)
    assert "data:image/png;base64," in found["composite-grid"].data
