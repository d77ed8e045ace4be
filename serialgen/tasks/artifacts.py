"""Image artifacts shared by the stage tasks: a PNG file next to the lake plus an inline markdown artifact."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact

from serialgen.config import Settings
from serialgen.progress import ProgressReporter


def artifact_path(settings: Settings, filename: str) -> Path:
    """``<lake>/_artifacts/<filename>`` for a local lake, else a file in a fresh temporary folder."""
    lake = settings.open_lake()
    folder = Path(lake.uri) / "_artifacts" if lake.is_local else Path(tempfile.mkdtemp(prefix="serialgen-"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder / filename


def publish_png(key: str, description: str, png: bytes, path: Path) -> str:
    """Write ``png`` to ``path`` and show it inline in the Prefect dashboard under ``key``."""
    path.write_bytes(png)
    create_markdown_artifact(key=key, description=description,
                             markdown=f"![{key}](data:image/png;base64,{base64.b64encode(png).decode()})\n\n`{path}`")
    return str(path)


@contextmanager
def stage_progress(key: str, label: str, description: str, unit: str = "items") -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback for a stage: the dashboard's progress artifact, a live bar in the
    terminal and a progress line in the flow-run log."""
    artifact = create_progress_artifact(0.0, key=key, description=description)
    reporter = ProgressReporter(label, unit)

    def progress(done: int, total: int) -> None:
        update_progress_artifact(artifact, 100.0 * done / max(total, 1))
        reporter(done, total)

    try:
        yield progress
        update_progress_artifact(artifact, 100.0)
    finally:
        reporter.close()
