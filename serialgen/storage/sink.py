"""Committing a stage's output batches: good rows upserted, failed ones reported to `errors`.

The Ray stages (composite, standardize) produce tables whose ``error`` column says why a row failed;
the driver commits them through one :class:`Sink`, so a rerun that succeeds clears the old error.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from serialgen.storage.lake import Lake
from serialgen.storage.runs import StageRun, errors_of


class Sink:
    """Commits stage output: rows without ``error`` are upserted, the others reported to `errors`."""

    def __init__(self, lake: Lake, run: StageRun) -> None:
        self.lake, self.run = lake, run
        # Only items that failed before need their error cleared (a delete per commit is costly).
        self.prior_errors = set(errors_of(lake, run.stage).column("key").to_pylist())

    def commit(self, table_name: str, error_key: str, table: pa.Table) -> pa.Table:
        """Upsert the good rows of ``table`` (``error`` null); returns them."""
        failed = pc.is_valid(table.column("error"))
        good, bad = table.filter(pc.invert(failed)).drop_columns(["error"]), table.filter(failed)
        self.run.errors(zip(bad.column(error_key).to_pylist(), bad.column("error").to_pylist()))
        if good.num_rows:
            self.lake.upsert(table_name, good, self.run.run_id)
            recovered = self.prior_errors & set(good.column(error_key).to_pylist())
            self.run.clear_errors(recovered)
            self.prior_errors -= recovered
        return good
