"""Main job wall time: `serialgen run` on a fresh lake (tiny profile), then again with every stage skipped.

    .venv/bin/python benchmarks/bench_main_job.py [--lake /tmp/bench-lake]

Prints both wall times, the ratio second/first, and the per-stage seconds of the first run.
Target (issue 7): the first run <= 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed_run(lake: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "serialgen.cli", "--lake", str(lake), "run"], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", type=Path, default=Path(tempfile.mkdtemp(prefix="serialgen-bench-")) / "lake")
    args = parser.parse_args()
    shutil.rmtree(args.lake, ignore_errors=True)
    first = timed_run(args.lake)
    second = timed_run(args.lake)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from serialgen.storage import Lake

    runs = Lake(str(args.lake)).read("runs", filter="status = 'completed'").to_pylist()
    stage_seconds = {r["stage"]: round((r["finished_at"] - r["started_at"]).total_seconds(), 1) for r in runs}
    print(json.dumps({"first_run_s": round(first, 1), "second_run_s": round(second, 1),
                      "second_over_first": round(second / first, 3), "stage_seconds": stage_seconds}, indent=2))


if __name__ == "__main__":
    main()
