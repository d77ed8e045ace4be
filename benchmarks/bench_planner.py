"""Planning the missing pairs at paper scale: Arrow anti-join (ours) vs Python sets of every key (before).

    PYTHONPATH=. python benchmarks/bench_planner.py --characters 2750 --poses 3817 --done 0.5

Builds a lake with `renders` keys (characters x poses, one view: 10.5 M at the defaults) and a `pairs`
table holding ``done`` of their pair ids (other columns null), then plans in a fresh process each
way and reports wall time and the process's peak RSS (imports included, data generation excluded).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def _keys(characters: int, poses: int) -> pa.Table:
    c = pa.array([f"character-{i:05d}" for i in range(characters)])
    p = pa.array([f"{i:016x}" for i in range(poses)])
    ci = np.repeat(np.arange(characters), poses)
    pi = np.tile(np.arange(poses), characters)
    return pa.table({"character_id": c.take(pa.array(ci)), "pose_id": p.take(pa.array(pi)),
                     "view_id": pa.array(np.zeros(len(ci), np.int32))})


def _table(schema: pa.Schema, columns: dict[str, pa.Array], n: int) -> pa.Table:
    """``columns`` plus every other field of ``schema``: null, or a constant where nulls are not allowed."""
    import datetime as dt

    fill = {pa.string(): "bench", pa.timestamp("us", tz="UTC"): dt.datetime.now(dt.timezone.utc)}
    out = {}
    for f in schema:
        if f.name in columns:
            out[f.name] = columns[f.name]
        else:
            nulls = pa.nulls(n, f.type)
            out[f.name] = nulls if f.nullable else nulls.fill_null(pa.scalar(fill[f.type], f.type))
    return pa.table(out, schema=schema)


def build(root: str, characters: int, poses: int, done: float) -> None:
    import lance

    from serialgen.compositing.plan import planned_pairs
    from serialgen.storage.lake import Lake
    from serialgen.storage.schemas import PAIRS, RENDERS

    lake = Lake(root)
    keys = _keys(characters, poses)
    renders = _table(RENDERS.schema, {c: keys.column(c) for c in keys.column_names}, keys.num_rows)
    lance.write_dataset(renders, lake.table_uri("renders"), schema=RENDERS.schema, max_rows_per_file=2_000_000)
    ids = planned_pairs(keys, 1).column("pair_id")
    keep = pc.less(pa.array(np.random.default_rng(0).random(len(ids))), done)
    ids = ids.filter(keep)
    pairs = _table(PAIRS.schema, {"pair_id": ids}, len(ids))
    lance.write_dataset(pairs, lake.table_uri("pairs"), schema=PAIRS.schema, max_rows_per_file=2_000_000)


def plan(root: str, method: str) -> dict:
    from serialgen.compositing.plan import make_pair_id, missing_pairs
    from serialgen.storage.lake import Lake

    lake = Lake(root)
    rss_before = _status("VmRSS")
    start = time.perf_counter()
    keys = lake.read("renders", columns=["character_id", "pose_id", "view_id"])
    if method == "arrow":
        batches = (b.column(0) for b in lake.dataset("pairs").to_batches(columns=["pair_id"]))
        todo = missing_pairs(keys, 1, batches).num_rows
    else:   # the previous planner: a Python set of every wanted id and of every stored id
        wanted = {make_pair_id(*ids, 0) for ids in zip(*(keys.column(c).to_pylist() for c in keys.column_names))}
        done = wanted & {k for (k,) in lake.keys("pairs")}
        todo = len(wanted) - len(done)
    seconds = time.perf_counter() - start
    return {"method": method, "keys": keys.num_rows, "missing": todo, "seconds": round(seconds, 2),
            "peak_rss_mb": round(_status("VmHWM")), "rss_after_imports_mb": round(rss_before)}


def _status(field: str) -> float:
    """A memory figure of this process from /proc (MB): VmRSS now, VmHWM its peak."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--characters", type=int, default=2750)
    parser.add_argument("--poses", type=int, default=3817)
    parser.add_argument("--done", type=float, default=0.5, help="share of pairs already in the lake")
    parser.add_argument("--methods", nargs="+", default=["arrow", "python-sets"])
    parser.add_argument("--plan", nargs=2, metavar=("ROOT", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plan:
        print(json.dumps(plan(*args.plan)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-planner-") as root:
        build(root, args.characters, args.poses, args.done)
        for method in args.methods:   # a fresh process each: peak RSS is the planner's
            out = subprocess.run([sys.executable, __file__, "--plan", root, method], capture_output=True, text=True)
            print(out.stdout.strip() or out.stderr[-2000:], flush=True)


if __name__ == "__main__":
    main()
