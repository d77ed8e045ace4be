"""prefect.yaml stays deployable: every entrypoint imports, is a flow, and takes the parameters given;
its triggers fire on a real server, and a real process worker runs its deployments."""

from __future__ import annotations

import importlib.util
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prefect import Flow

ROOT = Path(__file__).resolve().parent.parent


def load_entrypoint(entrypoint: str) -> Flow:
    path, name = entrypoint.split(":")
    spec = importlib.util.spec_from_file_location(f"entry_{Path(path).stem}", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def deploy(*which: str) -> None:
    """Create the process work pool and run ``prefect deploy WHICH`` from the repository root against the
    session's Prefect server (``prefect_harness``)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "SERIALGEN_HOME": str(ROOT)}
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="serialgen-process", type="process"), overwrite=True)
    proc = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", *which], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_every_deployment_entrypoint_and_parameters_match_its_flow():
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = config["deployments"]
    assert {d["name"] for d in deployments} >= {"nightly", "assets", "render", "composite", "train-standardizer"}
    for deployment in deployments:
        flow = load_entrypoint(deployment["entrypoint"])
        assert isinstance(flow, Flow), deployment["entrypoint"]
        accepted = inspect.signature(flow.fn).parameters
        unknown = set(deployment.get("parameters", {})) - set(accepted)
        assert not unknown, f"{deployment['name']}: parameters {unknown} not in {flow.name}{tuple(accepted)}"
        assert deployment["work_pool"]["name"] == "serialgen-process"
    nightly = next(d for d in deployments if d["name"] == "nightly")
    assert nightly["schedules"][0]["cron"] == "0 2 * * *"
    assert nightly["concurrency_limit"] == 1


def test_deployment_runs_get_the_prefect_settings_of_cli_runs():
    from serialgen.runtime import LIBRARY_DEFAULTS, PREFECT_DEFAULTS

    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    for deployment in config["deployments"]:
        assert deployment["work_pool"]["job_variables"]["env"] == {**PREFECT_DEFAULTS, **LIBRARY_DEFAULTS}, \
            deployment["name"]


def test_triggered_runs_work_on_the_triggering_runs_lake_profile_and_config():
    """The server renders a trigger's parameters from the event's flow run the way this test does (the same
    hydration): a triggered standardize or evaluate run gets the triggering run's values, an unset one stays null."""
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    triggered = {d["name"]: t["parameters"] for d in config["deployments"] for t in d.get("triggers", [])}
    assert set(triggered) == {"standardize", "evaluate"}
    run_parameters = {"lake": "/data/other-lake", "profile": None, "config": "/etc/serialgen/sd15.yaml"}
    context = HydrationContext(render_jinja=True, raise_on_error=True,
                               jinja_context={"flow_run": {"parameters": run_parameters}})
    for name, parameters in triggered.items():
        assert hydrate(parameters, context) == run_parameters, name


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_completed_training_deployments_trigger_standardize_and_evaluate_on_a_real_server(prefect_harness, tmp_path):
    """`prefect deploy --all` against a running Prefect server, then a train-standardizer (train-personalizer)
    deployment run reaching Completed makes the server schedule a standardize (evaluate) run; a run of another
    deployment completing schedules nothing."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.states import Completed

    deploy("--all")
    with get_client(sync_client=True) as client:
        deployments = {d.name: d for d in client.read_deployments()}

        def runs_of(name: str) -> int:  # runs the schedules create do not count
            return sum(r.deployment_id == deployments[name].id and not r.auto_scheduled
                       for r in client.read_flow_runs())

        def complete(name: str) -> None:
            run = client.create_flow_run_from_deployment(deployments[name].id, parameters={"lake": lake})
            client.set_flow_run_state(run.id, Completed(), force=True)

        def wait_for_run(name: str, before: int) -> bool:
            deadline = time.time() + 60
            while time.time() < deadline:
                if runs_of(name) > before:
                    return True
                time.sleep(1)
            return False

        def triggered_parameters(name: str) -> dict:
            run = next(r for r in client.read_flow_runs()
                       if r.deployment_id == deployments[name].id and not r.auto_scheduled)
            return {key: run.parameters.get(key) for key in ("lake", "profile", "config")}

        lake = str(tmp_path / "another-lake")   # not the deployments' default (./lake)
        before = {name: runs_of(name) for name in ("standardize", "evaluate")}
        complete("composite")
        complete("train-standardizer")
        assert wait_for_run("standardize", before["standardize"])
        complete("train-personalizer")
        assert wait_for_run("evaluate", before["evaluate"])
        time.sleep(3)
        # Exactly one each: the composite run triggered nothing.
        assert runs_of("standardize") == before["standardize"] + 1
        assert runs_of("evaluate") == before["evaluate"] + 1
        # Each works on the lake of the run that triggered it.
        for name in ("standardize", "evaluate"):
            assert triggered_parameters(name) == {"lake": lake, "profile": None, "config": None}, name


QUEUE = "worker-test"


@pytest.mark.slow
def test_a_process_worker_runs_a_deployment_from_prefect_yaml_on_the_runs_lake(prefect_harness, tmp_path):
    """`prefect worker start --run-once` (a real process worker, started outside the repository) runs an
    ingest-real deployment run: the pull step puts the run in the repository (`SERIALGEN_HOME` as `prefect
    deploy` saw it: Prefect renders `{{ $VAR }}` when it deploys, so the worker needs no SERIALGEN_HOME), where the
    run's relative lake path resolves; the run gets the job env of prefect.yaml (results persisted under the
    worker's `$PREFECT_HOME/storage`, which only `PREFECT_RESULTS_PERSIST_BY_DEFAULT` there makes happen), the
    library's log lines reach the run's log, and the images land in the lake the run was given."""
    import numpy as np
    from PIL import Image
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.settings import PREFECT_API_URL

    from resilience_data import cli_env
    from serialgen.storage import Lake

    deploy("--name", "ingest-real")
    with get_client(sync_client=True) as client:
        client.create_work_queue(QUEUE, work_pool_name="serialgen-process")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (48, 32, 3), np.uint8)).save(images / f"image{i}.png")
    # Not the deployment's default lake (./lake), and given relative to SERIALGEN_HOME: found only from there.
    lake = tmp_path / "another-lake"
    parameters = {"lake": os.path.relpath(lake, ROOT), "images": str(images)}
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("ingest-real/ingest-real")
        # Its own queue: runs other tests left scheduled in the pool (triggered ones) are not this worker's.
        run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters, work_queue_name=QUEUE)
    assert deployment.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]
    home, elsewhere = tmp_path / "prefect-home", tmp_path / "worker-cwd"
    elsewhere.mkdir()
    env = {**cli_env(PREFECT_API_URL.value()), "PREFECT_HOME": str(home)}
    worker = subprocess.run([sys.executable, "-m", "prefect", "worker", "start", "--pool", "serialgen-process",
                             "--work-queue", QUEUE, "--run-once"],
                            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run.id).state
        logs = [log.message for log in client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))]
    assert worker.returncode == 0, worker.stdout[-2000:] + worker.stderr[-2000:]
    assert state.is_completed(), f"{state.type}: {state.message}\n{worker.stderr[-3000:]}"
    assert Lake(str(lake)).count("real_images") == 3
    assert list((home / "storage").glob("*")), "no result persisted under the worker's $PREFECT_HOME/storage"
    assert "ingest-real: 3/3 files (100%)" in "\n".join(logs), logs   # a serialgen.progress line
