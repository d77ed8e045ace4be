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
def prefect_harness():
    """One temporary Prefect API (SQLite) for every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the session, sized for a 2-core machine."""
    import ray

    from serialgen.config import RaySettings
    from serialgen.runtime import init_ray

    init_ray(RaySettings(num_cpus=2))
    yield
    ray.shutdown()
