"""Process-wide runtimes: a local or remote Ray, and Prefect defaults (ephemeral, private, cached).

Nothing here is needed by library code that runs without Ray or Prefect.
"""

from __future__ import annotations

import os
from pathlib import Path

from serialgen.config import RaySettings, Settings

#: Prefect settings applied unless the user already set them: no telemetry, results persisted
#: (task caching only works with persisted results) under the lake when it is local.
PREFECT_DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
}


def configure_prefect(settings: Settings) -> None:
    """Set Prefect's environment defaults; call before importing prefect's flows."""
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    lake = settings.open_lake()
    if lake.is_local:
        os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(Path(lake.uri).resolve() / "_prefect" / "results"))


def init_ray(settings: RaySettings) -> None:
    """Start (or connect to) Ray once per process: local with explicit CPUs, or ``settings.address``."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    if settings.address:
        ray.init(address=settings.address, log_to_driver=False)
        return
    ray.init(
        num_cpus=settings.num_cpus or os.cpu_count(),
        include_dashboard=False,
        object_store_memory=settings.object_store_memory_mb * 1024 * 1024,
        log_to_driver=False,
        configure_logging=False,
        # Workers must import serialgen from this checkout, even without an install.
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}},
    )
