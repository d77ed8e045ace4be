"""The lake: one folder or object-store prefix of Lance tables, ``<lake>/<name>.lance``.

All writes go through :meth:`Lake.upsert`, a Lance ``merge_insert`` on the table's key,
so a stage that is killed and rerun finishes the missing rows and never duplicates one.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import lance
import pyarrow as pa

from serialgen.storage.schemas import PROVENANCE, TABLES, TableSpec, spec

#: URI schemes Lance's object store understands.
SUPPORTED_SCHEMES = {"", "file", "s3", "s3+ddb", "gs", "az", "abfss", "memory"}


class LakeError(Exception):
    """A lake problem the user can fix (bad URI, unknown table, wrong schema)."""


class SchemaMismatchError(LakeError):
    """Rows (or a stored table) do not match the table's declared schema."""


@dataclass(frozen=True)
class Lake:
    """A lake URI plus the object-store options needed to reach it."""

    uri: str
    storage_options: Mapping[str, str] = field(default_factory=dict)

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
                    lance.write_dataset(table, uri, schema=table_spec.schema, mode="create",
                                        storage_options=self._options())
                else:
                    (
                        ds.merge_insert(list(table_spec.key))
                        .when_matched_update_all()
                        .when_not_matched_insert_all()
                        .conflict_retries(20)
                        .execute(table)
                    )
                return table.num_rows
            except (OSError, ValueError, RuntimeError) as exc:
                # Another writer created the table or committed first: try again.
                if attempt < 19 and _is_write_conflict(exc):
                    time.sleep(0.05 * (attempt + 1))
                    continue
                raise
        raise LakeError(f"upsert into {name!r} did not commit after 20 attempts")  # pragma: no cover

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
