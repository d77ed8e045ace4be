"""Process-wide runtimes: a local or remote Ray, and Prefect defaults (ephemeral, private, cached).

Nothing here is needed by library code that runs without Ray or Prefect.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

from serialgen.config import RaySettings

#: Prefect settings applied unless the user already set them: no telemetry, results persisted (task caching only
#: works with persisted results). Results stay where Prefect keeps them, ``$PREFECT_HOME/storage``
#: (``PREFECT_LOCAL_STORAGE_PATH`` moves them), for CLI and deployment runs alike.
PREFECT_DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
    # The ephemeral API starts in a subprocess; on a busy 2-core machine that can take longer than the default 20 s.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


#: Library settings every run gets: the Hugging Face libraries never reach for the hub (everything is local)
#: and draw no per-file progress bars into worker logs.
LIBRARY_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}


def configure_prefect() -> None:
    """Set Prefect's (and the model libraries') environment defaults; call before importing prefect's flows."""
    for key, value in {**PREFECT_DEFAULTS, **LIBRARY_DEFAULTS}.items():
        os.environ.setdefault(key, value)


_RAY_LOCK = threading.Lock()
#: CPUs left beside an actor pool for Ray Data's own (light) read and scheduling tasks.
READ_CPUS = 0.5


def actor_cpus(workers: int, cpus: float) -> float:
    """CPUs per actor of a pool of ``workers``: 1, unless the pool would leave no room for a Ray Data task beside it."""
    return min(1.0, (cpus - READ_CPUS) / workers)


class _DropMessages(logging.Filter):
    """Drops records that start with one of ``prefixes``: notices that read like failures but are not."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def _quiet_ray_logs() -> None:
    """Keep worker logs to what matters: Ray Data's per-dataset INFO lines stay in its session log file;
    the SIGTERM notice (DAG stages start Ray from a task thread; Prefect owns signal handling) and the
    token-authentication announcement are dropped."""
    import ray.data  # noqa: F401  (configures the "ray.data" logger)
    from ray.util.debug import log_once

    for handler in logging.getLogger("ray.data").handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)
    log_once("ray_data_progress_manager_disabled")   # progress is ours (serialgen.progress), not Ray's tqdm
    # lance-ray 0.5.0 still passes `ray_remote_args` to Ray 2.60 (pinned pair, see pyproject.toml).
    warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated", module="lance_ray")
    # Ray's default for a local cluster (token authentication on) is what we want; its announcement is noise.
    for name, prefix in (("ray._private.worker", "SIGTERM handler is not set"),
                         ("ray._private.authentication.authentication_token_setup", "Token authentication is enabled")):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(prefix))


def init_ray(settings: RaySettings) -> None:
    """Start (or connect to) Ray once per process: local with explicit CPUs, or ``settings.address``.
    Thread-safe: stages of the DAG may start it from task threads."""
    with _RAY_LOCK:
        _init_ray(settings)


def _init_ray(settings: RaySettings) -> None:
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    _quiet_ray_logs()
    if settings.address:
        ray.init(address=settings.address, log_to_driver=False)
        return
    with warnings.catch_warnings():
        # Ray starts its processes by fork+exec; no Lance state is used in the child.
        warnings.filterwarnings("ignore", message="lance is not fork-safe")
        _start_local_ray(settings)


def _start_local_ray(settings: RaySettings) -> None:
    import ray

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


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op torch threads. Small nets are op-overhead bound: one thread is faster,
    and on a busy machine several threads spin against each other (measured: 0.085 s vs 1.06 s per probe step)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
