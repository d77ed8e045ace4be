"""The main job end to end, as a user runs it: `serialgen run` over the whole DAG (tiny profile, small
sizes) killed during render and rerun to completion, then a rerun that skips everything, then one
standardizer setting changed: exactly the stages that load the standardizer's outputs rerun."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from resilience_data import cli_command, cli_env, planned_keys, show, table_keys, wait_for
from serialgen.compositing.pairs import make_pair_id
from serialgen.dag import topological
from serialgen.storage import Lake

#: The demo's shape at smaller sizes: 10 characters (2 held out), 1 pose each, few steps everywhere (sampling too).
SMALL = {
    "assets": {"procedural_characters": 10, "motion_variants": 1},
    "render": {"poses_per_character": 1, "views_per_pose": 1, "samples": 2, "chunk_size": 1, "workers": 1},
    "composite": {"backgrounds_procedural": 2},
    "standardizer": {"steps": 4, "validation_pairs": 1, "checkpoint_every": 2, "num_workers": 0, "inference_steps": 2},
    "preprocessing": {"mask_steps": 4, "pose_steps": 4, "detector_steps": 4},
    "probes": {"identity_steps": 4, "attribute_steps": 4},
    "ingest": {"procedural_images": 8},
    "personalizer": {"steps": 2, "batch_size": 2, "inference_steps": 2},
    "base_model": {"steps": 2, "batch_size": 2},
    "ray": {"num_cpus": 2},
}


def _run(lake: Path, config: Path, cwd: Path) -> tuple[dict[str, str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERIALGEN_", "PREFECT_API_URL"))}
    proc = subprocess.run([sys.executable, "-m", "serialgen.cli", "--lake", str(lake), "--config", str(config), "run"],
                          capture_output=True, text=True, env={**env, "COLUMNS": "200"}, cwd=cwd, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    names = {s.name for s in topological()}
    statuses = {}
    for line in proc.stdout.splitlines():   # the summary table: │ stage │ status │ why │ seconds │
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 3 and cells[1] in names:
            statuses[cells[1]] = cells[2]
    return statuses, proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_main_job_killed_then_rerun_completes_the_dag_then_skips_then_reruns_only_what_a_new_standardizer_touches(
        tmp_path):
    """`serialgen run` SIGKILLed (its process group) during render; the rerun completes every stage with exactly
    the planned rows; a third run skips everything; a standardizer setting changed reruns exactly its readers."""
    lake, config = tmp_path / "lake", tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(SMALL))
    stages = [s.name for s in topological()]
    table = Lake(str(lake))
    proc = subprocess.Popen(cli_command(str(lake), config, "run"), env=cli_env(), cwd=tmp_path,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: proc.poll() is not None or table.count("renders") >= 3, 300, "3 renders", poll=0.2)
        assert proc.poll() is None, "the run finished before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    at_kill = table.count("renders")

    statuses, out = _run(lake, config, tmp_path)
    assert statuses == {name: "skipped" if name == "assets" else "ran" for name in stages}
    report = Path(re.search(r"^report: (\S+)$", out, re.M).group(1))
    assert report.is_file() and report.read_text().lstrip().lower().startswith("<!doctype html")
    planned = planned_keys(table, 1, 1)
    renders, pairs = table_keys(table, "renders"), table_keys(table, "pairs")
    expected_pairs = {(make_pair_id(*key, 0),) for key in planned}
    show("`serialgen run` SIGKILLed during render, then rerun", {
        "renders at the kill": ("3 .. 9", at_kill), "renders": (len(planned), len(renders)),
        "distinct renders": (len(planned), len(set(renders))), "pairs": (len(expected_pairs), len(pairs)),
        "distinct pairs": (len(expected_pairs), len(set(pairs))), "errors": (0, table.count("errors"))})
    assert 3 <= at_kill < 10 and len(planned) == 10  # 10 characters x 1 pose x 1 view
    assert len(renders) == len(set(renders)) == 10 and set(renders) == planned
    assert len(pairs) == len(set(pairs)) == 10 and set(pairs) == expected_pairs
    assert table.count("errors") == 0
    tables = table.tables()  # {name: (rows, version)}
    assert {name: tables[name][0] for name in ("characters", "standards")} == {"characters": 10, "standards": 10}
    assert all(tables[name][0] > 0 for name in ("real_images", "standardized", "personalizer_pairs", "generations",
                                                "evaluations"))
    runs = table.read("runs", columns=["stage", "status"]).to_pylist()
    assert {"stage": "render", "status": "running"} in runs  # the killed run's row stays as evidence

    statuses, out = _run(lake, config, tmp_path)
    assert statuses == {name: "skipped" for name in stages}
    after = Lake(str(lake)).tables()
    assert {k: v for k, v in after.items() if k != "runs"} == {k: v for k, v in tables.items() if k != "runs"}

    config.write_text(yaml.safe_dump({**SMALL, "standardizer": {**SMALL["standardizer"], "learning_rate": 5e-4}}))
    statuses, _ = _run(lake, config, tmp_path)
    reran = {name for name, status in statuses.items() if status == "ran"}
    assert reran == {"train-standardizer", "standardize", "train-personalizer", "evaluate"}
    assert set(statuses) == set(stages)
