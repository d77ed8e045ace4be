"""The lake's contract: keyed idempotent upserts, concurrency, schema checks, lossless images, versions."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pyarrow as pa
import pytest

from serialgen.storage import Lake, LakeError, SchemaMismatchError
from serialgen.storage.images import (
    ImageDecodeError, decode_image, decode_mask, encode_mask, encode_png, encode_webp,
)
from serialgen.storage.runs import StageRun, errors_of, last_completed


def background_rows(ids, tag="a"):
    img = encode_png(np.full((4, 6, 3), 7, np.uint8))
    return [{"background_id": i, "source_uri": f"{tag}://{i}", "image": img, "width": 6, "height": 4} for i in ids]


def test_upsert_twice_has_no_duplicates(lake):
    assert lake.upsert("backgrounds", background_rows(["a", "b", "c"]), "r1") == 3
    assert lake.upsert("backgrounds", background_rows(["b", "c", "d"], tag="new"), "r2") == 3
    table = lake.read("backgrounds").sort_by("background_id")
    assert table.column("background_id").to_pylist() == ["a", "b", "c", "d"]
    # the second write replaced b and c and stamped its run on them
    assert table.column("source_uri").to_pylist() == ["a://a", "new://b", "new://c", "new://d"]
    assert table.column("run_id").to_pylist() == ["r1", "r2", "r2", "r2"]


def test_duplicate_keys_within_one_batch_keep_the_last(lake):
    rows = background_rows(["a"]) + background_rows(["a"], tag="last")
    lake.upsert("backgrounds", rows, "r1")
    assert lake.read("backgrounds").column("source_uri").to_pylist() == ["last://a"]


def test_composite_key(lake):
    row = {"character_id": "c", "pose_id": "p", "view_id": 0, "rgba": b"x", "mask": b"m",
           "keypoints": [[0.0, 0.0, 0.0]] * 18, "pose_image": b"p", "camera": [0.0] * 14,
           "expression": "neutral", "framing": "full", "width": 1, "height": 1, "seed": 1, "render_seconds": 0.1}
    lake.upsert("renders", [row, {**row, "view_id": 1}], "r1")
    lake.upsert("renders", [{**row, "expression": "smile"}], "r2")
    assert lake.count("renders") == 2
    assert sorted(lake.keys("renders")) == [("c", "p", 0), ("c", "p", 1)]


def _writer(uri: str, start: int, n: int, batch: int, options: dict | None = None) -> None:
    lake = Lake(uri, options or {})
    for lo in range(start, start + n, batch):
        lake.upsert("backgrounds", background_rows([f"bg{i:04d}" for i in range(lo, lo + batch)]), f"w{start}")


def test_concurrent_upserts_from_two_processes(tmp_path):
    uri = str(tmp_path / "lake")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(uri, start, 40, 5)) for start in (0, 1000)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    ids = Lake(uri).read("backgrounds").column("background_id").to_pylist()
    assert len(ids) == len(set(ids)) == 80


def _maintain_beside_writers(uri: str, options: dict) -> list[str]:
    Lake(uri, options).upsert("backgrounds", background_rows(["seed"]), "r0")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(uri, start, 60, 3, options)) for start in (0, 1000)]
    for p in procs:
        p.start()
    while any(p.is_alive() for p in procs):   # ~80 passes while the writers commit locally, measured
        Lake(uri, options).maintain("backgrounds", cleanup=True)
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    Lake(uri, options).maintain("backgrounds", cleanup=True)
    return Lake(uri, options).read("backgrounds").column("background_id").to_pylist()


def test_writers_beside_a_concurrent_maintain_lose_and_duplicate_nothing(tmp_path):
    """Compaction, index upkeep and version cleanup in this process while two processes upsert."""
    ids = _maintain_beside_writers(str(tmp_path / "lake"), {})
    assert len(ids) == len(set(ids)) == 121


def test_schema_mismatch_is_a_clear_error(lake):
    with pytest.raises(SchemaMismatchError, match="miss columns: height, width"):
        lake.upsert("backgrounds", [{"background_id": "a", "source_uri": "x", "image": b""}], "r")
    with pytest.raises(SchemaMismatchError, match="backgrounds"):
        lake.upsert("backgrounds", [{**background_rows(["a"])[0], "width": "wide"}], "r")
    extra = pa.table({**{k: [v] for k, v in background_rows(["a"])[0].items()}, "colour": ["red"]})
    with pytest.raises(SchemaMismatchError, match="unexpected columns \\['colour'\\]"):
        lake.upsert("backgrounds", extra, "r")
    assert not lake.exists("backgrounds")


def test_table_written_with_another_schema_is_refused(lake):
    import lance

    lance.write_dataset(pa.table({"background_id": ["a"], "image": [b"x"]}), lake.table_uri("backgrounds"))
    with pytest.raises(SchemaMismatchError, match="different schema"):
        lake.upsert("backgrounds", background_rows(["b"]), "r")


def test_unknown_table_and_bad_uri():
    with pytest.raises(KeyError, match="unknown table"):
        Lake("/tmp/x").table_uri("nope")
    with pytest.raises(LakeError, match="scheme 'ftp'"):
        Lake("ftp://host/lake")


def test_rgba_png_and_mask_round_trip_losslessly():
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (33, 17, 4), dtype=np.uint8)
    assert np.array_equal(decode_image(encode_png(rgba)), rgba)
    mask = rng.random((33, 17)) > 0.5
    assert np.array_equal(decode_mask(encode_mask(mask)) > 127, mask)
    soft = rng.integers(0, 256, (9, 9), dtype=np.uint8)
    assert np.array_equal(decode_mask(encode_mask(soft)), soft)
    rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert np.array_equal(decode_image(encode_webp(rgb, lossless=True)), rgb)


def test_corrupt_image_bytes_raise_image_decode_error():
    with pytest.raises(ImageDecodeError, match="not a readable image"):
        decode_image(b"\x89PNG garbage")


def test_old_versions_stay_readable(lake):
    lake.upsert("backgrounds", background_rows(["a"]), "r1")
    v1 = lake.version("backgrounds")
    lake.upsert("backgrounds", background_rows(["a"], tag="v2") + background_rows(["b"]), "r2")
    assert lake.read("backgrounds", version=v1).column("source_uri").to_pylist() == ["a://a"]
    assert lake.count("backgrounds") == 2


def test_stage_run_records_lineage_errors_and_failure(lake):
    lake.upsert("backgrounds", background_rows(["a"]), "seed")
    with StageRun(lake, "composite", "cfg1", inputs=["backgrounds", "renders"]) as run:
        run.error("bad-1", "not a readable image")
        run.error("bad-1", "not a readable image")  # reported twice, stored once
        run.outputs = ["backgrounds"]
    errors = errors_of(lake, "composite")
    assert errors.column("key").to_pylist() == ["bad-1"]
    done = last_completed(lake, "composite")
    seeded = lake.version("backgrounds")
    assert done["inputs"] == {"backgrounds": seeded, "renders": None}
    assert done["outputs"] == {"backgrounds": seeded} and done["config_hash"] == "cfg1"
    with StageRun(lake, "composite", "cfg1") as run2:
        run2.clear_errors(["bad-1"])
    assert errors_of(lake, "composite").num_rows == 0
    with pytest.raises(RuntimeError):
        with StageRun(lake, "composite", "cfg2"):
            raise RuntimeError("boom")
    assert last_completed(lake, "composite")["config_hash"] == "cfg1"
    statuses = lake.read("runs", filter="stage = 'composite'").column("status").to_pylist()
    assert sorted(statuses) == ["completed", "completed", "failed"]


def test_writers_beside_a_concurrent_maintain_on_object_storage(s3_server):
    ids = _maintain_beside_writers("s3://lake/maintain-test", s3_server[1])
    assert len(ids) == len(set(ids)) == 121


def test_lake_on_s3_compatible_object_store(s3_server):
    _, options = s3_server
    lake = Lake("s3://lake/storage-test", options)
    assert lake.tables() == {}
    lake.upsert("backgrounds", background_rows(["a", "b"]), "r1")
    first = lake.version("backgrounds")
    lake.upsert("backgrounds", background_rows(["b", "c"]), "r2")
    assert lake.tables() == {"backgrounds": (3, first + 1)}
    assert lake.read("backgrounds", version=first).num_rows == 2
