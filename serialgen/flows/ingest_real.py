"""Prefect flow ``ingest-real``: real image files / lists / URIs -> `real_images`."""

from __future__ import annotations

from typing import Any

from prefect import flow

from serialgen.flows.context import flow_settings
from serialgen.tasks.ingest_real import ingest_real_task


@flow(name="ingest-real")
def ingest_real(lake: str | None = None, profile: str | None = None, config: str | None = None,
                images: str | None = None, captions: str | None = None) -> dict[str, Any]:
    """Ingest ``images`` (folder, URI or CSV/Parquet list; default: held-out synthetic images) with ``captions``."""
    return ingest_real_task(flow_settings(lake, profile, config), images, captions).as_dict()
