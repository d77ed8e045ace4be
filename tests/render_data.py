"""Test data for the render stage: procedural characters (the assets generator) and random poses in a lake,
and the render items a plan holds (what a run must write).

Also used by benchmarks/bench_render.py.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from serialgen.storage import Lake
from serialgen.synthetic.render_plan import RenderItem, plan_by_character
from serialgen.synthetic.skeleton import POSED_BONES, PREFIX


def character_glbs(seeds: list[int]) -> dict[str, bytes]:
    """{character_id: GLB bytes} of procedural characters (resets this process's bpy scene)."""
    from serialgen.assets.procedural import generate_glb

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            path = Path(tmp) / f"{seed}.glb"
            generate_glb(seed, path)
            out[f"proc-{seed:04d}"] = path.read_bytes()
    return out


def random_pose(rng: np.random.Generator, max_degrees: float = 35.0) -> list[list[float]]:
    """Local (w, x, y, z) rotations of every posed bone about random axes, up to ``max_degrees``."""
    axes = rng.normal(size=(len(POSED_BONES), 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    half = np.radians(rng.uniform(0, max_degrees, len(POSED_BONES))) / 2
    return np.concatenate([np.cos(half)[:, None], axes * np.sin(half)[:, None]], axis=1).tolist()


def pose_rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"pose_id": f"pose-{i:03d}", "motion_id": "test", "frame": i,
             "bones": [PREFIX + b for b in POSED_BONES], "rotations": random_pose(rng)} for i in range(n)]


def character_rows(glbs: dict[str, bytes]) -> list[dict]:
    return [{"character_id": cid, "source_uri": f"procedural://{cid}", "format": "glb", "status": "accepted",
             "reason": None, "n_bones": 25, "n_canonical_bones": 25, "height_m": 1.7, "signature": [0.0],
             "normalized_glb": glb, "thumbnail": None, "attributes": "{}"} for cid, glb in glbs.items()]


def fill_lake(lake: Lake, glbs: dict[str, bytes], n_poses: int) -> None:
    """Write accepted ``characters`` and ``n_poses`` random ``poses`` into ``lake``."""
    lake.upsert("characters", character_rows(glbs), "test-assets")
    lake.upsert("poses", pose_rows(n_poses), "test-assets")


def plan_items(character_ids: Iterable[str], pose_ids: Sequence[str], poses_per_character: int,
               views_per_pose: int, seed: int, limit: int | None = None) -> Iterator[RenderItem]:
    """The planned items, character-major; ``limit`` keeps the first ``limit`` items."""
    for _, items in plan_by_character(character_ids, pose_ids, poses_per_character, views_per_pose, seed, limit):
        yield from items
