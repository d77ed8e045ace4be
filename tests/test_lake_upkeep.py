"""Lake upkeep: key indexes, periodic compaction, and old-version removal that spares lineage."""

from __future__ import annotations

import datetime as dt

from serialgen.storage.lake import Lake, Upkeep
from serialgen.storage.runs import StageRun


def _rows(i: int, n: int = 4) -> list[dict]:
    return [{"stage": "s", "key": f"k{i}-{j}", "reason": f"r{i}"} for j in range(n)]


def test_keys_are_indexed_and_commits_compacted(tmp_path):
    lake = Lake(str(tmp_path), upkeep=Upkeep(compact_every=5, retain=dt.timedelta(hours=1), index_min_rows=8))
    lake.upsert("errors", _rows(0), "t")
    assert not lake.dataset("errors").describe_indices(), "4 rows: too small to index"
    for i in range(1, 5):
        lake.upsert("errors", _rows(i), "t")
    indexed = {f for index in lake.dataset("errors").describe_indices() for f in index.field_names}
    assert indexed == {"stage", "key"}
    for i in range(5, 24):
        lake.upsert("errors", _rows(i), "t")
    lake.upsert("errors", [{"stage": "s", "key": "k3-0", "reason": "updated"}], "t")
    ds = lake.dataset("errors")
    assert len(ds.get_fragments()) <= 6, "compacted every 5 commits, not one fragment per commit"
    assert ds.count_rows() == 24 * 4
    assert ds.to_table(filter="key = 'k3-0'").column("reason").to_pylist() == ["updated"]
    plan = ds.scanner(filter="key = 'k7-1'").explain_plan()
    assert "ScalarIndexQuery" in plan or "MaterializeIndex" in plan, plan

    unmanaged = Lake(str(tmp_path / "plain"), upkeep=Upkeep(compact_every=0, index_keys=False))
    for i in range(24):
        unmanaged.upsert("errors", _rows(i), "t")
    assert len(unmanaged.dataset("errors").get_fragments()) >= 24
    assert not unmanaged.dataset("errors").describe_indices()


def test_cleanup_removes_old_versions_but_keeps_what_runs_name(tmp_path):
    lake = Lake(str(tmp_path), upkeep=Upkeep(compact_every=0, retain=dt.timedelta(0)))
    lake.upsert("errors", _rows(0), "t")
    with StageRun(lake, "reader", "h", inputs=["errors"]):
        pass
    pinned = lake.lineage_versions("errors")
    for i in range(1, 6):
        lake.upsert("errors", _rows(i), "t")
    before = {v["version"] for v in lake.dataset("errors").versions()}
    stats = lake.maintain("errors")
    after = {v["version"] for v in lake.dataset("errors").versions()}
    assert len(pinned) == 1 and pinned <= after and stats["versions_removed"] >= len(before) - 3
    assert len(after) <= 3, "only the lineage version and the latest (compacted) ones remain"
    assert lake.read("errors", version=min(pinned)).num_rows == 4, "a run's input version stays readable"
    assert lake.count("errors") == 24

    young = Lake(str(tmp_path / "young"), upkeep=Upkeep(compact_every=0, retain=dt.timedelta(hours=1)))
    for i in range(4):
        young.upsert("errors", _rows(i), "t")
    versions = len(young.dataset("errors").versions())
    young.maintain("errors")
    assert len(young.dataset("errors").versions()) >= versions, "versions younger than the retention stay"
