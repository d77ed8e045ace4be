"""Lake commit cost as a table grows: Lake.upsert of 64 rows and a full key scan, after many commits,
with the lake's upkeep (key index, compaction) and without it.

    PYTHONPATH=. python benchmarks/bench_lake.py --rows 100000 1000000 --commits 2000 --plain-commits 300

Each size: one bulk write of N `backgrounds` rows (string key, tiny payload), then ``commits`` upserts
of 64 rows (half updates, half inserts). Prints per-commit times (median; mean including the
compactions it triggers), the key-scan time and fragment/version counts after the commits.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import tempfile
import time

import pyarrow as pa

from serialgen.storage.lake import Lake, Upkeep
from serialgen.storage.schemas import BACKGROUNDS


def _batch(start: int, n: int) -> pa.Table:
    ids = [f"bg-{i:012d}" for i in range(start, start + n)]
    return pa.table({"background_id": ids, "source_uri": ids, "width": [1] * n, "height": [1] * n,
                     "image": [b"x"] * n}, schema=BACKGROUNDS.payload_schema)


def run(rows: int, commits: int, upkeep: Upkeep, root: str) -> dict:
    lake = Lake(root, upkeep=upkeep)
    for start in range(0, rows, 1_000_000):   # bulk load in 1 M-row commits
        lake.upsert("backgrounds", _batch(start, min(1_000_000, rows - start)), "bulk")
    if upkeep.compact_every:
        lake.maintain("backgrounds", cleanup=False)
    times = []
    step = max(1, rows // commits)
    for c in range(commits):
        batch = pa.concat_tables([_batch((c * step) % rows, 32), _batch(rows + c * 32, 32)])  # 32 updates, 32 inserts
        t = time.perf_counter()
        lake.upsert("backgrounds", batch, "bench")
        times.append(time.perf_counter() - t)
    ds = lake.dataset("backgrounds")
    t = time.perf_counter()
    keys = ds.to_table(columns=["background_id"])
    scan = time.perf_counter() - t
    assert keys.num_rows == rows + commits * 32
    return {"rows": rows, "commits": commits, "upkeep": bool(upkeep.compact_every),
            "upsert_ms_median": round(1000 * statistics.median(times), 1),
            "upsert_ms_mean": round(1000 * statistics.fmean(times), 1),
            "upsert_ms_last100": round(1000 * statistics.fmean(times[-100:]), 1),
            "key_scan_ms": round(1000 * scan, 1), "fragments": len(ds.get_fragments()),
            "versions": len(ds.versions())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--commits", type=int, default=2000)
    parser.add_argument("--plain-commits", type=int, default=300, help="commits without upkeep (slow: linear growth)")
    args = parser.parse_args()
    for rows in args.rows:
        for upkeep, commits in ((Upkeep(compact_every=100, retain=dt.timedelta(hours=1)), args.commits),
                                (Upkeep(compact_every=0, index_keys=False), args.plain_commits)):
            if commits:
                with tempfile.TemporaryDirectory(prefix="bench-lake-") as root:
                    print(json.dumps(run(rows, commits, upkeep, root)), flush=True)


if __name__ == "__main__":
    main()
