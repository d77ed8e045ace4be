"""Progress a person can follow: done/total, rate and ETA as a live bar on a terminal and as a log line at a
steady interval (a deployment run has no terminal; its ``serialgen.*`` log records reach the flow-run log)."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("serialgen.progress")


class ProgressReporter:
    """Call with (done, total) as work settles; :meth:`close` when the stage ends."""

    def __init__(self, label: str, unit: str = "items", interval: float = 10.0, bar: bool | None = None) -> None:
        self.label, self.unit, self.interval = label, unit, interval
        self.start = time.monotonic()
        self._last_log = self.start
        self._bar = None
        if bar if bar is not None else sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), transient=False)
            self._bar.start()
            self._task = self._bar.add_task(label, total=None, rate="")

    def __call__(self, done: int, total: int | None) -> None:
        elapsed = time.monotonic() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total, rate=f"{rate:.2f} {self.unit}/s")
        now = time.monotonic()
        if now - self._last_log >= self.interval or (total is not None and done >= total):
            self._last_log = now
            log.info("%s", self.line(done, total, elapsed))

    def line(self, done: int, total: int | None, elapsed: float) -> str:
        """``render: 40/120 items (33%), 2.10 items/s, ETA 38 s``."""
        rate = done / elapsed if elapsed > 0 else 0.0
        if not total:
            return f"{self.label}: {done} {self.unit}, {rate:.2f} {self.unit}/s"
        eta = f"ETA {(total - done) / rate:.0f} s" if rate > 0 and done < total else "done" if done >= total else "ETA ?"
        return f"{self.label}: {done}/{total} {self.unit} ({100 * done / total:.0f}%), {rate:.2f} {self.unit}/s, {eta}"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
