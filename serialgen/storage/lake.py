"""The lake: one folder or object-store prefix of Lance tables, ``<lake>/<name>.lance``.

All writes go through :meth:`Lake.upsert`, a Lance ``merge_insert`` on the table's key,
so a stage that is killed and rerun finishes the missing rows and never duplicates one.

Upkeep keeps commits cheap as tables grow (every commit adds a fragment and a version, and an
upsert's key join scans every fragment): a BTREE index on each key column, compaction every
``compact_every`` commits of a process and at the end of a stage (:meth:`Lake.maintain`), and
removal of versions older than ``retain`` except those a ``runs`` row names (tagged first).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import lance
import pyarrow as pa

from serialgen.storage.schemas import PROVENANCE, TABLES, TableSpec, spec

log = logging.getLogger(__name__)

#: URI schemes Lance's object store understands.
SUPPORTED_SCHEMES = {"", "file", "s3", "s3+ddb", "gs", "az", "abfss", "memory"}


class LakeError(Exception):
    """A lake problem the user can fix (bad URI, unknown table, wrong schema)."""


class SchemaMismatchError(LakeError):
    """Rows (or a stored table) do not match the table's declared schema."""


@dataclass(frozen=True)
class Upkeep:
    """How the lake keeps its tables fast (see the module docstring)."""

    compact_every: int = 100             # commits of one process to a table between compactions; 0: never
    retain: dt.timedelta = dt.timedelta(hours=24)  # keep every version younger than this (running readers)
    index_keys: bool = True
    index_min_rows: int = 10_000         # below this a scan is as fast as an index: small tables stay plain


#: Commits per (table URI) in this process since its last compaction.
_commits: dict[str, int] = {}


@dataclass(frozen=True)
class Lake:
    """A lake URI plus the object-store options needed to reach it."""

    uri: str
    storage_options: Mapping[str, str] = field(default_factory=dict)
    upkeep: Upkeep = field(default_factory=Upkeep)

    def __post_init__(self) -> None:
        scheme = urlparse(self.uri).scheme
        # A Windows drive letter parses as a one-letter scheme; treat it as a path.
        if len(scheme) > 1 and scheme not in SUPPORTED_SCHEMES:
            raise LakeError(
                f"invalid lake URI {self.uri!r}: scheme {scheme!r} is not one of "
                f"{', '.join(sorted(s for s in SUPPORTED_SCHEMES if s))} (or a local path)"
            )
        if not self.uri.strip():
            raise LakeError("invalid lake URI: empty")

    @property
    def is_local(self) -> bool:
        scheme = urlparse(self.uri).scheme
        return scheme in ("", "file") or len(scheme) == 1

    def table_uri(self, name: str) -> str:
        spec(name)
        return f"{self.uri.rstrip('/')}/{name}.lance"

    def _options(self) -> dict[str, str] | None:
        return dict(self.storage_options) or None

    # -- reading -------------------------------------------------------------------------
    def dataset(self, name: str, version: int | None = None) -> lance.LanceDataset | None:
        """The Lance dataset of table ``name`` (at ``version``), or None if it was never written."""
        try:
            ds = lance.dataset(self.table_uri(name), version=version, storage_options=self._options())
        except (ValueError, OSError, RuntimeError) as exc:
            if _is_not_found(exc) and version is None:
                return None
            raise LakeError(f"cannot open table {name!r} at {self.table_uri(name)}: {exc}") from exc
        check_stored_schema(spec(name), ds.schema)
        return ds

    def exists(self, name: str) -> bool:
        return self.dataset(name) is not None

    def read(
        self,
        name: str,
        columns: list[str] | None = None,
        filter: str | None = None,
        version: int | None = None,
    ) -> pa.Table:
        """The whole table (or the chosen columns / rows); empty with the right schema if absent."""
        ds = self.dataset(name, version)
        if ds is None:
            schema = spec(name).schema
            if columns is not None:
                schema = pa.schema([schema.field(c) for c in columns])
            return schema.empty_table()
        return ds.to_table(columns=columns, filter=filter)

    def keys(self, name: str, filter: str | None = None) -> set[tuple]:
        """The key tuples already present, for skipping finished work."""
        key = spec(name).key
        table = self.read(name, columns=list(key), filter=filter)
        return set(zip(*(table.column(k).to_pylist() for k in key))) if table.num_rows else set()

    def count(self, name: str) -> int:
        ds = self.dataset(name)
        return 0 if ds is None else ds.count_rows()

    def version(self, name: str) -> int | None:
        ds = self.dataset(name)
        return None if ds is None else ds.version

    def tables(self) -> dict[str, tuple[int, int]]:
        """{name: (rows, version)} for every table present in the lake."""
        present = {}
        for name in TABLES:
            ds = self.dataset(name)
            if ds is not None:
                present[name] = (ds.count_rows(), ds.version)
        return present

    # -- writing -------------------------------------------------------------------------
    def upsert(self, name: str, rows: pa.Table | pa.RecordBatch | Iterable[Mapping[str, Any]], run_id: str) -> int:
        """Insert or replace ``rows`` by the table's key; returns the number of rows written.

        Rows must carry every payload column of the table's schema; ``run_id`` and
        ``written_at`` are stamped here. Duplicate keys within ``rows`` keep the last one.
        Concurrent upserts from several processes are retried on commit conflicts.
        """
        table_spec = spec(name)
        table = conform(table_spec, rows, run_id)
        if table.num_rows == 0:
            return 0
        table = _last_per_key(table, table_spec.key)
        uri = self.table_uri(name)
        for attempt in range(20):
            ds = self.dataset(name)
            try:
                if ds is None:
                    # Created empty, rows always merged: two writers racing to create the table both end up
                    # merging into the one that won, and no batch rides on a create that may lose the race.
                    lance.write_dataset(table_spec.schema.empty_table(), uri, schema=table_spec.schema,
                                        mode="create", storage_options=self._options())
                    continue
                (
                    ds.merge_insert(list(table_spec.key))
                    .when_matched_update_all()
                    .when_not_matched_insert_all()
                    .conflict_retries(20)
                    .execute(table)
                )
                self._after_commit(name)
                return table.num_rows
            except (OSError, ValueError, RuntimeError) as exc:
                # Another writer created the table or committed first: try again.
                if attempt < 19 and _is_write_conflict(exc):
                    time.sleep(0.05 * (attempt + 1))
                    continue
                raise
        raise LakeError(f"upsert into {name!r} did not commit after 20 attempts")  # pragma: no cover

    # -- upkeep --------------------------------------------------------------------------
    def _after_commit(self, name: str) -> None:
        uri = self.table_uri(name)
        _commits[uri] = _commits.get(uri, 0) + 1
        if self.upkeep.compact_every and _commits[uri] >= self.upkeep.compact_every:
            self.maintain(name, cleanup=False)

    def index_keys(self, name: str) -> None:
        """A BTREE scalar index on each key column (what ``merge_insert`` joins on), once the table is
        large enough to need one."""
        ds = self.dataset(name)
        if ds is None or ds.count_rows() < max(1, self.upkeep.index_min_rows):
            return
        indexed = {field for index in ds.describe_indices() for field in index.field_names}
        for column in spec(name).key:
            if column not in indexed:
                ds.create_scalar_index(column, "BTREE", name=f"{column}_btree")

    def maintain(self, name: str, cleanup: bool = True) -> dict[str, Any]:
        """Compact the table's fragments, bring its key indexes up to date and (``cleanup``) remove old
        versions no ``runs`` row names. Safe beside concurrent writers: a conflicting step is skipped."""
        ds = self.dataset(name)
        if ds is None:
            return {}
        _commits[self.table_uri(name)] = 0
        stats: dict[str, Any] = {"fragments_before": len(ds.get_fragments())}
        try:
            ds.optimize.compact_files()
            if self.upkeep.index_keys:
                self.index_keys(name)
                ds = self.dataset(name)
                if ds.describe_indices():
                    ds.optimize.optimize_indices()
            if cleanup:
                stats["versions_removed"] = self.cleanup(name)
        except (OSError, ValueError, RuntimeError) as exc:   # another writer committed first: next time
            if not _is_write_conflict(exc):
                raise
            log.info("upkeep of %s skipped: %s", name, exc)
        stats["fragments_after"] = len(self.dataset(name).get_fragments())
        return stats

    def cleanup(self, name: str) -> int:
        """Remove versions older than ``upkeep.retain``, keeping every version a ``runs`` row names
        (tagged ``lineage-<version>`` first, and Lance never removes a tagged version)."""
        ds = self.dataset(name)
        existing = {v["version"] for v in ds.versions()}
        tagged = {t["version"] for t in ds.tags.list().values()}
        for version in sorted(self.lineage_versions(name) & existing - tagged):
            ds.tags.create(f"lineage-{version}", version)
        stats = self.dataset(name).cleanup_old_versions(older_than=self.upkeep.retain,
                                                        error_if_tagged_old_versions=False)
        return int(stats.old_versions)

    def lineage_versions(self, name: str) -> set[int]:
        """Versions of table ``name`` that any ``runs`` row read or wrote."""
        if name == "runs" or not self.exists("runs"):
            return set()
        runs = self.read("runs", columns=["inputs", "outputs"]).to_pylist()
        return {int(v) for run in runs for side in ("inputs", "outputs")
                for table, v in json.loads(run[side] or "{}").items() if table == name and v is not None}

    def delete(self, name: str, predicate: str) -> None:
        ds = self.dataset(name)
        if ds is not None:
            ds.delete(predicate)


def conform(table_spec: TableSpec, rows: pa.Table | pa.RecordBatch | Iterable[Mapping[str, Any]], run_id: str) -> pa.Table:
    """Rows as a table of exactly ``table_spec.schema``, or a :class:`SchemaMismatchError` saying why."""
    if isinstance(rows, pa.RecordBatch):
        rows = pa.Table.from_batches([rows])
    if not isinstance(rows, pa.Table):
        rows = list(rows)
        payload = table_spec.payload_schema
        missing = {f.name for f in payload} - (set(rows[0]) if rows else set())
        if rows and missing:
            raise SchemaMismatchError(f"rows for {table_spec.name!r} miss columns: {', '.join(sorted(missing))}")
        try:
            rows = pa.Table.from_pylist(rows, schema=payload) if rows else payload.empty_table()
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
            raise SchemaMismatchError(f"rows do not fit table {table_spec.name!r}: {exc}") from exc
    stamps = {"run_id": run_id, "written_at": dt.datetime.now(dt.timezone.utc)}
    for stamp in PROVENANCE:
        if stamp.name not in rows.column_names:
            rows = rows.append_column(stamp.name, pa.array([stamps[stamp.name]] * rows.num_rows, stamp.type))
    names = set(rows.column_names)
    expected = set(table_spec.schema.names)
    if names != expected:
        extra, missing = sorted(names - expected), sorted(expected - names)
        raise SchemaMismatchError(
            f"rows do not fit table {table_spec.name!r}: "
            + "; ".join(p for p in (f"unexpected columns {extra}" if extra else "",
                                    f"missing columns {missing}" if missing else "") if p)
        )
    rows = rows.select(table_spec.schema.names)
    try:
        return rows.cast(table_spec.schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, ValueError) as exc:
        raise SchemaMismatchError(f"rows do not fit table {table_spec.name!r}: {exc}") from exc


def check_stored_schema(table_spec: TableSpec, stored: pa.Schema) -> None:
    """Refuse a stored table written by another schema (an older lake) instead of corrupting it."""
    want = {f.name: f.type for f in table_spec.schema}
    have = {f.name: f.type for f in stored}
    if want != have:
        diff = sorted(set(want.items()) ^ set(have.items()), key=str)
        raise SchemaMismatchError(
            f"table {table_spec.name!r} in the lake was written with a different schema "
            f"(differs in {', '.join(sorted({n for n, _ in diff}))}); "
            f"write to a new lake or rebuild this table with the current serialgen"
        )


def _last_per_key(table: pa.Table, key: tuple[str, ...]) -> pa.Table:
    keys = list(zip(*(table.column(k).to_pylist() for k in key)))
    if len(set(keys)) == len(keys):
        return table
    last = {k: i for i, k in enumerate(keys)}
    return table.take(sorted(last.values()))


def _is_not_found(exc: Exception) -> bool:
    text = str(exc).lower()
    return "not found" in text or "does not exist" in text or "no such file" in text


def _is_write_conflict(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("already exists", "conflict", "retryable", "commit"))
