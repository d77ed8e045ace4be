"""Pair keys and the plan of pairs to make, column-wise in Arrow (no torch, no Python object per key)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def make_pair_id(character_id: str, pose_id: str, view_id: int, k: int) -> str:
    """Stable pair key: the render key plus the background slot ``k`` (0..backgrounds_per_render-1)."""
    return f"{character_id}/{pose_id}/{view_id}/{k}"


def planned_pairs(keys: pa.Table, slots: int) -> pa.Table:
    """``row`` (position in ``keys``), ``k`` and ``pair_id`` (as :func:`make_pair_id`) of every render
    key x background slot, computed column-wise in Arrow (10 M keys without a Python string each)."""
    view = pc.cast(keys.column("view_id"), pa.string())
    rows = pa.array(np.arange(keys.num_rows, dtype=np.int64))
    parts = []
    for k in range(slots):
        pair_id = pc.binary_join_element_wise(keys.column("character_id"), keys.column("pose_id"), view,
                                              pa.scalar(str(k)), "/")
        parts.append(pa.table({"row": rows, "k": pa.array(np.full(keys.num_rows, k, np.int32)), "pair_id": pair_id}))
    return pa.concat_tables(parts) if parts else pa.table(
        {"row": pa.array([], pa.int64()), "k": pa.array([], pa.int32()), "pair_id": pa.array([], pa.string())})


def missing_pairs(keys: pa.Table, slots: int, existing: Iterable[pa.Array]) -> pa.Table:
    """``row`` and ``k`` of the render ``keys`` x slots whose pair id is not among ``existing`` (batches
    of stored pair ids). A hash anti-join on integer codes: ids become (character, pose) dictionary
    indices + view + slot, so 10 M keys plan in well under 2 GB."""
    character = pc.dictionary_encode(keys.column("character_id")).combine_chunks()
    pose = pc.dictionary_encode(keys.column("pose_id")).combine_chunks()
    n = keys.num_rows
    codes = {"c": character.indices, "p": pose.indices, "v": pc.cast(keys.column("view_id"), pa.int32())}
    wanted = pa.concat_tables(
        [pa.table({**codes, "k": pa.array(np.full(n, k, np.int32)), "row": pa.array(np.arange(n, dtype=np.int64))})
         for k in range(slots)])
    stored = [_codes(ids, character.dictionary, pose.dictionary) for ids in existing]
    stored = [t for t in stored if t.num_rows]
    if not stored:
        return wanted.select(["row", "k"])
    return wanted.join(pa.concat_tables(stored), keys=["c", "p", "v", "k"], join_type="left anti").select(["row", "k"])


def _codes(pair_ids: pa.Array, characters: pa.Array, poses: pa.Array) -> pa.Table:
    """Stored pair ids as (c, p, v, k) codes; ids of other characters or poses are dropped."""
    parts = pc.split_pattern(pair_ids, "/", max_splits=3, reverse=True)   # a character id may hold "/"
    table = pa.table({"c": pc.index_in(pc.list_element(parts, 0), value_set=characters),
                      "p": pc.index_in(pc.list_element(parts, 1), value_set=poses),
                      "v": pc.cast(pc.list_element(parts, 2), pa.int32()),
                      "k": pc.cast(pc.list_element(parts, 3), pa.int32())})
    return table.filter(pc.and_(pc.is_valid(table.column("c")), pc.is_valid(table.column("p"))))
