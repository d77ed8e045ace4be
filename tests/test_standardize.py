"""The standardize stage and standardize_images: errors for unusable images, exactly-once reruns,
model versions side by side, the canonical target for every reference, a killed actor, a driver
killed inside a commit."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from resilience_data import kill, kill_inside_commit_then_rerun, ray_worker_pids, show, wait_for
from serialgen.config import load_settings
from serialgen.stages.ingest_real import run_ingest_real
from serialgen.inference.standardize import model_version, standardize_images
from serialgen.stages.standardize import run_standardize
from serialgen.standard_skeleton import canonical_skeleton
from serialgen.storage.runs import errors_of
from standardize_data import figure_scene, install_preprocessors, save_tiny_standardizer


def stage_settings(tmp_path, model_dir, **standardize):
    return load_settings(lake=str(tmp_path / "lake"), ray={"num_cpus": 2}, standardizer={"inference_steps": 2},
                         standardize={"model_dir": str(model_dir), "batch_size": 2, "write_rows": 2, **standardize})


def write_images(folder, n: int, seed: int = 5) -> list[np.ndarray]:
    """``n`` figures (alternately tall and short, some square images) as PNG files; returns them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        rgb, _, _ = figure_scene(rng, 96, 144 if i % 3 else 96, stretch=(1.15 if i % 2 else 0.8))
        Image.fromarray(rgb).save(folder / f"figure{i}.png")
        images.append(rgb)
    return images


@pytest.mark.slow
def test_stage_errors_rerun_versions_and_canonical_target(tiny_preprocessors, tmp_path):
    model_a = save_tiny_standardizer(tmp_path / "model_a", seed=0)
    settings = stage_settings(tmp_path, model_a)
    install_preprocessors(tiny_preprocessors, settings)
    folder = tmp_path / "real"
    write_images(folder, 4)
    empty = np.zeros((96, 64, 4), np.uint8)  # its own alpha: transparent everywhere
    Image.fromarray(empty).save(folder / "empty.png")
    nobody = np.full((96, 64, 4), 114, np.uint8)  # flat grey, a touch transparent: its alpha is a full mask
    nobody[..., 3] = 250
    Image.fromarray(nobody).save(folder / "nobody.png")
    run_ingest_real(settings, images=str(folder))
    lake = settings.open_lake()
    ids = {r["source_uri"].rsplit("/", 1)[1]: r["image_id"] for r in lake.read("real_images").to_pylist()}

    first = run_standardize(settings)
    reasons = {r["key"]: r["reason"] for r in errors_of(lake, "standardize").to_pylist()}
    assert reasons[ids["empty.png"]].startswith("empty mask")
    assert reasons[ids["nobody.png"]].startswith("no person found")
    assert len(reasons) == 2 and (first.written, first.errors) == (4, 2)

    rows = lake.read("standardized").to_pylist()
    assert {r["image_id"] for r in rows} == {ids[f"figure{i}.png"] for i in range(4)}
    # Tall (odd) and short (even) figures alike are standardized toward the one canonical skeleton, at the
    # tiny standardizer's frame and the render stage's standard rows.
    target = canonical_skeleton(64, 96)
    for r in rows:
        assert np.allclose(r["target_keypoints"], target)
        assert r["model_version"] == model_version(model_a) and r["steps"] == 2 and r["sampler"] == "DDIM"
    boxes = {r["image_id"]: r["padding_box"] for r in rows}
    assert boxes[ids["figure0.png"]] == [0, 16, 64, 80] and boxes[ids["figure1.png"]] == [0, 0, 64, 96]

    version = lake.version("standardized")
    again = run_standardize(settings)
    assert (again.written, again.skipped) == (0, 4) and lake.version("standardized") == version
    assert len(errors_of(lake, "standardize")) == 2

    model_b = save_tiny_standardizer(tmp_path / "model_b", seed=1)
    second = run_standardize(stage_settings(tmp_path, model_b))
    rows = lake.read("standardized", columns=["image_id", "model_version"]).to_pylist()
    assert second.written == 4 and len(rows) == 8
    assert {r["model_version"] for r in rows} == {model_version(model_a), model_version(model_b)}
    assert all(sum(r["image_id"] == i for r in rows) == 2 for i in boxes)


def test_standardize_images_in_memory_and_missing_files(tiny_preprocessors, tmp_path):
    model = save_tiny_standardizer(tmp_path / "model", seed=0)
    settings = stage_settings(tmp_path, model)
    with pytest.raises(FileNotFoundError, match=r"^missing mask_u2net.onnx in .*train-preprocessors"):
        standardize_images(settings, [np.zeros((8, 8, 3), np.uint8)])
    install_preprocessors(tiny_preprocessors, settings)
    images = write_images(tmp_path / "real", 2)
    out = standardize_images(settings, images, seed=3)
    assert [o.image.shape for o in out] == [(96, 64, 3)] * 2 and out[0].input_mask.shape == (96, 64)
    assert out[0].padding_box == (0, 16, 64, 80) and out[0].model_version == model_version(model)
    assert set(np.unique(out[0].input_mask)) == {0, 255} and (out[0].input_mask[:16] == 255).all()
    alone = standardize_images(settings, images[1:], seed=4)   # image 1 again with its seed 3 + 1
    assert np.abs(alone[0].image.astype(int) - out[1].image.astype(int)).max() <= 1   # one seed per image
    with pytest.raises(ValueError, match="image 0: empty mask"):
        standardize_images(settings, [np.zeros((96, 64, 4), np.uint8)])

    no_model = settings.model_copy(update={"standardize": settings.standardize.model_copy(update={"model_dir": None})})
    with pytest.raises(FileNotFoundError, match="no trained standardizer .* run `serialgen train-standardizer`"):
        standardize_images(no_model, images)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_standardize_actor_killed_mid_run_each_image_once(tiny_preprocessors, tmp_path, ray_local):
    model = save_tiny_standardizer(tmp_path / "model", seed=0)
    settings = stage_settings(tmp_path, model, batch_size=1, write_rows=1)
    settings = settings.model_copy(update={"standardizer": settings.standardizer.model_copy(
        update={"inference_steps": 6})})
    install_preprocessors(tiny_preprocessors, settings)
    write_images(tmp_path / "real", 12)
    run_ingest_real(settings, images=str(tmp_path / "real"))
    lake = settings.open_lake()
    killed = []

    def kill_a_standardizer():
        wait_for(lambda: lake.count("standardized") >= 1, 300, "the first standardized rows")
        victims = ray_worker_pids("_StandardizeActor")
        if victims and lake.count("standardized") < 12:
            kill(victims[0])
            killed.append(lake.count("standardized"))

    killer = threading.Thread(target=kill_a_standardizer, daemon=True)
    killer.start()
    report = run_standardize(settings)
    killer.join(5)
    keys = lake.read("standardized", columns=["image_id"]).column("image_id").to_pylist()
    show("standardize: a standardizer actor SIGKILLed mid-run", {
        "rows": (12, len(keys)), "distinct images": (12, len(set(keys))),
        "errors": (0, lake.count("errors")), "rows at the kill": ("< 12", killed)})
    assert killed, "the stage finished before its actor could be killed"
    assert len(keys) == len(set(keys)) == 12 and report.errors == 0
    assert run_standardize(settings).written == 0


@pytest.mark.slow
def test_standardize_killed_inside_a_commit_then_rerun_gives_each_image_once(tiny_preprocessors, tmp_path, s3_server,
                                                                            prefect_api):
    """`serialgen standardize` on an S3 lake, SIGKILLed with its Ray at the manifest PUT of its third
    `standardized` commit (the table's creation, one committed block of rows, then this one: its data file and
    transaction uploaded, its manifest never sent). The rerun standardizes exactly the missing images."""
    endpoint, options = s3_server
    model = save_tiny_standardizer(tmp_path / "model", seed=0)
    sections = {"ray": {"num_cpus": 2},
                "standardizer": {"inference_steps": 2, "checkpoint_dir": str(tmp_path / "models")},
                "standardize": {"model_dir": str(model), "batch_size": 1, "write_rows": 1}}
    settings = load_settings(lake="s3://lake/standardize-killed", storage_options=options, **sections)
    install_preprocessors(tiny_preprocessors, settings)
    write_images(tmp_path / "real", 6)
    run_ingest_real(settings, images=str(tmp_path / "real"))
    lake = settings.open_lake()
    planned = set(lake.read("real_images", columns=["image_id"]).column("image_id").to_pylist())
    killed = kill_inside_commit_then_rerun(endpoint, lake, sections, tmp_path / "standardize.yaml", "standardize",
                                           "standardized", commit=3, prefect_api=prefect_api)
    rows = lake.read("standardized", columns=["image_id", "model_version"]).to_pylist()
    keys = [r["image_id"] for r in rows]
    show("standardize: the driver SIGKILLed inside its third `standardized` commit (S3 lake), then rerun", {
        "standardized version at the kill": (2, killed.version), "rows at the kill": ("1 .. 5", killed.rows),
        "uploaded, uncommitted data files": (">= 1", len(killed.uncommitted_files)), "rows": (len(planned), len(keys)),
        "distinct images": (len(planned), len(set(keys))), "errors": (0, lake.count("errors"))})
    assert killed.version == 2 and 0 < killed.rows < len(planned) and killed.uncommitted_files
    assert len(keys) == len(set(keys)) == len(planned) == 6 and set(keys) == planned
    assert {r["model_version"] for r in rows} == {model_version(model)} and lake.count("errors") == 0
