"""Resilience of the stages: killed Ray workers, a driver killed inside a commit, a killed training run,
concurrent writers, an older lake.

The guarantee under test: every planned row lands exactly once (keyed upserts, retried chunks), no
row is lost, and a lake written by another schema is refused with one clear line.
Each test prints the rows it expected and found (``pytest -s``).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import lance
import numpy as np
import pytest

from composite_data import figure_keypoints, figure_rgba, render_row, write_characters
from personalizer_data import make_real_and_standardized
from render_data import character_glbs, fill_lake
from resilience_data import (
    TINY,
    cli_env,
    kill,
    kill_inside_commit_then_rerun,
    planned_keys,
    ray_worker_pids,
    show,
    table_keys,
    wait_for,
)
from serialgen.compositing.pairs import make_pair_id
from serialgen.config import load_settings
from serialgen.storage import Lake, SchemaMismatchError
from serialgen.storage.lake import conform
from serialgen.storage.schemas import spec
from serialgen.training.personalizer_data import build_pairs


@pytest.fixture(scope="module")
def glbs() -> dict[str, bytes]:
    return character_glbs([3, 11])


def render_settings(tmp_path, **render):
    return load_settings(lake=str(tmp_path / "lake"), ray={"num_cpus": 2},
                         render={**TINY["render"], **render})


@pytest.mark.slow
def test_render_worker_killed_mid_run_every_planned_row_once(tmp_path, glbs, ray_local):
    from serialgen.stages.render import run_render

    settings = render_settings(tmp_path, poses_per_character=6, views_per_pose=2, chunk_size=2, workers=2)
    lake = settings.open_lake()
    fill_lake(lake, glbs, 6)
    planned = planned_keys(lake, 6, 2)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(run_render, settings)
        wait_for(lambda: lake.count("renders") >= 2 or future.done(), 120, "the first renders")
        busy = []                            # an actor rendering a chunk (with more queued), not one starting

        def found_busy_actor() -> bool:
            busy[:] = ray_worker_pids("RenderActor.render_chunk")
            return bool(busy) or future.done()

        wait_for(found_busy_actor, 30, "a busy render actor", poll=0.02)
        assert busy and not future.done(), "the render finished before a worker could be killed"
        kill(busy[0])
        report = future.result(timeout=240)
    keys = table_keys(lake, "renders")
    show("render: one RenderActor SIGKILLed mid-run", {
        "renders": (len(planned), len(keys)), "distinct renders": (len(planned), len(set(keys))),
        "standards": (2, lake.count("standards")), "render errors": (0, lake.count("errors")),
        "chunks retried": (">= 1", report.retried), "dead workers replaced": (1, report.workers_replaced)})
    assert len(keys) == len(set(keys)) == 24 and set(keys) == planned
    assert lake.count("standards") == 2 and lake.count("errors") == 0
    assert report.retried >= 1 and (report.rendered, report.failed) == (24, 0)
    assert report.workers_replaced == 1        # the dead actor was replaced, not restarted or fed chunks


def test_render_item_failing_in_bpy_goes_to_errors_without_retry(tmp_path, glbs, ray_local):
    """A bad input is not a lost worker: no resubmission, straight to `errors`, the stage goes on."""
    from serialgen.stages.render import run_render

    settings = render_settings(tmp_path)
    lake = settings.open_lake()
    fill_lake(lake, {"proc-0003": glbs["proc-0003"], "zz-broken": b"glTF but not really"}, 2)
    report = run_render(settings)
    errors = sorted(lake.read("errors", columns=["key"]).column("key").to_pylist())
    show("render: one unreadable character", {"renders": (2, lake.count("renders")),
                                              "errors": (3, len(errors)), "chunks retried": (0, report.retried)})
    assert report.retried == 0 and lake.count("renders") == 2
    assert len(errors) == 3 and all(e.startswith("zz-broken/") for e in errors)


@pytest.mark.slow
def test_composite_worker_killed_mid_run_every_pair_once(tmp_path, ray_local):
    from serialgen.stages.composite import run_composite

    settings = load_settings(lake=str(tmp_path / "lake"), ray={"num_cpus": 2},
                             composite={"backgrounds_procedural": 2, "batch_size": 2, "write_rows": 2})
    lake = settings.open_lake()
    write_characters(lake, n_characters=4, poses=12)
    renders = lake.read("renders", columns=["character_id", "pose_id", "view_id"]).to_pylist()
    expected = {make_pair_id(r["character_id"], r["pose_id"], r["view_id"], 0) for r in renders}
    killed = []

    def kill_a_compositing_actor():
        wait_for(lambda: lake.count("pairs") >= 2, 180, "the first pairs")
        victims = ray_worker_pids("_CompositeActor")
        if victims and lake.count("pairs") < len(expected):
            kill(victims[0])
            killed.append(lake.count("pairs"))

    killer = threading.Thread(target=kill_a_compositing_actor, daemon=True)
    killer.start()
    report = run_composite(settings)
    killer.join(5)
    keys = [k for (k,) in table_keys(lake, "pairs")]
    show("composite: the compositing actor SIGKILLed mid-run", {
        "pairs": (len(expected), len(keys)), "distinct pairs": (len(expected), len(set(keys))),
        "composite errors": (0, lake.count("errors")), "pairs in the lake at the kill": ("< 48", killed)})
    assert killed, "the composite finished before its actor could be killed"
    assert len(keys) == len(set(keys)) == 48 and set(keys) == expected
    assert lake.count("errors") == 0 and report.errors == 0


@pytest.mark.slow
def test_composite_killed_inside_a_pairs_commit_then_rerun_gives_each_planned_pair_once(tmp_path, s3_server,
                                                                                        prefect_api):
    """`serialgen composite` on an S3 lake, SIGKILLed with its Ray at the manifest PUT of its third `pairs`
    commit (the table's creation, one committed block of pairs, then this one: its data file and transaction
    uploaded, its manifest never sent). The rerun composites exactly the missing pairs."""
    endpoint, options = s3_server
    lake_uri = "s3://lake/composite-killed"
    lake = Lake(lake_uri, options)
    write_characters(lake, n_characters=3, poses=4)
    expected = {make_pair_id(c, p, v, 0) for c, p, v in table_keys(lake, "renders")}
    sections = {"ray": {"num_cpus": 2}, "composite": {"backgrounds_procedural": 2, "batch_size": 1, "write_rows": 1}}
    killed = kill_inside_commit_then_rerun(endpoint, lake, sections, tmp_path / "composite.yaml", "composite",
                                           "pairs", commit=3, prefect_api=prefect_api)
    keys = [k for (k,) in table_keys(lake, "pairs")]
    show("composite: the driver SIGKILLed inside its third `pairs` commit (S3 lake), then rerun", {
        "pairs version at the kill": (2, killed.version), "pairs at the kill": ("1 .. 11", killed.rows),
        "uploaded, uncommitted data files": (">= 1", len(killed.uncommitted_files)), "pairs": (len(expected), len(keys)),
        "distinct pairs": (len(expected), len(set(keys))), "errors": (0, lake.count("errors"))})
    assert killed.version == 2 and 0 < killed.rows < len(expected) and killed.uncommitted_files
    assert len(keys) == len(set(keys)) == len(expected) == 12 and set(keys) == expected
    assert lake.count("errors") == 0


def _same_keys_writer(uri: str, barrier, rounds: int) -> None:
    lake = Lake(uri)
    for r in range(rounds):
        barrier.wait()                       # both processes insert round r's new keys at the same moment
        lake.upsert("errors", [{"stage": "render", "key": f"r{r}/k{i}", "reason": str(os.getpid())}
                               for i in range(5)], f"writer-{os.getpid()}")


@pytest.mark.slow
def test_two_processes_upserting_the_same_new_keys_at_once_store_each_once(tmp_path):
    """Without primary-key metadata on the key columns Lance commits both inserts: 245 rows for 125 keys."""
    uri, rounds = str(tmp_path / "lake"), 25
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_same_keys_writer, args=(uri, barrier, rounds)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    keys = Lake(uri).read("errors").column("key").to_pylist()
    show("lake: two processes upsert the same new keys at once (25 rounds x 5 keys)", {
        "rows": (rounds * 5, len(keys)), "distinct keys": (rounds * 5, len(set(keys))),
        "writer exit codes": ([0, 0], [p.exitcode for p in procs])})
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(keys) == len(set(keys)) == rounds * 5


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_render_processes_at_once_write_every_row_once(tmp_path, glbs, ray_local):
    """Two drivers on one Ray cluster render the same plan at the same time into one lake."""
    import ray

    settings = render_settings(tmp_path, poses_per_character=4)
    lake = settings.open_lake()
    fill_lake(lake, glbs, 4)
    planned = planned_keys(lake, 4, 1)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SERIALGEN_")},
           "SERIALGEN_RAY__ADDRESS": ray.get_runtime_context().gcs_address,
           "SERIALGEN_RENDER": json.dumps(settings.render.model_dump())}
    script = ("import sys; from serialgen.config import load_settings; from serialgen.stages.render import run_render; "
              "r = run_render(load_settings(lake=sys.argv[1])); print(r.rendered, r.skipped, r.failed)")
    procs = [subprocess.Popen([sys.executable, "-c", script, settings.lake], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    keys, standards = table_keys(lake, "renders"), table_keys(lake, "standards")
    counts = [tuple(map(int, out.split())) for out, _ in outputs]
    show("render: two processes render the same lake at once", {
        "renders": (len(planned), len(keys)), "distinct renders": (len(planned), len(set(keys))),
        "standards": (2, len(standards)), "errors": (0, lake.count("errors")),
        "(rendered, skipped, failed) per process": ("sum rendered >= 8", counts)})
    assert len(keys) == len(set(keys)) == 8 and set(keys) == planned
    assert sorted(standards) == [("proc-0003",), ("proc-0011",)] and lake.count("errors") == 0
    assert sum(c[0] for c in counts) >= 8 and all(c[2] == 0 for c in counts)


def test_renders_table_of_an_older_schema_is_refused_by_name_and_left_untouched(tmp_path, glbs):
    from serialgen.stages.render import run_render

    settings = render_settings(tmp_path)
    lake = settings.open_lake()
    fill_lake(lake, glbs, 2)
    rng = np.random.default_rng(0)
    kp = figure_keypoints(rng, 64, 96)
    row = render_row("proc-0003", "pose-000", 0, figure_rgba(kp, 64, 96, rng), kp)
    old_rows = conform(spec("renders"), [row], "an-older-serialgen").drop_columns(["camera"])
    lance.write_dataset(old_rows, lake.table_uri("renders"))     # what a serialgen before `camera` wrote
    before = lance.dataset(lake.table_uri("renders"))
    with pytest.raises(SchemaMismatchError) as caught:
        run_render(settings)
    message = str(caught.value)
    after = lance.dataset(lake.table_uri("renders"))
    show("render over a `renders` table without `camera`", {
        "error": ("SchemaMismatchError naming 'renders' and 'camera'", message[:90] + "..."),
        "renders version": (before.version, after.version), "renders rows": (1, after.count_rows())})
    assert "'renders'" in message and "camera" in message and "\n" not in message
    assert after.version == before.version and after.to_table().equals(before.to_table())
    run = lake.read("runs", filter="stage = 'render'").to_pylist()[0]
    assert run["status"] == "failed" and "renders" in run["metrics"]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_personalizer_training_killed_then_rerun_resumes_to_the_planned_step(tmp_path, tiny_sdxl, prefect_api):
    """SIGKILL `serialgen train-personalizer` after its first checkpoint; the rerun resumes from it (not from 0)
    and ends at the planned step with every personalizer pair stored once."""
    lake_dir = tmp_path / "lake"
    settings = load_settings(lake=str(lake_dir))
    make_real_and_standardized(settings.open_lake())
    env = cli_env(prefect_api)
    env.update(SERIALGEN_PERSONALIZER__STEPS="16", SERIALGEN_PERSONALIZER__CHECKPOINT_EVERY="2",
               SERIALGEN_PERSONALIZER__BATCH_SIZE="2", SERIALGEN_PERSONALIZER__MODEL_DIR=str(tiny_sdxl[0]),
               SERIALGEN_PERSONALIZER__IMAGE_ENCODER_DIR=str(tiny_sdxl[1]))
    command = [sys.executable, "-m", "serialgen.cli", "--lake", str(lake_dir), "train-personalizer"]
    run_dir = lake_dir / "_checkpoints" / "personalizer" / "two_stage"
    proc = subprocess.Popen(command, env=env, cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: any(run_dir.glob("checkpoint-*")) or proc.poll() is not None, 600, "a first checkpoint")
        assert proc.poll() is None, "training finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    at_kill = max(int(p.name.split("-")[1]) for p in run_dir.glob("checkpoint-*"))
    rerun = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    lake = settings.open_lake()
    runs = lake.read("runs", filter="stage = 'train-personalizer'").to_pylist()
    done = [r for r in runs if r["status"] == "completed"]
    metrics = json.loads(done[0]["metrics"])
    pairs = lake.read("personalizer_pairs", columns=["mode", "pair_id"]).to_pylist()
    show("train-personalizer: SIGKILL after a checkpoint, then rerun", {
        "step at kill (last checkpoint)": (">= 2", at_kill), "resumed from": (at_kill, metrics["resumed_from"]),
        "final step": (16, metrics["step"]), "pairs (distinct)": (len(pairs), len({tuple(p.values()) for p in pairs})),
        "runs completed": (1, len(done))})
    assert len(done) == 1 and metrics["step"] == 16
    assert metrics["resumed_from"] == at_kill >= 2
    planned, _ = build_pairs(lake, "two_stage")
    assert sorted(p["pair_id"] for p in pairs) == sorted(p["pair_id"] for p in planned)  # each planned pair once
