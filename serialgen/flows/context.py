"""What every flow does first, however it was started (CLI, deployment worker, Python): resolve the
settings and send the library's ``serialgen.*`` log records to the flow run's log in the dashboard."""

from __future__ import annotations

import logging

from prefect.context import get_run_context
from prefect.exceptions import MissingContextError
from prefect.logging.handlers import APILogHandler

from serialgen.config import Settings, load_settings
from serialgen.runtime import configure_prefect


class _InRunOnly(logging.Filter):
    """Library code also logs outside any run (tests, scripts): those records stay local."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            get_run_context()
        except MissingContextError:
            return False
        return True


def _route_library_logs() -> None:
    logger = logging.getLogger("serialgen")
    if not any(isinstance(h, APILogHandler) for h in logger.handlers):
        handler = APILogHandler()
        handler.addFilter(_InRunOnly())
        logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)


def flow_settings(lake: str | None, profile: str | None, config: str | None) -> Settings:
    """The settings of a flow run, with the same Prefect defaults and log routing as a CLI run."""
    settings = load_settings(config, profile, lake=lake)
    configure_prefect()
    _route_library_logs()
    return settings
