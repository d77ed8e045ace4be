"""Render stage on Ray actors: rows and errors, resumption, rerun determinism, flow (a killed run: test_main_job.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from serialgen.config import load_settings
from serialgen.storage.images import decode_image, decode_mask
from render_data import character_glbs, character_rows, fill_lake, plan_items

N_POSES = 3


@pytest.fixture(scope="module")
def glbs() -> dict[str, bytes]:
    return character_glbs([5, 8])


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, glbs, ray_local):
    """Two good characters and one whose GLB is broken, rendered once: (settings, report)."""
    from serialgen.stages.render import run_render

    folder = tmp_path_factory.mktemp("render")
    config = folder / "render.yaml"
    config.write_text("render: {poses_per_character: 2, views_per_pose: 1, chunk_size: 1}\n")
    settings = load_settings(config, lake=str(folder / "lake"))
    lake = settings.open_lake()
    fill_lake(lake, glbs, N_POSES)
    lake.upsert("characters", character_rows({"zz-broken": b"glTF but not really"}), "test-assets")
    return settings, run_render(settings)


def test_stage_writes_planned_rows_and_reports_failures(rendered):
    settings, report = rendered
    lake = settings.open_lake()
    assert (report.planned, report.rendered, report.failed, report.skipped) == (6, 4, 2, 0)
    assert (report.standards_rendered, report.standards_failed, report.workers) == (2, 1, 2)
    renders = lake.read("renders")
    assert renders.num_rows == 4 and lake.count("standards") == 2
    planned = {i.key: i.seed for i in plan_items(["proc-0005", "proc-0008"], [f"pose-{i:03d}" for i in range(N_POSES)],
                                                  2, 1, settings.render.seed)}
    rows = renders.to_pylist()
    assert {(r["character_id"], r["pose_id"], r["view_id"]): r["seed"] for r in rows} == planned
    for row in rows:
        assert decode_image(row["rgba"], "RGBA").shape == (192, 128, 4)
        assert decode_mask(row["mask"]).shape == (192, 128)
        assert np.asarray(row["keypoints"]).shape == (18, 3)
        assert decode_image(row["pose_image"], "RGB").any()
    errors = lake.read("errors", filter="stage = 'render'").to_pylist()
    assert sorted(e["key"] for e in errors)[-1] == "zz-broken/standard" and len(errors) == 3
    assert all("character load failed" in e["reason"] for e in errors)
    run = lake.read("runs", filter=f"run_id = '{report.run_id}'").to_pylist()[0]
    assert run["status"] == "completed"
    # The recorded ratio is item wall time over time inside the render call, and an item's wall time contains
    # its render call (a swap or a missing timer breaks one of these).
    metrics = json.loads(run["metrics"])
    assert 0 < report.render_seconds <= report.item_seconds
    assert metrics["overhead_ratio"] == pytest.approx(report.item_seconds / report.render_seconds)


def test_rerun_skips_done_keys_and_rerenders_a_lost_row_byte_identically(rendered):
    from serialgen.stages.render import run_render

    settings, _ = rendered
    lake = settings.open_lake()
    key = ("proc-0008", lake.read("renders", filter="character_id = 'proc-0008'").column("pose_id")[0].as_py(), 0)
    where = f"character_id = '{key[0]}' AND pose_id = '{key[1]}' AND view_id = 0"
    before = lake.read("renders", filter=where).to_pylist()[0]
    lake.delete("renders", where)
    calls = []
    report = run_render(settings, progress=lambda done, total: calls.append((done, total)))
    assert (report.skipped, report.rendered, report.failed, report.standards_rendered) == (3, 1, 2, 0)
    assert calls[-1] == (9, 9)   # 6 planned items + 3 standards, all settled
    after = lake.read("renders", filter=where).to_pylist()[0]
    for column in ("rgba", "mask", "pose_image", "keypoints", "camera", "seed"):
        assert after[column] == before[column], column
    assert lake.count("renders") == 4 and lake.count("errors") == 3   # failures re-reported, not duplicated


def test_flow_publishes_counts_and_a_contact_sheet(rendered, prefect_harness):
    from prefect.client.orchestration import get_client

    from serialgen.flows.render import render

    settings, _ = rendered
    config = str(Path(settings.lake).parent / "render.yaml")
    result = render(lake=settings.lake, config=config, limit=2, contact_sheet_characters=2)
    assert result["planned"] == 2 and result["skipped"] == 2 and result["rendered"] == 0
    sheet = decode_image(Path(result["contact_sheet"]).read_bytes(), "RGB")
    # Two characters a row: the standard view and its 2 renders (128 x 192), each 192 tall plus a 2-pixel gutter.
    assert sheet.shape == (2 * (192 + 2), 3 * (128 + 2), 3)

    async def keys():
        async with get_client() as client:
            return {a.key for a in await client.read_artifacts()}

    import asyncio

    assert {"render-counts", "render-progress", "render-contact-sheet"} <= asyncio.run(keys())
