"""Lookup joins: rows of a keyed table fetched by key on demand, as readers of another table need them.

Training pairs name their standard by ``character_id`` and their background by ``background_id``;
readers join them here, row by row, instead of the lake copying the joined bytes into every pair.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from serialgen.storage.lake import Lake


class LakeLookup:
    """Rows of a keyed table fetched by key (Lance ``take`` by row position), transformed once, LRU-cached.

    Pinned to one table version (the newest at first use when ``version`` is None), so positions stay
    valid. Opens its Lance dataset lazily, so it can be pickled into Ray actors and spawn workers.
    """

    def __init__(self, lake: Lake, table: str, key: str, columns: list[str],
                 transform: Callable[[dict[str, Any]], Any], capacity: int, version: int | None = None) -> None:
        self.lake, self.table, self.key, self.columns = lake, table, key, columns
        self.transform, self.capacity, self.version = transform, capacity, version
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._ds = None
        self._rows: dict[str, int] | None = None

    def get(self, keys: Iterable[str]) -> dict[str, Any]:
        """{key: transformed row} for the keys present in the table; absent keys are left out."""
        keys = list(dict.fromkeys(keys))
        missing = [k for k in keys if k not in self._cache and k in self._positions()]
        if missing:
            positions = sorted(self._positions()[k] for k in missing)
            for row in self._ds.take(positions, columns=self.columns).to_pylist():
                self._cache[row[self.key]] = self.transform(row)
        found = {}
        for k in keys:
            if k in self._cache:
                self._cache.move_to_end(k)
                found[k] = self._cache[k]
        while len(self._cache) > max(self.capacity, len(keys)):
            self._cache.popitem(last=False)
        return found

    def __contains__(self, key: str) -> bool:
        return key in self._positions()

    def _positions(self) -> dict[str, int]:
        if self._rows is None:  # opened here, in the reading process
            self._ds = self.lake.dataset(self.table, self.version)
            self.version = None if self._ds is None else self._ds.version
            keys = [] if self._ds is None else self._ds.to_table(columns=[self.key]).column(self.key).to_pylist()
            self._rows = {k: i for i, k in enumerate(keys)}
        return self._rows

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_ds": None, "_rows": None, "_cache": OrderedDict()}
