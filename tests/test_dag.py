"""The skip decision (every branch) and the DAG loop, on lakes whose lineage the tests write (no Blender)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from serialgen.checkpoints import content_version
from serialgen.config import load_settings
from serialgen.dag import BY_NAME, STAGES, config_hash, should_run, topological
from serialgen.storage.images import encode_png
from serialgen.storage.runs import MODEL_VERSION, MissingInputError, StageRun, TooManyFailures, require_input


def _background(i: int) -> dict:
    return {"background_id": f"b{i}", "source_uri": "x", "image": encode_png(np.zeros((2, 2, 3), np.uint8)),
            "width": 2, "height": 2}


def _complete(settings, stage: str, inputs=(), outputs=(), model=None) -> str:
    """A completed run of ``stage``; a training stage's run records the ``model`` folder and its version."""
    lake = settings.open_lake()
    with StageRun(lake, stage, config_hash(settings, stage), inputs=inputs) as run:
        run.outputs = list(outputs)
        if model is not None:
            run.checkpoint, run.metrics = str(model), {MODEL_VERSION: content_version(model)}
    return run.run_id


def test_topological_order_puts_every_stage_after_its_dependencies():
    order = [s.name for s in topological()]
    assert sorted(order) == sorted(s.name for s in STAGES if s.in_dag)
    for stage in STAGES:
        for dependency in stage.depends_on:
            if stage.in_dag:
                assert order.index(dependency) < order.index(stage.name), (dependency, stage.name)


def test_should_run_every_branch(settings, lake):
    assert should_run(settings, "composite") == (True, "never completed")
    lake.upsert("backgrounds", [_background(0)], "r0")
    _complete(settings, "composite", inputs=["backgrounds"], outputs=["backgrounds"])
    run, why = should_run(settings, "composite")
    assert not run and why.startswith("unchanged since run composite-")
    assert should_run(settings, "composite", force=True) == (True, "forced")

    changed = load_settings(lake=settings.lake, composite={"test_fraction": 0.3})
    assert should_run(changed, "composite") == (True, "config changed")

    _complete(settings, "train-standardizer", inputs=["backgrounds"])
    lake.upsert("backgrounds", [_background(1)], "r1")
    assert should_run(settings, "train-standardizer") == (True, "inputs changed: backgrounds")
    # A table the stage itself wrote does not count as a changed input.
    assert not should_run(settings, "composite")[0]

    _complete(settings, "render", outputs=["backgrounds"])
    shutil.rmtree(f"{settings.lake}/backgrounds.lance")
    assert should_run(settings, "render") == (True, "outputs missing: backgrounds")

    sourced = load_settings(lake=settings.lake, composite={"background_source": "/data/backgrounds"})
    _complete(sourced, "composite")
    assert should_run(sourced, "composite") == (True, "reads the background source")


@pytest.mark.parametrize("section, field, value, reruns", [
    ("render", "workers", 7, False),
    ("render", "chunk_size", 3, False),
    ("composite", "write_rows", 5, False),
    ("standardizer", "log_every", 1, False),
    ("standardizer", "num_workers", 0, False),
    ("render", "samples", 3, True),
    ("composite", "scale_range", (0.2, 0.3), True),
    ("standardizer", "learning_rate", 0.5, True),
])
def test_config_hash_covers_output_settings_only(settings, section, field, value, reruns):
    changed = load_settings(lake=settings.lake, **{section: {field: value}})
    stages = [s.name for s in STAGES if section in s.sections]
    assert stages, section
    for stage in stages:
        assert (config_hash(changed, stage) != config_hash(settings, stage)) == reruns, (stage, field)


def test_a_setting_another_stage_depends_on_reruns_that_stage(settings):
    # With on-the-fly compositing, train-standardizer's data is shaped by composite's settings ...
    dynamic = load_settings(lake=settings.lake, composite={"dynamic": True})
    changed = load_settings(lake=settings.lake, composite={"dynamic": True, "shadow_probability": 0.0})
    assert config_hash(changed, "train-standardizer") != config_hash(dynamic, "train-standardizer")
    assert config_hash(changed, "render") == config_hash(dynamic, "render")
    # ... with static pairs it reads the `pairs` table (an input version), not composite's settings.
    static = load_settings(lake=settings.lake, composite={"shadow_probability": 0.0})
    assert config_hash(static, "train-standardizer") == config_hash(settings, "train-standardizer")


def test_missing_input_names_the_stage_to_run_first(lake):
    with pytest.raises(MissingInputError, match=r"render: no `characters` rows with status = 'accepted' .*"
                                                 r"run `serialgen assets` first"):
        require_input(lake, "characters", "render", "assets", filter="status = 'accepted'")
    lake.upsert("backgrounds", [_background(0)], "r0")
    require_input(lake, "backgrounds", "composite", "composite")


def test_too_many_failed_items_fail_the_run_with_count_and_reasons(lake):
    with pytest.raises(TooManyFailures, match=r"3 of 4 items failed \(75% > limit 50%\); first reasons: boom; "
                                              r"boom; bad"):
        with StageRun(lake, "composite", "h", max_failure_share=0.5) as run:
            run.errors([("a", "boom"), ("b", "boom"), ("c", "bad")])
            run.attempted = 4
    row = lake.read("runs").to_pylist()[0]
    assert row["status"] == "failed" and "3 of 4 items failed" in json.loads(row["metrics"])["exception"]
    with StageRun(lake, "composite", "h", max_failure_share=0.5) as run:
        run.errors([("d", "boom")])
        run.attempted = 4
    assert lake.read("runs", filter=f"run_id = '{run.run_id}'").column("status").to_pylist() == ["completed"]
    # A rerun where the known-bad items fail again (and one new item works) is not a failure.
    with StageRun(lake, "composite", "h", max_failure_share=0.5) as run:
        run.errors([("a", "boom"), ("b", "boom"), ("c", "bad")])
        run.attempted = 4
    assert lake.read("runs", filter=f"run_id = '{run.run_id}'").column("status").to_pylist() == ["completed"]


def test_dag_stops_dependents_of_a_failed_stage_and_ends_failed(settings, prefect_harness):
    from serialgen.flows.dag import serialgen
    from serialgen.storage.runs import StageFailed

    _complete(settings, "assets")   # assets "done" but wrote nothing: render must say what to run first
    state = serialgen(lake=settings.lake, return_state=True)
    assert state.is_failed()
    with pytest.raises(StageFailed, match="stages did not complete: render, composite, train-standardizer"):
        state.result()
    lake = settings.open_lake()
    statuses = dict(zip(*lake.read("runs", columns=["stage", "status"]).to_pydict().values()))
    assert statuses == {"assets": "completed"}   # render failed before any run row; nothing downstream ran


@pytest.mark.slow
def test_a_run_where_every_stage_is_skipped_imports_no_heavy_library(settings, tmp_path):
    for stage in topological():
        _complete(settings, stage.name)
    code = (
        "import sys, json\n"
        "from prefect.testing.utilities import prefect_test_harness\n"
        "from serialgen.flows.dag import serialgen\n"
        "with prefect_test_harness(server_startup_timeout=120):\n"
        f"    summary = serialgen(lake={settings.lake!r})\n"
        "print(json.dumps({'statuses': [r['status'] for r in summary],\n"
        "                  'heavy': [m for m in ('torch', 'bpy', 'ray', 'diffusers') if m in sys.modules]}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"statuses": ["skipped"] * len(topological()), "heavy": []}


def test_progress_line_reports_done_total_rate_and_eta(caplog):
    from serialgen.progress import ProgressReporter

    reporter = ProgressReporter("render", interval=0.0, bar=False)
    assert reporter.line(40, 120, 20.0) == "render: 40/120 items (33%), 2.00 items/s, ETA 40 s"
    assert reporter.line(120, 120, 60.0) == "render: 120/120 items (100%), 2.00 items/s, done"
    with caplog.at_level("INFO", logger="serialgen.progress"):
        reporter(3, 6)
    assert caplog.records and caplog.records[-1].getMessage().startswith("render: 3/6 items (50%)")


def test_info_shows_every_stage_in_dag_order_with_what_the_next_run_does(settings, monkeypatch):
    from rich.console import Console
    from typer.testing import CliRunner

    from serialgen import cli

    _complete(settings, "assets")
    # A wide terminal, whichever test imported the CLI first (its console reads COLUMNS once, at import).
    monkeypatch.setattr(cli, "console", Console(width=250))
    result = CliRunner().invoke(cli.app, ["--lake", settings.lake, "info"])
    assert result.exit_code == 0, result.output
    lineage = result.output.split("lineage (DAG order")[1]
    rows = [line for line in lineage.splitlines() if line.strip("│ ").split(" ")[0] in BY_NAME]
    names = [row.strip("│ ").split(" ")[0] for row in rows]
    assert names == [s.name for s in topological()]
    assert "skipped" in rows[0] and "runs: never completed" in rows[1]


def test_cli_run_with_every_stage_up_to_date_starts_no_prefect_server(settings, tmp_path):
    for stage in topological():
        _complete(settings, stage.name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERIALGEN_", "PREFECT_API_URL"))}
    proc = subprocess.run([sys.executable, "-m", "serialgen.cli", "--lake", settings.lake, "run"],
                          capture_output=True, text=True, env={**env, "COLUMNS": "200"}, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "temporary server" not in proc.stdout + proc.stderr
    statuses = [line.split("│")[2].strip() for line in proc.stdout.splitlines()
                if line.startswith("│") and line.split("│")[1].strip() in BY_NAME]
    assert statuses == ["skipped"] * len(topological())


def test_a_new_checkpoint_reruns_the_stages_that_load_it_and_nothing_else(settings):
    for stage in topological():
        _complete(settings, stage.name)
    assert not any(should_run(settings, s.name)[0] for s in topological())
    trained = _complete(settings, "train-standardizer")
    reruns = {s.name: should_run(settings, s.name) for s in topological() if should_run(settings, s.name)[0]}
    assert reruns == {"standardize": (True, f"new checkpoint from {trained}"),
                      "evaluate": (True, f"new checkpoint from {trained}")}


def test_a_training_run_that_leaves_the_weights_unchanged_reruns_nothing(settings, tmp_path):
    """A model's version follows its bytes: a train-standardizer run that resumed a finished training and wrote
    the same weights again is no new checkpoint; one that changed them is."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.safetensors").write_bytes(b"trained")
    for stage in topological():
        _complete(settings, stage.name, model=model if stage.name == "train-standardizer" else None)
    (model / "weights.safetensors").write_bytes(b"trained")          # resumed at the last step: same bytes
    _complete(settings, "train-standardizer", model=model)
    assert not any(should_run(settings, s.name)[0] for s in topological())
    (model / "weights.safetensors").write_bytes(b"trained further")
    retrained = _complete(settings, "train-standardizer", model=model)
    reruns = {s.name: should_run(settings, s.name) for s in topological() if should_run(settings, s.name)[0]}
    assert reruns == {"standardize": (True, f"new checkpoint from {retrained}"),
                      "evaluate": (True, f"new checkpoint from {retrained}")}


def test_every_dag_stage_flow_takes_the_dag_parameters():
    import importlib
    import inspect

    for stage in STAGES:
        module, function = stage.flow.split(":")
        flow = getattr(importlib.import_module(f"serialgen.flows.{module}"), function)
        assert {"lake", "profile", "config"} <= set(inspect.signature(flow.fn).parameters), stage.name
