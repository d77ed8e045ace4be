"""Image artifacts shared by the stage tasks: a PNG file next to the lake plus an inline markdown artifact."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

from prefect.artifacts import create_markdown_artifact

from serialgen.config import Settings


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
