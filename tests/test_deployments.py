"""prefect.yaml stays deployable: every entrypoint imports, is a flow, and takes the parameters given."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

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
    from serialgen.runtime import PREFECT_DEFAULTS

    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    for deployment in config["deployments"]:
        assert deployment["work_pool"]["job_variables"]["env"] == PREFECT_DEFAULTS, deployment["name"]
