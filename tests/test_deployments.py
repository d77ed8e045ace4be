"""prefect.yaml stays deployable: every entrypoint imports, is a flow, and takes the parameters given."""

from __future__ import annotations

import importlib.util
import inspect
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
    import os
    import subprocess
    import sys
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL
    from prefect.states import Completed

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "SERIALGEN_HOME": str(ROOT)}
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="serialgen-process", type="process"), overwrite=True)
    proc = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

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
