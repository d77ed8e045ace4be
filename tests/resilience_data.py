"""Helpers of the resilience and object-store tests: tiny settings, table keys, expected-vs-found lines."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from serialgen.storage import Lake

#: Small enough for 2 cores: 2 procedural characters x 2 poses x 1 view at 64 x 96, 2 samples.
TINY = {
    "assets": {"procedural_characters": 2, "motion_variants": 1},
    "render": {"poses_per_character": 2, "views_per_pose": 1, "width": 64, "height": 96, "samples": 2,
               "chunk_size": 1, "workers": 1},
    "composite": {"backgrounds_procedural": 2, "write_rows": 2},
    "ray": {"num_cpus": 2},
}

KEYS = {"renders": ("character_id", "pose_id", "view_id"), "standards": ("character_id",), "pairs": ("pair_id",)}


def table_keys(lake: Lake, table: str) -> list[tuple]:
    """Every row's key, duplicates included (a set would hide them)."""
    data = lake.read(table, columns=list(KEYS[table]))
    return list(zip(*(data.column(k).to_pylist() for k in KEYS[table])))


def show(title: str, counts: dict[str, tuple[object, object]]) -> None:
    """Print ``table: expected E, found F`` lines (run pytest with ``-s`` to see them)."""
    print(f"\n[{title}]")
    for name, (expected, found) in counts.items():
        print(f"  {name}: expected {expected}, found {found}")


def wait_for(condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.1) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def ray_worker_pids(class_name: str) -> list[int]:
    """PIDs of the Ray workers running an actor of ``class_name`` (by process title) in the Ray this
    process started: its descendants only, never another session's processes on the same machine."""
    parents, titles = {}, {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                titles[int(entry)] = f.read().split(b"\0")[0].decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue

    def ours(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    return [pid for pid, title in titles.items()
            if title.startswith("ray::") and class_name in title and ours(pid)]


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
