"""Shared fixtures: a fresh lake and tiny-profile settings per test."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from serialgen.config import Settings, load_settings  # noqa: E402
from serialgen.storage import Lake  # noqa: E402


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    for var in [v for v in os.environ if v.startswith("SERIALGEN_")]:
        monkeypatch.delenv(var)
    return load_settings(lake=str(tmp_path / "lake"))


@pytest.fixture
def lake(settings) -> Lake:
    return settings.open_lake()


@pytest.fixture(scope="session")
def synthetic_lake(tmp_path_factory, ray_local) -> Settings:
    """A real tiny synthetic lake (bpy renders, Ray compositing): 12 procedural characters x 3 poses; the hash
    split at 0.62 holds 5 of them out. Shared by the probes' and the base model's tests: each trains into its own
    folder of the lake's _checkpoints and adds its own `runs` rows."""
    from serialgen.stages.assets import run_assets
    from serialgen.stages.composite import run_composite
    from serialgen.stages.render import run_render

    folder = tmp_path_factory.mktemp("synthetic")
    settings = load_settings(lake=str(folder / "lake"), **{
        "assets": {"procedural_characters": 12, "motion_variants": 1},
        "render": {"poses_per_character": 3, "views_per_pose": 1, "samples": 2},
        "composite": {"backgrounds_procedural": 6, "test_fraction": 0.62},
        "probes": {"identity_steps": 150, "attribute_steps": 150}})
    run_assets(settings)
    run_render(settings)
    run_composite(settings)
    return settings


@pytest.fixture(scope="session")
def tiny_preprocessors(tmp_path_factory):
    """Tiny mask, detector and pose models trained and exported once (ONNX, the real export path); tests copy or
    point at them, never write into the folder."""
    from standardize_data import train_tiny_preprocessors

    folder = tmp_path_factory.mktemp("preprocessors")
    train_tiny_preprocessors(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory):
    """A random SDXL-shaped set (SD VAE) in SDXL base's layout, for the loader and stock diffusers' IP-Adapter
    path; the offline profiles generate with the base `train-base` trains, never with this."""
    from serialgen.models.sdxl import write_sdxl_folders

    return write_sdxl_folders(tmp_path_factory.mktemp("tiny-sdxl"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models are op-overhead bound: one intra-op thread is faster, and immune to a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API (SQLite) for every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def prefect_api(prefect_harness) -> str:
    """The session's Prefect API URL, for `serialgen` subprocesses that need not start a temporary server."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the session, sized for a 2-core machine."""
    import ray

    from serialgen.config import RaySettings
    from serialgen.runtime import init_ray

    init_ray(RaySettings(num_cpus=2))
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto in server mode) on localhost; yields (endpoint, storage_options)."""
    import socket
    import subprocess
    import sys
    import time

    import boto3

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    options = {"aws_endpoint": endpoint, "aws_access_key_id": "test", "aws_secret_access_key": "test",
               "aws_region": "us-east-1", "allow_http": "true"}
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                          region_name="us-east-1")
    for _ in range(100):
        try:
            client.create_bucket(Bucket="lake")
            break
        except Exception:
            time.sleep(0.2)
    else:
        proc.kill()
        raise RuntimeError("moto server did not start")
    yield endpoint, options
    proc.terminate()
    proc.wait(10)
