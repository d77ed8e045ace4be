"""The evaluate stage on a temp lake: scoring of `generations` rows, lineage skip, errors, report files.

These tests hand the stage a generator loader (:data:`serialgen.stages.evaluate.LoadGenerator`) whose
generators return constructed `generations` rows (the real :class:`serialgen.inference.generate.Generator` is
tested in test_personalizer.py): a "replicating" method (outputs = the reference, like the paper's unpaired
one-stage) and a two-stage one (recoloured outputs, a standardized reference). The CLIP and face models are tiny random ones in the real
models' formats (the real profiles' path), run for real; mask and pose stand in for the preprocessors.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from evaluation_models_data import build_tiny_clip, build_tiny_face_model
from test_standardizer import make_pairs

from serialgen.evaluation.clip import ClipModel
from serialgen.evaluation.face import ARCFACE_TEMPLATE, FACE_KEYPOINTS, FaceEmbedder
from serialgen.evaluation.evaluators import ClipFaceEvaluator
from serialgen.evaluation.testset import DEFAULT_SPEC, load_test_set
from serialgen.stages.evaluate import STANDARDIZED_MODES, run_evaluate
from serialgen.storage.images import decode_image, encode_png
from serialgen.storage.runs import errors_of


@pytest.fixture(scope="module")
def evaluation_files(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny CLIP folder and face ONNX file."""
    folder = tmp_path_factory.mktemp("evaluation")
    return build_tiny_clip(folder / "clip"), build_tiny_face_model(folder / "face.onnx")


@pytest.fixture(scope="module")
def evaluator(evaluation_files) -> ClipFaceEvaluator:
    clip_dir, face_file = evaluation_files
    return ClipFaceEvaluator(ClipModel(clip_dir), FaceEmbedder(face_file, "tiny-test-arcface"), mask_fn=_mask,
                             pose_fn=_pose)


def _mask(image: np.ndarray) -> np.ndarray:
    """Foreground = saturated pixels (the drawn figures are saturated, backgrounds grey or white)."""
    rgb = np.asarray(image)[..., :3].astype(np.int16)
    return np.where(rgb.max(-1) - rgb.min(-1) > 80, 255, 0).astype(np.uint8)


def _pose(image: np.ndarray) -> np.ndarray:
    """A face at the image's top centre, except on images with a pure white top-left corner (no face)."""
    keypoints = np.zeros((18, 3), np.float32)
    if tuple(np.asarray(image)[0, 0, :3]) == (255, 255, 255):
        return keypoints
    h, w = image.shape[:2]
    for row, index in enumerate(FACE_KEYPOINTS):
        keypoints[index] = (*(ARCFACE_TEMPLATE[row] / 112 * (w * 0.4) + (w * 0.3, h * 0.05)), 0.9)
    return keypoints


def fake_generate(calls: list, loads: list | None = None):
    """A loader with :data:`~serialgen.stages.evaluate.LoadGenerator`'s signature: per mode (recorded in ``loads``)
    a generator of constructed `generations` rows (each call recorded in ``calls``), which the stage writes."""
    def load(settings, method, folder):
        if loads is not None:
            loads.append(method)
        assert (folder / "ip_adapter.safetensors").is_file()
        return lambda *args, **kw: generate(method, method in STANDARDIZED_MODES, *args, **kw)

    def generate(method, standardize, references, prompts, seeds, scale=None, character_id=None):
        calls.append((method, character_id))
        reference = references[0]
        rows = []
        for k, (prompt, category) in enumerate(prompts):
            for seed in seeds:
                if method == "unpaired":
                    image = reference
                else:  # recoloured per prompt, white corner: no face found
                    image = np.roll(reference, 1 + k, axis=2).copy()
                    image[:4, :4] = 255
                gid = hashlib.sha256(f"{method}{character_id}{prompt}{seed}".encode()).hexdigest()[:16]
                rows.append({"generation_id": gid, "method": method, "character_id": character_id,
                             "reference_ids": [character_id],
                             "standardized_reference": encode_png(reference[::-1].copy()) if standardize else None,
                             "prompt": prompt, "prompt_category": category, "seed": seed, "scale": 1.0,
                             "sampler": "ddim", "steps": 2, "standardizer_version": "std-v1" if standardize else None,
                             "personalizer_version": f"{method}-v1", "image": encode_png(image),
                             "width": image.shape[1], "height": image.shape[0]})
        return rows
    return load


def _checkpoints(lake_dir, modes=("two_stage", "unpaired"), root=None) -> None:
    """Adapters of ``modes`` in the lake's personalizer folder (or in ``root``, a configured one)."""
    for mode in modes:
        folder = (root or lake_dir / "_checkpoints" / "personalizer") / mode
        folder.mkdir(parents=True)
        (folder / "ip_adapter.safetensors").write_bytes(mode.encode())


def _aggregate(rows, method, metric, stage="personalized", domain="all", category="all"):
    hits = [r for r in rows if (r["method"], r["metric"], r["stage"], r["domain"], r["prompt_category"])
            == (method, metric, stage, domain, category) and r["generation_id"] is None and r["character_id"] is None]
    assert len(hits) == 1, (method, metric, stage, domain, category, hits)
    return hits[0]


def test_scores_every_method_keeps_per_generation_rows_and_skips_unchanged_reruns(settings, lake, evaluator):
    make_pairs(lake, 2, test=2)
    _checkpoints(Path(lake.uri))
    calls: list = []
    loads: list = []
    report = run_evaluate(settings, evaluator=evaluator, load_generator=fake_generate(calls, loads))
    assert not report.skipped and report.methods == ["two_stage", "unpaired"]
    n_prompts = len(DEFAULT_SPEC["prompts"])
    assert loads == ["two_stage", "unpaired"]  # each mode's models loaded once for the whole test set
    assert sorted(calls) == sorted((m, c) for m in ("two_stage", "unpaired") for c in ("c2", "c3"))
    assert report.generations == 2 * 2 * n_prompts == lake.count("generations")
    # The generations are the evaluate run's: no `generate` run per (mode, character).
    generations = lake.read("generations", columns=["run_id"]).column("run_id").to_pylist()
    assert set(generations) == {report.run_id}
    assert lake.read("runs", filter="stage = 'generate'").num_rows == 0
    rows = lake.read("evaluations").to_pylist()
    per_generation = [r for r in rows if r["generation_id"] is not None]
    assert len(per_generation) == report.generations * 3  # clip_i, clip_t, face_sim each
    # The replicating method reproduces the reference: CLIP-I 100 and AP-CLIP-I 100; the recoloured one does not.
    assert _aggregate(rows, "unpaired", "clip_i")["value"] == pytest.approx(100.0, abs=1e-3)
    assert _aggregate(rows, "unpaired", "ap_clip_i")["value"] == pytest.approx(100.0, abs=1e-3)
    assert _aggregate(rows, "two_stage", "clip_i")["value"] < 99.9
    assert _aggregate(rows, "two_stage", "ap_clip_i")["value"] < 99.9
    # Face Sim: the replicas show the reference's face (cosine 1); the two-stage outputs show none, counted.
    unpaired_face, two_stage_face = _aggregate(rows, "unpaired", "face_sim"), _aggregate(rows, "two_stage", "face_sim")
    assert unpaired_face["value"] == pytest.approx(1.0, abs=1e-5) and unpaired_face["n"] == 2 * n_prompts
    assert two_stage_face["value"] is None and two_stage_face["n"] == 0
    assert json.loads(two_stage_face["details"])["detection_rate"] == 0.0
    # Subsets: per domain and per prompt category, and Table 7's standardized stage for two-stage only.
    assert _aggregate(rows, "two_stage", "clip_t", domain="synthetic")["n"] == 2 * n_prompts
    assert _aggregate(rows, "two_stage", "clip_t", category="action")["n"] == 2
    assert _aggregate(rows, "two_stage", "clip_i", stage="standardized")["n"] == 2
    assert not [r for r in rows if r["method"] == "unpaired" and r["stage"] == "standardized"]
    # Report: tables that name the models behind their columns, inline images, a blind sheet whose key is apart.
    html = report.files.html.read_text()
    assert "data:image/png;base64," in html and "Table 7" in html
    assert all(evaluator.clip.label in report.tables[k].note and "tiny-test-arcface" in report.tables[k].note
               for k in ("table1", "table2", "table7"))
    assert "FastComposer" in report.tables["table1"].note and "InstantID" not in report.tables["table1"].note
    grid = decode_image(report.files.grids["two_stage"].read_bytes())
    assert grid.shape[:2] == (2 * 128, (2 + n_prompts) * 128)  # characters x (reference | standardized | prompts)
    assert "| SerialGen two-stage (ours) |" in report.files.markdown.read_text()
    sheet = report.files.user_study.read_text()
    assert "unpaired" not in sheet and "two_stage" not in sheet
    key = json.loads(report.files.user_study_key.read_text())
    assert {frozenset(item["methods"].values()) for item in key["items"]} == {frozenset({"two_stage", "unpaired"})}
    # Unchanged models, test set and config: nothing happens.
    count, version = lake.count("evaluations"), lake.version("evaluations")
    again = run_evaluate(settings, evaluator=evaluator, load_generator=fake_generate(calls, loads))
    assert again.skipped and "unchanged" in again.why and len(calls) == 4 and len(loads) == 2
    assert (lake.count("evaluations"), lake.version("evaluations")) == (count, version)


def test_a_new_model_or_test_set_reruns_and_bad_references_become_errors(settings, lake, evaluator, tmp_path):
    make_pairs(lake, 2, test=2)
    lake_dir = Path(lake.uri)
    _checkpoints(lake_dir, ("unpaired",))
    calls: list = []
    working = fake_generate(calls)

    def failing_for_c3(settings, mode, folder):
        generate = working(settings, mode, folder)

        def failing(references, prompts, seeds, character_id=None, **kw):
            if character_id == "c3":
                raise ValueError("reference has no foreground")
            return generate(references, prompts, seeds, character_id=character_id, **kw)
        return failing

    first = run_evaluate(settings, evaluator=evaluator, load_generator=failing_for_c3)
    assert first.generations == len(DEFAULT_SPEC["prompts"])  # c2 only; the stage went on
    assert [(e["key"], e["reason"]) for e in errors_of(lake, "evaluate").to_pylist()] == [
        ("unpaired/c3", "generation failed: reference has no foreground")]
    _checkpoints(lake_dir, ("two_stage",))
    second = run_evaluate(settings, evaluator=evaluator, load_generator=working)
    assert not second.skipped and second.methods == ["two_stage", "unpaired"]
    assert errors_of(lake, "evaluate").num_rows == 0  # c3 generated now: its error is cleared
    spec = tmp_path / "test_set.yaml"
    spec.write_text("held_out_characters: 1\ncharacters:\n  - {id: gone, reference: missing.png, domain: anime}\n"
                    "prompts:\n  - {prompt: a person in the park, category: background}\nseeds: [0, 1]\n")
    settings = settings.model_copy(update={"evaluate": settings.evaluate.model_copy(update={"test_set": spec})})
    third = run_evaluate(settings, evaluator=evaluator, load_generator=working)
    assert not third.skipped and third.generations == 2 * 1 * 2
    errors = errors_of(lake, "evaluate").to_pylist()
    assert [e["key"] for e in errors] == ["test-set/gone"] and "missing.png" in errors[0]["reason"]
    assert len(load_test_set(lake, spec).characters) == 1


def test_the_default_loader_loads_each_mode_once_and_one_shared_standardizer(settings, lake, evaluator,
                                                                             monkeypatch):
    """Without a ``load_generator`` the stage loads a :class:`~serialgen.inference.generate.Generator` per mode
    (here stand-ins that record their construction); only the standardizing mode gets the standardizer, loaded
    once. A mode whose models fail to load is one error per character, and the other modes go on."""
    import serialgen.inference.generate as generate_module
    import serialgen.inference.standardize as standardize_module

    made: list = []
    calls: list = []
    rows_of = fake_generate(calls)

    class Standardizer:
        def __init__(self, settings):
            made.append("standardizer")

    class Generator:
        def __init__(self, settings, mode, folder, standardize):
            made.append((mode, folder.name, type(standardize).__name__))
            self.generate = rows_of(settings, mode, folder)

        def __call__(self, *args, **kw):
            return self.generate(*args, **kw)

    monkeypatch.setattr(generate_module, "Generator", Generator)
    monkeypatch.setattr(standardize_module, "ImageStandardizer", Standardizer)
    make_pairs(lake, 2, test=2)
    _checkpoints(Path(lake.uri), ("two_stage", "paired_one_stage", "unpaired"))
    report = run_evaluate(settings, evaluator=evaluator)
    assert made == [("paired_one_stage", "paired_one_stage", "bool"), "standardizer",
                    ("two_stage", "two_stage", "Standardizer"), ("unpaired", "unpaired", "bool")]
    assert len(calls) == 3 * 2 and report.generations == 3 * 2 * len(DEFAULT_SPEC["prompts"])

    def broken_two_stage(settings, mode, folder):
        if mode == "two_stage":
            raise RuntimeError("CUDA out of memory")
        return rows_of(settings, mode, folder)

    again = run_evaluate(settings, evaluator=evaluator, force=True, load_generator=broken_two_stage)
    assert again.generations == 2 * 2 * len(DEFAULT_SPEC["prompts"])
    assert sorted((e["key"], e["reason"]) for e in errors_of(lake, "evaluate").to_pylist()) == [
        ("two_stage/c2", "generation failed: CUDA out of memory"),
        ("two_stage/c3", "generation failed: CUDA out of memory")]


def test_adapters_in_the_configured_personalizer_folder_are_evaluated_on_an_s3_lake(
        settings, s3_server, evaluation_files, evaluator, tmp_path):
    """train-personalizer writes to ``personalizer.checkpoint_dir`` when it is set (and must, on a lake on object
    storage): evaluate finds the adapters there, and their bytes are its lineage."""
    _, options = s3_server
    clip_dir, face_file = evaluation_files
    adapters = tmp_path / "adapters"
    settings = settings.model_copy(update={
        "lake": "s3://lake/evaluate", "storage_options": options,
        "personalizer": settings.personalizer.model_copy(update={"checkpoint_dir": adapters}),
        "evaluate": settings.evaluate.model_copy(update={"clip_dir": clip_dir, "face_model": face_file,
                                                         "report_dir": tmp_path / "report"})})
    lake = settings.open_lake()
    make_pairs(lake, 2, test=2)
    _checkpoints(None, ("two_stage",), root=adapters)
    calls: list = []
    report = run_evaluate(settings, evaluator=evaluator, load_generator=fake_generate(calls))
    assert report.methods == ["two_stage"] and sorted(calls) == [("two_stage", "c2"), ("two_stage", "c3")]
    assert report.generations == 2 * len(DEFAULT_SPEC["prompts"]) == lake.count("generations")
    assert run_evaluate(settings, evaluator=evaluator, load_generator=fake_generate(calls)).skipped
    (adapters / "two_stage" / "ip_adapter.safetensors").write_bytes(b"retrained")
    assert not run_evaluate(settings, evaluator=evaluator, load_generator=fake_generate(calls)).skipped


@pytest.mark.slow
def test_table3_scores_the_trained_standardizer_like_its_validation(settings, lake, evaluator):
    from serialgen.stages.train_standardizer import run_train_standardizer, with_overrides
    from serialgen.storage.runs import last_completed

    make_pairs(lake, 2, test=2)
    cfg = settings.standardizer.model_copy(update={"width": 32, "height": 48, "validation_pairs": 2,
                                                   "inference_steps": 2, "num_workers": 0})
    settings = with_overrides(settings.model_copy(update={"standardizer": cfg}), steps=1)
    run_train_standardizer(settings)
    trained = last_completed(lake, "train-standardizer")["metrics"]
    evaluate = settings.evaluate.model_copy(update={"standardizer_pairs": 2})
    report = run_evaluate(settings.model_copy(update={"evaluate": evaluate}), evaluator=evaluator)
    assert report.standardizers == ["fbdm+rpim"] and report.generations == 0
    rows = lake.read("evaluations").to_pylist()
    per_pair = [r for r in rows if r["pair_id"] is not None and r["method"] == "fbdm+rpim"]
    assert sorted((r["metric"], r["pair_id"]) for r in per_pair) == [("psnr", "p2"), ("psnr", "p3"),
                                                                     ("ssim", "p2"), ("ssim", "p3")]
    psnr, ssim = (_aggregate(rows, "fbdm+rpim", m, stage="standardizer") for m in ("psnr", "ssim"))
    assert psnr["n"] == 2 and psnr["value"] == pytest.approx(trained["val_psnr"], rel=1e-5)
    assert ssim["value"] == pytest.approx(trained["val_ssim"], rel=1e-5)
    rows3 = report.tables["table3"].rows
    assert rows3[0] == ["fbdm+rpim", "✓", "✓", round(psnr["value"], 2), round(ssim["value"], 4), 2]
    # The baselines, scored on the same two pairs.
    assert [(r[0], r[-1]) for r in rows3[1:]] == [("baseline: input (resized)", 2),
                                                  ("baseline: mean training standard", 2)]
    mean_rows = [r for r in rows if r["method"] == "baseline: mean training standard" and r["pair_id"] is not None]
    assert sorted(r["pair_id"] for r in mean_rows if r["metric"] == "psnr") == ["p2", "p3"]


def test_cli_reports_one_line_errors_and_skips_an_unchanged_evaluation(settings, lake, evaluator, prefect_harness,
                                                                      tmp_path):
    from typer.testing import CliRunner

    from serialgen.cli import app

    make_pairs(lake, 2, test=2)
    runner = CliRunner()
    nothing = runner.invoke(app, ["--lake", settings.lake, "evaluate"])
    assert nothing.exit_code == 2 and "no trained personalizer" in nothing.output.strip().splitlines()[-1]
    bad = tmp_path / "bad.yaml"
    bad.write_text("prompts:\n  - {prompt: x, category: dancing}\n")
    invalid = runner.invoke(app, ["--lake", settings.lake, "evaluate", "--test-set", str(bad)])
    assert invalid.exit_code == 2 and "category" in invalid.output.strip().splitlines()[-1]
    _checkpoints(Path(lake.uri), ("unpaired",))
    run_evaluate(settings, evaluator=evaluator, load_generator=fake_generate([]))
    skipped = runner.invoke(app, ["--lake", settings.lake, "evaluate"])
    assert skipped.exit_code == 0 and "evaluate skipped: unchanged since run" in skipped.output
    sdxl = runner.invoke(app, ["--lake", settings.lake, "--profile", "sdxl", "evaluate"])
    assert sdxl.exit_code == 2 and "evaluate.clip_dir" in sdxl.output.strip().splitlines()[-1]


def test_publishes_tables_grid_and_report_link_as_artifacts(settings, lake, evaluator, prefect_harness):
    import asyncio

    from prefect.client.orchestration import get_client

    from serialgen.tasks.evaluate import publish_evaluation

    make_pairs(lake, 2, test=2)
    _checkpoints(Path(lake.uri), ("two_stage", "unpaired"))
    report = run_evaluate(settings, evaluator=evaluator, load_generator=fake_generate([]))
    publish_evaluation(report)

    async def artifacts():
        async with get_client() as client:
            return {a.key: a for a in await client.read_artifacts()}

    published = asyncio.run(artifacts())
    assert {"table-1", "table-2", "table-3", "table-4", "table-7", "evaluation-grid-two-stage",
            "evaluation-grid-unpaired", "evaluation-report"} <= set(published)
    assert published["table-2"].type == "table" and "AP-CLIP-I" in str(published["table-2"].data)
    assert "data:image/png;base64," in published["evaluation-grid-unpaired"].data
    assert report.files.html.name in published["evaluation-report"].data


def test_table4_has_a_row_per_standardizer_version_labelled_by_its_variant(evaluator):
    from serialgen.evaluation.report import build_tables
    from serialgen.evaluation.scoring import Group, evaluation_row
    from serialgen.stages.evaluate import StandardizerVariant

    rows = [evaluation_row("ts", Group("two_stage", "p1", version), "personalized", "clip_i", value, 8, {})
            for version, value in (("standardizer/model@aaa", 90.0), ("ablation/model@bbb", 80.0))]
    variants = [StandardizerVariant("fbdm+rpim", "run-1", Path("/lake/_checkpoints/standardizer/model"), True, True),
                StandardizerVariant("base", "run-2", Path("/lake/_checkpoints/ablation/model"), False, False)]
    table4 = build_tables(rows, rows, evaluator, variants)["table4"]
    assert table4.rows == [["ablation/model@bbb", "base", None, 80.0, None],
                           ["standardizer/model@aaa", "fbdm+rpim", None, 90.0, None]]
