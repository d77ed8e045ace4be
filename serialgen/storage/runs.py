"""Stage runs: one ``runs`` row per execution of a stage, and the ``errors`` rows it reports.

A :class:`StageRun` stamps its ``run_id`` on every row the stage writes, records the input
table versions and config hash it ran with (lineage), and the output versions it produced.
"""

from __future__ import annotations

import datetime as dt
import json
import traceback
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

from serialgen.storage.lake import Lake
from serialgen.storage.schemas import spec


#: The key under a training run's ``metrics`` that holds its model's content version.
MODEL_VERSION = "model_version"


class MissingInputError(FileNotFoundError):
    """A stage's input table is missing or empty: the message names the stage to run first."""


class StageFailed(RuntimeError):
    """A stage ended Failed for a reason its message states in one line (too many failed items, a DAG
    whose stages did not complete)."""


class TooManyFailures(StageFailed):
    """More than the configured share of a stage's items failed: likely a bug, not bad data."""


def require_input(lake: Lake, table: str, stage: str, producer: str, filter: str | None = None) -> None:
    """Fail early, naming the stage to run first, when ``table`` (rows matching ``filter``) is empty."""
    rows = lake.read(table, columns=[spec(table).key[0]], filter=filter).num_rows if lake.exists(table) else 0
    if rows == 0:
        what = f"`{table}` rows" + (f" with {filter}" if filter else "")
        raise MissingInputError(f"{stage}: no {what} in lake {lake.uri}: run `serialgen {producer}` first")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class StageRun:
    """Context manager around one stage execution.

    >>> with StageRun(lake, "render", config_hash, inputs=["characters", "poses"]) as run:
    ...     lake.upsert("renders", rows, run.run_id)
    ...     run.error("c1/p2/0", "bpy failed: ...")
    ...     run.outputs = ["renders"]
    """

    def __init__(self, lake: Lake, stage: str, config_hash: str, inputs: Iterable[str] = (),
                 flow_run_id: str | None = None, max_failure_share: float | None = None) -> None:
        self.lake = lake
        self.stage = stage
        self.config_hash = config_hash
        self.run_id = f"{stage}-{_now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        self.inputs = {name: lake.version(name) for name in inputs}
        self.outputs: list[str] = []
        self.metrics: dict[str, Any] = {}
        self.checkpoint: str | None = None
        self.flow_run_id = flow_run_id
        self.started_at = _now()
        self.n_errors = 0
        self.attempted = 0              # items the stage tried this run (set by the stage)
        self.max_failure_share = max_failure_share
        self._first_reasons: list[str] = []
        # Items that failed in an earlier run and fail again are known bad inputs, not a sign of a bug.
        self._known_bad = (set(lake.read("errors", columns=["key"], filter=f"stage = '{stage}'").column("key")
                               .to_pylist()) if max_failure_share is not None and lake.exists("errors") else set())
        self.n_repeated = 0

    def __enter__(self) -> "StageRun":
        self._write("running")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        too_many = self._too_many_failures() if exc is None else None
        if exc is not None:
            self.metrics["exception"] = "".join(traceback.format_exception_only(exc_type, exc)).strip()
        elif too_many is not None:
            self.metrics["exception"] = str(too_many)
        self._write("failed" if exc is not None or too_many is not None else "completed", finished=True)
        if too_many is not None:
            raise too_many

    def _too_many_failures(self) -> TooManyFailures | None:
        new, attempted = self.n_errors - self.n_repeated, self.attempted - self.n_repeated
        share = new / attempted if attempted > 0 else 0.0
        if self.max_failure_share is None or share <= self.max_failure_share:
            return None
        return TooManyFailures(f"{self.stage}: {new} of {attempted} items failed ({share:.0%} > limit "
                               f"{self.max_failure_share:.0%}); first reasons: {'; '.join(self._first_reasons)}")

    def error(self, key: str, reason: str) -> None:
        """Report one item that could not be processed; the stage goes on."""
        self.errors([(key, reason)])

    def errors(self, items: Iterable[tuple[str, str]]) -> None:
        rows = [{"stage": self.stage, "key": k, "reason": r} for k, r in items]
        new = [r for r in rows if r["key"] not in self._known_bad]
        self.n_repeated += len(rows) - len(new)
        self._first_reasons += [r["reason"] for r in new[:3 - len(self._first_reasons)]]
        if rows:
            self.n_errors += len(rows)
            self.lake.upsert("errors", rows, self.run_id)

    def clear_errors(self, keys: Iterable[str]) -> None:
        """Forget earlier errors of items that have now succeeded."""
        keys = list(keys)
        if keys and self.lake.exists("errors"):
            quoted = ", ".join("'" + k.replace("'", "''") + "'" for k in keys)
            self.lake.delete("errors", f"stage = '{self.stage}' AND key IN ({quoted})")

    def _write(self, status: str, finished: bool = False) -> None:
        outputs = {name: self.lake.version(name) for name in self.outputs} if finished else {}
        self.lake.upsert("runs", [{
            "run_id": self.run_id,
            "stage": self.stage,
            "status": status,
            "started_at": self.started_at,
            "finished_at": _now() if finished else None,
            "config_hash": self.config_hash,
            "inputs": json.dumps(self.inputs),
            "outputs": json.dumps(outputs),
            "metrics": json.dumps({**self.metrics, "errors": self.n_errors}),
            "checkpoint": self.checkpoint,
            "flow_run_id": self.flow_run_id,
            "written_at": _now(),
        }], self.run_id)


def last_completed(lake: Lake, stage: str) -> Mapping[str, Any] | None:
    """The most recent completed run of ``stage`` (for skipping unchanged stages and lineage)."""
    runs = lake.read("runs", filter=f"stage = '{stage}' AND status = 'completed'")
    if runs.num_rows == 0:
        return None
    runs = runs.sort_by([("finished_at", "descending")])
    row = runs.slice(0, 1).to_pylist()[0]
    for field in ("inputs", "outputs", "metrics"):
        row[field] = json.loads(row[field] or "{}")
    return row


def new_model_since(lake: Lake, producer: str, started: dt.datetime) -> Mapping[str, Any] | None:
    """The first completed run of the training stage ``producer`` that finished after ``started`` with a new
    model: its ``metrics.model_version`` (a content version, recorded by training stages) differs from the
    last one recorded for the same model folder (``checkpoint``) before ``started``. A run that resumed a
    finished training and exported the same weights is not new; a run that records no version always is."""
    runs = lake.read("runs", filter=f"stage = '{producer}' AND status = 'completed'").sort_by("finished_at").to_pylist()
    known: dict[str | None, str | None] = {}
    for run in runs:
        version = json.loads(run["metrics"] or "{}").get(MODEL_VERSION)
        if run["finished_at"] > started and (version is None or known.get(run["checkpoint"]) != version):
            return run
        if run["finished_at"] <= started:
            known[run["checkpoint"]] = version
    return None


def errors_of(lake: Lake, stage: str) -> pa.Table:
    return lake.read("errors", filter=f"stage = '{stage}'")


def up_to_date(lake: Lake, stage: str, config_hash: str) -> tuple[bool, str]:
    """Whether ``stage`` can be skipped: its last completed run used this config and the
    input table versions it read are still the current ones. Returns (skip, why)."""
    last = last_completed(lake, stage)
    if last is None:
        return False, "never completed"
    if last["config_hash"] != config_hash:
        return False, "config changed"
    # A table the stage both reads and writes (e.g. composite's backgrounds) changes by the stage itself.
    changed = [name for name, version in last["inputs"].items()
               if name not in last["outputs"] and lake.version(name) != version]
    if changed:
        return False, f"inputs changed: {', '.join(changed)}"
    missing = [name for name, version in last["outputs"].items() if lake.version(name) is None]
    if missing:
        return False, f"outputs missing: {', '.join(missing)}"
    return True, f"unchanged since run {last['run_id']}"
