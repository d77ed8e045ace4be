"""The render sampling plan: which (character, pose, view) items to render, and each item's seed (no bpy).

Every character gets ``poses_per_character`` poses (all of them when there are fewer) chosen by a
stable per-character ranking, and ``views_per_pose`` random viewpoints of each. Choices and seeds
derive from the keys through a stable hash, so the plan and every image are the same on a rerun and
adding characters or poses leaves the existing items unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from the parts' text (blake2b; unlike ``hash()`` it is the same in every process)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


@dataclass(frozen=True)
class RenderItem:
    """One non-standard render: the key of its ``renders`` row and its seed."""

    character_id: str
    pose_id: str
    view_id: int
    seed: int

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.character_id, self.pose_id, self.view_id)

    @property
    def error_key(self) -> str:
        return f"{self.character_id}/{self.pose_id}/{self.view_id}"


def standard_error_key(character_id: str) -> str:
    """The ``errors`` key of a character's standard render."""
    return f"{character_id}/standard"


def plan_character(character_id: str, pose_ids: Sequence[str], poses_per_character: int, views_per_pose: int,
                   seed: int) -> list[RenderItem]:
    """The planned items of one character: its ranked pose subset (sorted) x ``views_per_pose`` views."""
    ranked = sorted(pose_ids, key=lambda p: stable_seed(seed, "pose", character_id, p))
    return [RenderItem(character_id, pose_id, view_id, stable_seed(seed, character_id, pose_id, view_id))
            for pose_id in sorted(ranked[:poses_per_character]) for view_id in range(views_per_pose)]


def plan_by_character(character_ids: Iterable[str], pose_ids: Sequence[str], poses_per_character: int,
                      views_per_pose: int, seed: int, limit: int | None = None) -> Iterator[tuple[str, list[RenderItem]]]:
    """(character, its planned items) in sorted character order, for every character the ``limit`` reaches.

    A generator: at the paper's scale (2,924 x 3,817) the plan is only ever held one character at a time.
    """
    remaining = limit
    for character_id in sorted(set(character_ids)):
        if remaining is not None and remaining <= 0:
            return
        items = plan_character(character_id, pose_ids, poses_per_character, views_per_pose, seed)[:remaining]
        if remaining is not None:
            remaining -= len(items)
        yield character_id, items


@dataclass
class ChunkResult:
    """What a worker returns for a chunk of one character's items: rows, failed items, timings."""

    renders: list[dict[str, Any]] = field(default_factory=list)
    standard: dict[str, Any] | None = None
    errors: list[tuple[str, str]] = field(default_factory=list)
    item_seconds: list[float] = field(default_factory=list)    # wall time per item inside the worker
    render_seconds: list[float] = field(default_factory=list)  # time inside the render call per item
    load_seconds: float = 0.0
