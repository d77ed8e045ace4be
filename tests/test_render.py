"""Render library: plan, pose drawing, and bpy renders in this process (keypoints vs mask, standard rows, determinism)."""

from __future__ import annotations

import numpy as np
import pytest

from serialgen.config import RenderSettings
from serialgen.pose_drawing import draw_pose
from serialgen.render.devices import CyclesDevice, DeviceChoiceError, assigned_devices
from serialgen.storage.images import decode_image, decode_mask
from serialgen.synthetic.render_plan import plan_character, stable_seed
from serialgen.synthetic.skeleton import COLORS
from render_data import character_glbs, plan_items, pose_rows, random_pose

SETTINGS = RenderSettings()  # tiny profile: 128 x 192, Cycles CPU, 8 samples


# -- plan (no bpy) ---------------------------------------------------------------------------
def test_plan_is_stable_limited_and_seeded_by_key():
    poses = [f"p{i}" for i in range(10)]
    items = list(plan_items(["b", "a"], poses, poses_per_character=3, views_per_pose=2, seed=7))
    assert len(items) == 12 and [i.character_id for i in items[:6]] == ["a"] * 6
    assert items == list(plan_items(["a", "b"], poses, 3, 2, 7))
    assert len({i.key for i in items}) == 12
    # Adding poses or characters never changes the seed of an existing key.
    more = list(plan_items(["a", "b", "c"], poses, 3, 2, 7))
    assert {i.key: i.seed for i in items}.items() <= {i.key: i.seed for i in more}.items()
    assert items[0].seed == stable_seed(7, *items[0].key)
    assert list(plan_items(["a", "b"], poses, 3, 2, 7, limit=5)) == items[:5]
    assert {i.pose_id for i in items if i.character_id == "a"} != {i.pose_id for i in items if i.character_id == "b"}


# -- pose drawing (no bpy) -------------------------------------------------------------------
def test_pose_image_follows_the_openpose_convention():
    kps = np.zeros((18, 3), np.float32)
    kps[1] = (64, 40, 1)     # neck
    kps[2] = (40, 40, 1)     # right shoulder: limb 0 (neck - r_shoulder) is red
    kps[5] = (300, 40, 1)    # left shoulder outside the canvas: its limb is clipped, not dropped
    kps[3] = (30, 90, 0)     # right elbow invisible: no limb to it
    image = draw_pose(kps, 128, 192)
    assert image.shape == (192, 128, 3) and image.dtype == np.uint8
    assert tuple(image[40, 52]) == tuple(int(c * 0.6) for c in COLORS[0])    # between neck and r_shoulder
    assert tuple(image[40, 64]) == COLORS[1]                                 # neck joint, full colour
    assert image[40, 100].any()                                              # clipped limb toward l_shoulder
    assert not image[60:, :].any()                                           # nothing toward the hidden elbow
    assert not draw_pose(np.zeros((18, 3)), 64, 96).any()


# -- bpy in this process ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def glbs() -> dict[str, bytes]:
    return character_glbs([3, 11])


@pytest.fixture(scope="module")
def poses() -> dict[str, tuple[list[str], list[list[float]]]]:
    return {r["pose_id"]: (r["bones"], r["rotations"]) for r in pose_rows(3)}


@pytest.fixture(scope="module")
def worker():
    from serialgen.render.worker import RenderWorker

    return RenderWorker(SETTINGS)


def _items(character_id, poses, n_views=2):
    return plan_character(character_id, sorted(poses), len(poses), n_views, seed=0)


def test_visible_keypoints_lie_on_the_mask(worker, glbs, poses):
    cid = sorted(glbs)[0]
    result = worker.render_chunk(cid, glbs[cid], _items(cid, poses), poses, standard=False)
    assert not result.errors and len(result.renders) == 6
    visible_total = 0
    for row in result.renders:
        mask = decode_mask(row["mask"]) > 0
        rgba = decode_image(row["rgba"], "RGBA")
        assert rgba.shape == (192, 128, 4) and set(np.unique(decode_mask(row["mask"]))) <= {0, 255}
        assert np.array_equal(mask, rgba[..., 3] > 127) and 0 < mask.mean() < 0.6
        ys, xs = np.nonzero(mask)
        for x, y, v in row["keypoints"]:
            if v > 0:
                visible_total += 1
                assert np.min(np.hypot(xs + 0.5 - x, ys + 0.5 - y)) <= 3.0, (row["pose_id"], row["view_id"], x, y)
        assert len(row["camera"]) == 14 and row["render_seconds"] > 0
    assert visible_total >= 6 * 8


def test_keypoints_behind_the_head_and_out_of_frame_are_invisible(worker, glbs, poses):
    import bpy
    from mathutils import Vector

    from serialgen.render import camera, keypoints, posing

    cid = sorted(glbs)[0]
    worker.load(cid, glbs[cid])
    posing.rest(worker.character)
    bpy.context.view_layer.update()
    points = worker._posed_points(camera.Framing("full"))
    centre = Vector(((points.min(0) + points.max(0)) / 2).tolist())
    camera.place_viewpoint(worker.camera, camera.Viewpoint(180.0, 0.0, 1.2, 50.0), centre, points)  # from behind
    back = keypoints.project(worker.character, worker.parts, worker.camera, worker.height)
    assert back[[0, 14, 15], 2].tolist() == [0, 0, 0]          # nose and eyes hidden by the head
    assert back[[1, 2, 5, 8, 11], 2].tolist() == [1, 1, 1, 1, 1]  # neck, shoulders, hips seen from behind
    camera.place_viewpoint(worker.camera, camera.Viewpoint(0.0, 0.0, 0.35, 50.0), centre, points)  # too close
    close = keypoints.project(worker.character, worker.parts, worker.camera, worker.height)
    outside = (close[:, 0] < 0) | (close[:, 0] >= 128) | (close[:, 1] < 0) | (close[:, 1] >= 192)
    assert outside.any() and not close[outside, 2].any()


def test_standard_views_put_head_top_and_chin_on_fixed_rows(worker, glbs):
    from bpy_extras.object_utils import world_to_camera_view
    import bpy

    rows = []
    for cid in sorted(glbs):
        worker.load(cid, glbs[cid])
        standard = worker.render_standard()
        image = decode_image(standard["image"], "RGB")
        assert image.shape == (192, 128, 3) and (image[0, 0] == 255).all() and (image[-1, -1] == 255).all()
        mask = decode_mask(standard["mask"]) > 0
        top_row = int(np.nonzero(mask.any(axis=1))[0][0])
        _, chin = worker.face_rows()
        u, v, _ = world_to_camera_view(bpy.context.scene, worker.camera, chin)
        chin_row, chin_x = (1 - v) * 192, u * 128
        rows.append((top_row, chin_row))
        assert abs(top_row - 0.06 * 192) <= 2 and abs(chin_row - 0.18 * 192) <= 2
        assert abs(chin_x - 64) <= 1
        kps = np.asarray(standard["keypoints"])
        assert kps[:, 2].all()                                      # the whole template skeleton
        assert abs(kps[2, 1] - kps[5, 1]) < 1 and abs((kps[2, 0] + kps[5, 0]) / 2 - 64) < 1.5  # level, centred
    (top_a, chin_a), (top_b, chin_b) = rows
    assert abs(top_a - top_b) <= 2 and abs(chin_a - chin_b) <= 2


def test_same_key_renders_identical_bytes_whatever_came_before(worker, glbs, poses):
    cid = sorted(glbs)[1]
    items = _items(cid, poses, n_views=1)
    first = worker.render_chunk(cid, glbs[cid], items[:2], poses, standard=False).renders
    again = worker.render_chunk(cid, glbs[cid], [items[2], items[0]], poses, standard=False).renders
    for column in ("rgba", "mask", "pose_image", "keypoints", "camera", "expression", "framing"):
        assert first[0][column] == again[1][column], column
    assert first[0]["rgba"] != first[1]["rgba"]
    after_items = worker.render_standard()        # the standard view ignores the pose left by the items
    worker.character_id = None                    # force a fresh import
    worker.load(cid, glbs[cid])
    assert worker.render_standard() == after_items


def test_a_bad_character_fails_its_items_not_the_worker(worker, glbs, poses):
    items = _items("broken", poses, n_views=1)
    result = worker.render_chunk("broken", b"glTF-not-really", items, poses, standard=True)
    assert not result.renders and result.standard is None
    assert [k for k, _ in result.errors] == [i.error_key for i in items] + ["broken/standard"]
    assert all("character load failed" in reason for _, reason in result.errors)
    cid = sorted(glbs)[0]
    assert worker.render_chunk(cid, glbs[cid], items[:0], poses, standard=True).standard is not None


#: Knees and ankles: never in a head or bust close-up.
LOWER_BODY = [9, 10, 12, 13]
CUT_EDGE = {"bottom": (slice(-1, None), slice(None)), "top": (slice(0, 1), slice(None)),
            "left": (slice(None), slice(0, 1)), "right": (slice(None), slice(-1, None))}


@pytest.mark.parametrize("mode", ["head", "bust", "cutoff"])
def test_close_ups_and_cut_offs_keep_keypoint_visibility_exact(worker, glbs, mode):
    rng = np.random.default_rng(1)   # near-standing poses: a bust of a figure bent double may show its knees
    poses = {f"pose-{i}": (pose_rows(1)[0]["bones"], random_pose(rng, 12.0)) for i in range(3)}
    cid = sorted(glbs)[0]
    shares = {f"{m}_share": float(m == mode) for m in ("head", "bust", "cutoff")}
    worker.settings = SETTINGS.model_copy(update=shares)
    try:
        rows = worker.render_chunk(cid, glbs[cid], _items(cid, poses), poses, standard=False).renders
    finally:
        worker.settings = SETTINGS
    assert len(rows) == 6
    cuts = []
    for row in rows:
        mask = decode_mask(row["mask"]) > 0
        kps = np.asarray(row["keypoints"])
        ys, xs = np.nonzero(mask)
        for x, y, v in kps:
            inside = 0 <= x < 128 and 0 <= y < 192
            assert v == 0 or (inside and np.min(np.hypot(xs + 0.5 - x, ys + 0.5 - y)) <= 3.0), (row["framing"], x, y)
        if mode == "cutoff":
            side, cut = row["framing"].split("-")[1], float(row["framing"].split("-")[2])
            cuts.append(cut)
            assert row["framing"].startswith("cutoff-") and cut < 0.98
            if cut > 0.05:
                assert mask[CUT_EDGE[side]].any(), f"{row['framing']}: the frame cuts the figure on that side"
        else:
            assert row["framing"] == mode
            assert not kps[LOWER_BODY, 2].any(), "knees and ankles are out of a close-up"
            assert mask.mean() > 0.12, "the close-up fills the frame"
            if mode == "head":
                assert kps[[1, 2, 3, 5, 6], 2].sum() <= 3, "a head shot shows little below the neck"
    if mode == "cutoff":
        assert max(cuts) > 0.5 and sum(c > 0.1 for c in cuts) >= 4, cuts


def test_expressions_drive_allow_listed_keys_only_and_the_standard_is_neutral(worker, glbs, poses):
    cid = sorted(glbs)[1]
    worker.load(cid, glbs[cid])
    assert worker.expressions == ["angry", "smile", "surprised"]
    worker.settings = SETTINGS.model_copy(update={"expression_share": 1.0})
    try:
        rows = worker.render_chunk(cid, glbs[cid], _items(cid, poses), poses, standard=False).renders
    finally:
        worker.settings = SETTINGS
    weights = [dict((k, float(w)) for k, w in (kv.split(":") for kv in r["expression"].split(","))) for r in rows]
    assert all(set(w) <= {"angry", "smile", "surprised"} and all(0.2 <= v <= 1.0 for v in w.values()) for w in weights)
    assert any(0.2 <= v < 0.95 for w in weights for v in w.values()), "weights are partial"
    worker.render_standard()
    values = {k.name: k.value for m in worker.character.meshes if m.data.shape_keys
              for k in m.data.shape_keys.key_blocks[1:]}
    assert values and all(values[k] == 0.0 for k in worker.expressions)


def test_expression_allow_list_skips_body_and_clothing_morphs():
    from serialgen.synthetic.expressions import (
        DEFAULT_EXPRESSION_KEYS, DEFAULT_EXPRESSION_PREFIXES, expression_keys, sample_expression)

    names = ["jawOpen", "blendShape1.eyeBlinkLeft", "Fcl_MTH_A", "まばたき", "Joy", "aa", "vrc.v_oh", "smile",
             "BreastSize", "Muscular", "SkirtFit", "Belly", "blendShape1.Fat", "Key 1"]
    found = expression_keys(names, SETTINGS.expression_keys, SETTINGS.expression_prefixes)
    assert found == sorted(names[:8])
    assert expression_keys(names, ["SkirtFit"], []) == ["SkirtFit"], "the allow-list is configurable"
    assert len(DEFAULT_EXPRESSION_KEYS) > 100 and DEFAULT_EXPRESSION_PREFIXES
    rng = np.random.default_rng(0)
    draws = [sample_expression(rng, found, 0.7) for _ in range(400)]
    assert 0.62 < np.mean([bool(d) for d in draws]) < 0.78
    assert max(len(d) for d in draws) == 3 and all(0.2 <= v <= 1 for d in draws for v in d.values())


# -- GPU device choice (no bpy, no GPU) ------------------------------------------------------
def _card(backend: str, bus: int) -> CyclesDevice:
    suffix = "_OptiX" if backend == "OPTIX" else ""
    return CyclesDevice(backend, f"CUDA_NVIDIA H100 80GB HBM3_0000:{bus:02x}:00{suffix}")


#: A 4-GPU node as Cycles lists it: per backend, the card with a display last (bus 0x19 is card 0 by PCI order).
NODE = [_card(b, bus) for b in ("CUDA", "OPTIX") for bus in (0x3b, 0x5d, 0xbb, 0x19)] + [CyclesDevice("CPU", "CPU")]


@pytest.mark.parametrize(("gpu_ids", "listed", "visible", "buses"), [
    (["2"], [_card("CUDA", 0xbb), _card("OPTIX", 0xbb)], "2", [0xbb]),   # Ray's usual case: CUDA sees one card
    ([1], [_card("OPTIX", 0x3b), _card("OPTIX", 0xbb)], "3,1", [0x3b]),  # two visible cards: rank by id, not list order
    (["3"], NODE, "3", [0xbb]),                                         # Blender ignored CUDA_VISIBLE_DEVICES
    (["0", "2"], NODE, None, [0x19, 0x5d]),                            # no CUDA_VISIBLE_DEVICES: PCI order
])
def test_device_choice_enables_only_the_gpus_ray_assigned(gpu_ids, listed, visible, buses):
    assert assigned_devices(gpu_ids, listed, "OPTIX", visible) == [_card("OPTIX", b) for b in buses]


@pytest.mark.parametrize(("gpu_ids", "listed", "visible"), [
    ([], NODE, None),                                     # device GPU without a Ray GPU
    (["1"], [_card("CUDA", 0x19)], "2"),                   # the assigned GPU is not the visible one
    (["0"], [_card("CUDA", 0x19), _card("CUDA", 0x3b)], "0,1,2"),   # Cycles lists fewer cards than visible
    (["5"], NODE, None),                                  # more GPUs assigned than the node has
])
def test_device_choice_refuses_to_guess(gpu_ids, listed, visible):
    with pytest.raises(DeviceChoiceError):
        assigned_devices(gpu_ids, listed, "CUDA", visible)


def test_device_choice_skips_a_backend_cycles_does_not_list():
    assert assigned_devices(["0"], [_card("CUDA", 0x19)], "OPTIX", "0") == []
