"""Runtimes: a local Ray sized explicitly, and Prefect defaults that keep results and telemetry local."""

from __future__ import annotations

import os

import ray

from serialgen.runtime import configure_prefect


def test_local_ray_uses_the_configured_cpus(ray_local):
    assert ray.cluster_resources()["CPU"] == 2

    @ray.remote
    def square(x: int) -> int:
        import serialgen  # noqa: F401  (workers import the package from this checkout)

        return x * x

    assert ray.get([square.remote(i) for i in range(4)]) == [0, 1, 4, 9]


def test_configure_prefect_sets_private_persisted_defaults(monkeypatch):
    for var in ("DO_NOT_TRACK", "PREFECT_SERVER_ANALYTICS_ENABLED", "PREFECT_RESULTS_PERSIST_BY_DEFAULT",
                "PREFECT_LOCAL_STORAGE_PATH"):
        monkeypatch.delenv(var, raising=False)
    configure_prefect()
    assert os.environ["DO_NOT_TRACK"] == "1"
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert os.environ["PREFECT_RESULTS_PERSIST_BY_DEFAULT"] == "true"
    # One place for persisted results, CLI and deployment runs alike: Prefect's own ($PREFECT_HOME/storage).
    assert "PREFECT_LOCAL_STORAGE_PATH" not in os.environ
