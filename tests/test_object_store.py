"""The lake on S3 (a real moto server on localhost): keyed upserts, and assets -> render -> composite.

Every Lance reader and writer, on the driver and inside the Ray workers, must reach the bucket with
the lake's ``storage_options`` (endpoint, keys, region); a missed one fails here, not in production.
"""

from __future__ import annotations

import boto3
import pytest

from render_data import plan_items
from resilience_data import TINY, show, table_keys
from serialgen.config import load_settings
from serialgen.storage import Lake


def test_upsert_on_s3_is_keyed(s3_server):
    _, options = s3_server
    lake = Lake("s3://lake/upsert", options)
    rows = [{"stage": "render", "key": f"k{i}", "reason": "first"} for i in range(3)]
    lake.upsert("errors", rows, "run-1")
    lake.upsert("errors", [{"stage": "render", "key": "k1", "reason": "second"},
                           {"stage": "render", "key": "k3", "reason": "new"}], "run-2")
    table = lake.read("errors").sort_by("key")
    assert table.column("key").to_pylist() == ["k0", "k1", "k2", "k3"]
    assert table.column("reason").to_pylist() == ["first", "second", "first", "new"]
    client = boto3.client("s3", endpoint_url=options["aws_endpoint"], aws_access_key_id="test",
                          aws_secret_access_key="test", region_name="us-east-1")
    stored = client.list_objects_v2(Bucket="lake", Prefix="upsert/errors.lance/_versions/")
    manifests = [o["Key"] for o in stored.get("Contents", []) if o["Key"].endswith(".manifest")]
    assert len(manifests) == len(lake.dataset("errors").versions()) >= 2  # the table really lives in the bucket


@pytest.mark.slow
def test_assets_render_composite_on_s3(s3_server, ray_local):
    from serialgen.stages.assets import run_assets
    from serialgen.stages.composite import run_composite
    from serialgen.stages.render import run_render

    _, options = s3_server
    settings = load_settings(lake="s3://lake/pipeline", storage_options=options, **TINY)
    lake = settings.open_lake()
    assets = run_assets(settings)
    render = run_render(settings)
    composite = run_composite(settings)

    characters = sorted(k for (k,) in lake.keys("characters", filter="status = 'accepted'"))
    pose_ids = sorted(k for (k,) in lake.keys("poses"))
    planned = {i.key for i in plan_items(characters, pose_ids, 2, 1, settings.render.seed)}
    renders, standards, pairs = (table_keys(lake, t) for t in ("renders", "standards", "pairs"))
    counts = {"characters accepted": (2, len(characters)), "poses": (">= 2", len(pose_ids)),
              "renders": (len(planned), len(renders)), "standards": (2, len(standards)),
              "pairs": (len(planned), len(pairs)), "backgrounds": (2, lake.count("backgrounds")),
              "errors": (0, lake.count("errors"))}
    counts["seconds (assets, render, composite)"] = ("-", (assets.seconds, round(render.seconds, 1),
                                                          round(composite.seconds, 1)))
    show("S3 lake s3://lake/pipeline: assets -> render -> composite", counts)
    assert len(characters) == 2 and len(pose_ids) >= 2
    assert len(renders) == len(set(renders)) == 4 and set(renders) == planned
    assert sorted(standards) == [(c,) for c in characters]
    assert len(pairs) == len(set(pairs)) == 4 and composite.pairs_written == 4
    assert lake.count("backgrounds") == 2 and lake.count("errors") == 0
    assert (render.rendered, render.failed, composite.errors) == (4, 0, 0)


@pytest.mark.slow
def test_ingest_real_and_standardize_on_s3(s3_server, ray_local, tmp_path, tiny_preprocessors):
    """Real images read from the object store, `real_images` and `standardized` on it; models from local
    files (an object-store lake keeps its model folders where the config names them)."""
    import io

    import numpy as np
    from PIL import Image

    from serialgen.preprocessing import DETECTOR_FILE, MASK_FILE, POSE_FILE
    from serialgen.stages.ingest_real import run_ingest_real
    from serialgen.stages.standardize import run_standardize
    from standardize_data import figure_scene, save_tiny_standardizer

    endpoint, options = s3_server
    models = tiny_preprocessors
    standardizer = save_tiny_standardizer(tmp_path / "standardizer")
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                          region_name="us-east-1")
    rng = np.random.default_rng(3)
    for i in range(4):
        buffer = io.BytesIO()
        Image.fromarray(figure_scene(rng, 96, 144)[0]).save(buffer, format="PNG")
        client.put_object(Bucket="lake", Key=f"incoming/figure{i}.png", Body=buffer.getvalue())
    client.put_object(Bucket="lake", Key="incoming/broken.png", Body=b"\x89PNG not really")
    settings = load_settings(
        lake="s3://lake/model-half", storage_options=options, ray={"num_cpus": 2},
        standardizer={"inference_steps": 2},
        preprocessing={"mask_model": str(models / MASK_FILE), "pose_detector": str(models / DETECTOR_FILE),
                       "pose_model": str(models / POSE_FILE)},
        standardize={"model_dir": str(standardizer), "batch_size": 2, "write_rows": 2})
    lake = settings.open_lake()
    ingested = run_ingest_real(settings, images="s3://lake/incoming")
    first = run_standardize(settings)
    again_ingest, again = run_ingest_real(settings, images="s3://lake/incoming"), run_standardize(settings)
    images = lake.read("real_images", columns=["image_id"]).column("image_id").to_pylist()
    rows = lake.read("standardized", columns=["image_id", "model_version"]).to_pylist()
    show("S3 lake s3://lake/model-half: ingest-real -> standardize, then a rerun", {
        "real_images": (4, len(images)), "ingest errors": (1, ingested.errors),
        "standardized + errors": (4, first.written + first.errors), "rerun ingested": (0, again_ingest.ingested),
        "rerun standardized": (0, again.written)})
    assert len(images) == len(set(images)) == 4 and ingested.errors == 1
    assert first.written + first.errors == 4 and first.written == len(rows) == len({tuple(r.values()) for r in rows})
    assert again_ingest.ingested == 0 and again.written == 0


def test_one_source_reader_lists_and_reads_object_store_and_local_files(s3_server, tmp_path):
    """Background sources on an object store use the lake's storage_options (they were ignored before)."""
    from serialgen.compositing.backgrounds import IMAGE_SUFFIXES
    from serialgen.sources import list_files, read_bytes

    endpoint, options = s3_server
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                          region_name="us-east-1")
    for key, body in (("bgs/a.png", b"png-a"), ("bgs/sub/b.JPG", b"jpg-b"), ("bgs/notes.txt", b"x")):
        client.put_object(Bucket="lake", Key=key, Body=body)
    found = list_files("s3://lake/bgs", IMAGE_SUFFIXES, options)
    assert found == ["s3://lake/bgs/a.png", "s3://lake/bgs/sub/b.JPG"]
    assert [read_bytes(uri, options) for uri in found] == [b"png-a", b"jpg-b"]

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.webp").write_bytes(b"webp-c")
    (tmp_path / "d.txt").write_bytes(b"d")
    local = list_files(str(tmp_path), IMAGE_SUFFIXES)
    assert local == [str((tmp_path / "sub" / "c.webp").resolve())]
    assert read_bytes(f"file://{local[0]}") == b"webp-c"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_files(str(tmp_path / "missing"), IMAGE_SUFFIXES)
