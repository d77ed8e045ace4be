"""Assets stage: procedural characters, importers + audit, retargeting, motions and the pose library."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from assets_data import (
    EXPECTED, MOTION_FILES, MOTION_FORMS, build_character_files, build_motion_files, build_motion_forms, crash_on_poison,
    pose_distance)
from serialgen.assets import procedural
from serialgen.blender_io import reset_scene
from serialgen.config import load_settings
from serialgen.storage.images import decode_image
from serialgen.synthetic import poses, procedural_motion, skeleton
from serialgen.synthetic.body_mesh import EXPRESSIONS
from serialgen.synthetic.character_spec import CharacterSpec, sample_spec
from serialgen.synthetic.rotations import bone_frame

POSE_BONES = [skeleton.PREFIX + b for b in skeleton.POSED_BONES]


# -- files built once per session (bpy in this process) ---------------------------------------------------------
@pytest.fixture(scope="session")
def asset_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("assets")
    marker = root / "blend_script_ran.txt"
    chars = build_character_files(root / "characters", marker)
    clips = build_motion_files(root / "motions")
    return {"characters": chars, "motions": root / "motions", "clips": clips, "marker": marker}


@pytest.fixture(scope="session")
def stage(asset_dirs, tmp_path_factory):
    """One stage run over the test files (2 worker processes), then a rerun of the same sources."""
    from serialgen.stages.assets import run_assets

    settings = load_settings(lake=str(tmp_path_factory.mktemp("lake") / "lake"))
    first = run_assets(settings, characters=str(asset_dirs["characters"]), motions=str(asset_dirs["motions"]),
                       procedural_motions=True, workers=2)
    lake = settings.open_lake()
    counts = {t: lake.count(t) for t in ("characters", "motions", "poses", "errors")}
    second = run_assets(settings, characters=str(asset_dirs["characters"]), motions=str(asset_dirs["motions"]),
                        procedural_motions=True, workers=2)
    return {"settings": settings, "lake": lake, "first": first, "second": second, "counts": counts}


def _status_by_file(lake) -> dict[str, tuple[str, str | None]]:
    rows = lake.read("characters", columns=["source_uri", "status", "reason"]).to_pylist()
    return {Path(r["source_uri"]).name: (r["status"], r["reason"]) for r in rows}


# -- pure data ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, canonical", [
    ("mixamorig:LeftForeArm", "LeftForeArm"), ("mixamorig1:Hips", "Hips"), ("thigh_l", "LeftUpLeg"),
    ("calf_r", "RightLeg"), ("spine_03", "Spine2"), ("J_Bip_L_UpperArm", "LeftArm"), ("upper_arm.R", "RightArm"),
    ("LeftHip", "LeftUpLeg"), ("clavicle_l", "LeftShoulder"), ("Armature|mixamorig:RightToeBase", "RightToeBase"),
    ("Root", None), ("LeftHandIndex1", None), ("hand", None),
])
def test_bone_name_mapping(name, canonical):
    assert skeleton.canonical_name(name) == canonical


def test_bone_frame_matches_blender():
    import bpy
    from mathutils import Vector

    for b in skeleton.BONES:
        d = np.subtract(b.tail, b.head)
        expected = np.array(bpy.types.Bone.MatrixFromAxisRoll(Vector(d).normalized(), 0.0))
        np.testing.assert_allclose(bone_frame(d), expected, atol=1e-5)


def test_pose_dedup_threshold_and_library():
    rng = np.random.default_rng(0)
    base = np.tile([1.0, 0, 0, 0], (len(POSE_BONES), 1))
    near = base.copy()
    near[3] = [np.cos(0.01), np.sin(0.01), 0, 0]          # 0.02 rad away at one joint
    far = base.copy()
    far[3] = [np.cos(0.2), np.sin(0.2), 0, 0]             # 0.4 rad away
    flipped = -far                                         # same rotation, other quaternion sign
    keep = poses.dedup(np.stack([base, near, far, flipped]), threshold=0.08)
    assert keep.tolist() == [True, False, True, False]
    assert pose_distance(base, far) == pytest.approx(0.4, abs=1e-6)
    keep = poses.dedup(np.stack([near, far]), threshold=0.08, library=base[None])
    assert keep.tolist() == [False, True]
    random = rng.normal(size=(50, len(POSE_BONES), 4))
    assert poses.dedup(random / np.linalg.norm(random, axis=-1, keepdims=True), threshold=0.08).all()


def test_procedural_motions_cover_kinds_within_limits():
    clips = procedural_motion.procedural_clips(seed=0, variants=1)
    assert [c.name.split("-")[0] for c in clips] == list(procedural_motion.KINDS)
    for clip in clips:
        assert clip.rotations.shape[1:] == (len(POSE_BONES), 4)
        np.testing.assert_allclose(np.linalg.norm(clip.rotations, axis=-1), 1.0, atol=1e-5)
        assert (clip.rotations[..., 0] >= 0).all()
        moving = np.ptp(clip.rotations, axis=0).max()
        assert moving > 0.05, clip.name  # every clip moves
    # a knee asked to bend backwards or past its limit is clamped to [0, 150] degrees
    bent = procedural_motion.angles_to_rotations({"LeftLeg": {"x": 400}})
    straight = procedural_motion.angles_to_rotations({"LeftLeg": {"x": -90}})
    knee = skeleton.POSED_BONES.index("LeftLeg")
    assert np.degrees(2 * np.arccos(bent[knee, 0])) == pytest.approx(150, abs=0.01)
    np.testing.assert_allclose(straight[knee], [1, 0, 0, 0], atol=1e-6)


# -- procedural characters and retargeting (bpy in this process) ---------------------------------------------------
def test_procedural_character_is_rigged_clothed_and_cheap(tmp_path):
    import bpy

    spec = procedural.generate_glb(42, tmp_path / "c.glb")
    assert spec == sample_spec(42) and spec != sample_spec(43)
    reset_scene()
    bpy.ops.import_scene.gltf(filepath=str(tmp_path / "c.glb"), disable_bone_shape=True)
    arm = bpy.data.objects[skeleton.ARMATURE_NAME]
    assert sorted(b.name for b in arm.data.bones) == sorted(b.full_name for b in skeleton.BONES)
    body, face = bpy.data.objects["Body"], bpy.data.objects["Face"]
    assert len(body.data.vertices) < 5000                               # cheap to pose and render
    assert {g.name for g in body.vertex_groups} <= {b.full_name for b in skeleton.BONES}
    assert set(EXPRESSIONS) <= {k.name for k in face.data.shape_keys.key_blocks}
    assert {"skin", "hair", "top", "shoes"} <= {m.name for m in body.data.materials}
    points = np.array([body.matrix_world @ v.co for v in body.data.vertices])
    assert points[:, 2].min() == pytest.approx(0.0, abs=0.01)           # feet on the ground
    assert points[:, 2].max() == pytest.approx(spec.height, rel=0.08)    # hair adds a little
    eyes_mouth = np.array([face.matrix_world @ v.co for v in face.data.vertices])
    head = points[points[:, 2] > 0.85 * spec.height]
    assert eyes_mouth[:, 1].mean() < head[:, 1].mean() - 0.05            # the face is on the -Y side


def test_retargeted_pose_same_on_two_proportions():
    """A clip frame applied to two differently built characters reads back as the same canonical rotations,
    and puts every limb in the same direction; also on a rig whose rest pose is a T-pose."""
    import bpy
    from mathutils import Vector

    from serialgen.assets.retarget import apply_pose, canonical_rotations

    pose = procedural_motion.make_clip("dance", 5).rotations[7]
    a, b = sample_spec(1), sample_spec(2)
    a = CharacterSpec(**{**a.__dict__, "height": 1.5, "factors": {**a.factors, "legs": 0.9, "arms": 1.08}})
    b = CharacterSpec(**{**b.__dict__, "height": 1.9, "factors": {**b.factors, "legs": 1.1, "arms": 0.92}})

    def posed(spec, t_pose=False):
        reset_scene()
        arm = procedural.build_character(spec)
        if t_pose:  # raise the arm chains to horizontal in the rest pose, other rolls
            bpy.context.view_layer.objects.active = arm
            bpy.ops.object.mode_set(mode="EDIT")
            for side, sign in (("Left", 1), ("Right", -1)):
                for name in ("Arm", "ForeArm", "Hand"):
                    eb = arm.data.edit_bones[skeleton.PREFIX + side + name]
                    length = eb.length
                    eb.tail = eb.head + Vector((sign * length, 0, 0))
                    eb.roll = 0.7
            bpy.ops.object.mode_set(mode="OBJECT")
        apply_pose(arm, POSE_BONES, pose)
        bpy.context.view_layer.update()
        rotations = canonical_rotations(arm)
        directions = {}
        for name in ("LeftArm", "LeftForeArm", "RightUpLeg", "RightLeg", "Spine2", "Head"):
            pb = arm.pose.bones[skeleton.PREFIX + name]
            child = {"LeftArm": "LeftForeArm", "LeftForeArm": "LeftHand", "RightUpLeg": "RightLeg",
                     "RightLeg": "RightFoot", "Spine2": "Neck", "Head": "HeadTop_End"}[name]
            v = np.array(arm.pose.bones[skeleton.PREFIX + child].head - pb.head)
            directions[name] = v / np.linalg.norm(v)
        return rotations, directions

    (ra, da), (rb, db), (rt, dt) = posed(a), posed(b), posed(b, t_pose=True)
    for other in (rb, rt):
        assert max(pose_distance(ra[i], other[i]) for i in range(len(ra))) < 1e-3
    assert max(pose_distance(ra[i], pose[i]) for i in range(len(ra))) < 1e-3
    for name in da:
        np.testing.assert_allclose(da[name], db[name], atol=1e-4)
        np.testing.assert_allclose(da[name], dt[name], atol=1e-4)


def test_blend_embedded_script_never_runs(asset_dirs):
    """The test .blend really carries an auto-run script (control), and our loader does not run it."""
    import bpy

    from serialgen.assets.characters import find_character, load_file

    marker = asset_dirs["marker"]
    blend = asset_dirs["characters"] / "char_blend.blend"
    bpy.context.preferences.filepaths.use_scripts_auto_execute = True
    bpy.ops.wm.open_mainfile(filepath=str(blend), load_ui=False, use_scripts=True)
    assert marker.exists(), "control: the registered text block should run when auto-execution is on"
    marker.unlink()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.context.preferences.filepaths.use_scripts_auto_execute = True   # even if a user turned it on
    load_file(blend)
    assert not marker.exists()
    assert len(find_character().meshes) == 2


@pytest.mark.parametrize("name", sorted(MOTION_FILES))
def test_motion_files_round_trip(asset_dirs, name):
    from serialgen.assets.motions import extract_clips

    clip = asset_dirs["clips"][name]
    [got] = extract_clips(asset_dirs["motions"] / name, frame_step=3)
    assert got.n_frames == clip.n_frames and got.fps == pytest.approx(clip.fps, rel=1e-3)
    expected = clip.rotations[got.frames]
    worst = max(pose_distance(g[i], e[i]) for g, e in zip(got.rotations, expected) for i in range(len(g)))
    assert np.degrees(worst) < 0.5


@pytest.fixture(scope="module")
def motion_forms(tmp_path_factory):
    folder = tmp_path_factory.mktemp("motion_forms")
    return folder, build_motion_forms(folder)


@pytest.mark.parametrize("name", sorted(n for n, (_, _, form) in MOTION_FORMS.items() if form != "few_joints"))
def test_motion_files_in_the_forms_people_have(motion_forms, name):
    """Node-hierarchy glTF (no skin, no mesh), skinless FBX, BVH in other naming schemes -> the keyed clip."""
    from serialgen.assets.motions import extract_clips

    folder, clips = motion_forms
    if MOTION_FORMS[name][2] == "node_hierarchy":
        gltf = json.loads((folder / name).read_bytes()[20:20 + int.from_bytes((folder / name).read_bytes()[12:16],
                                                                              "little")])
        assert "skins" not in gltf and "meshes" not in gltf and gltf["nodes"][0]["name"].startswith("mixamorig:")
    clip = clips[name]
    [got] = extract_clips(folder / name, frame_step=3)
    assert got.n_frames == clip.n_frames
    expected = clip.rotations[got.frames]
    daz = MOTION_FORMS[name][2] == "daz"   # DAZ rigs have no Spine2: its bend is read into the chest bone
    bones = [i for i, b in enumerate(skeleton.POSED_BONES) if not (daz and b in ("Spine1", "Spine2"))]
    worst = max(pose_distance(g[i], e[i]) for g, e in zip(got.rotations, expected) for i in bones)
    assert np.degrees(worst) < 0.5
    assert 1 < poses.dedup(got.rotations, 0.08).sum() <= len(got.rotations), "the clip yields library poses"


def test_motion_with_too_few_canonical_joints_is_rejected_with_the_reason(motion_forms):
    from serialgen.assets.motions import MotionLoadError, extract_clips

    folder, _ = motion_forms
    with pytest.raises(MotionLoadError, match="missing LeftArm, RightArm, LeftForeArm"):
        extract_clips(folder / "few_joints.glb")


# -- the stage: worker processes, lake, resumability ---------------------------------------------------------------
def test_stage_accepts_and_rejects_with_reasons(stage, asset_dirs):
    status = _status_by_file(stage["lake"])
    assert set(status) == set(EXPECTED)
    for name, expected in EXPECTED.items():
        got_status, reason = status[name]
        if expected == "accepted":
            assert got_status == "accepted" and reason is None, (name, reason)
        else:
            assert got_status == "rejected" and reason.split(":")[0] == expected, (name, reason)
    assert "missing or unreadable image" in status["missing_texture.gltf"][1]
    assert "no UVs" in status["textured_without_uvs.glb"][1]
    assert not asset_dirs["marker"].exists()
    report = stage["first"]
    assert report.characters == {"accepted": 4, "duplicate": 1, "no_armature": 1, "not_skinned": 1,
                                 "texture_defect": 2, "too_few_canonical_bones": 1, "unreadable": 2}


def test_stage_rows_are_usable(stage, tmp_path):
    table = stage["lake"].read("characters", filter="status = 'accepted'").to_pylist()
    for row in table:
        assert row["normalized_glb"][:4] == b"glTF" and row["thumbnail"][:4] == b"\x89PNG"
        assert row["n_canonical_bones"] == 25 and 1.4 < row["height_m"] < 2.0
        assert len(row["signature"]) > 40 and "normalisation" in json.loads(row["attributes"])
    turned = [r for r in table if r["source_uri"].endswith("unreal_names_cm_turned.glb")][0]
    notes = json.loads(turned["attributes"])["normalisation"]
    assert notes["unit_scale"] == 0.01 and notes["upright_rotation_degrees"] == pytest.approx(90, abs=0.1)
    assert turned["height_m"] == pytest.approx(sample_spec(8).height, rel=0.05)
    dup = stage["lake"].read("characters", filter="reason LIKE 'duplicate%'").to_pylist()[0]
    original = [r for r in table if r["source_uri"].endswith("char_glb.glb")][0]
    assert json.loads(dup["attributes"])["duplicate_of"] == original["character_id"]
    # the normalised GLB re-imports with the documented conventions
    glb = tmp_path / "normalised.glb"
    glb.write_bytes(original["normalized_glb"])
    from serialgen.assets.characters import import_character

    char = import_character(glb)
    assert char.armature.name == skeleton.ARMATURE_NAME and len(char.mapping) == 25
    glb.write_bytes(turned["normalized_glb"])  # renamed bones, vertex groups follow; metres, facing -Y
    char = import_character(glb)
    assert {g.name for g in char.meshes[0].vertex_groups} <= {b.full_name for b in skeleton.BONES}
    left = char.armature.data.bones["mixamorig:LeftArm"].head_local
    assert left[0] > 0.1 and abs(left[1]) < 0.05 and char.armature.data.bones["mixamorig:Head"].head_local[2] > 1.2


def test_stage_motions_and_pose_library(stage, asset_dirs):
    lake, report = stage["lake"], stage["first"]
    motions = lake.read("motions").to_pylist()
    files = {Path(m["source_uri"]).name for m in motions if m["format"] != "procedural"}
    assert files == set(MOTION_FILES)
    assert sum(m["format"] == "procedural" for m in motions) == len(procedural_motion.KINDS) * 2
    assert report.motion_files == 4 and report.motion_files_rejected == 1 and report.clips == len(motions)
    pose_rows = lake.read("poses").to_pylist()
    assert len(pose_rows) == report.new_poses == sum(m["n_poses"] for m in motions) < report.sampled_poses
    assert len({p["pose_id"] for p in pose_rows}) == len(pose_rows)
    assert all(p["bones"] == POSE_BONES and len(p["rotations"]) == len(POSE_BONES) for p in pose_rows[:10])
    rotations = np.array([p["rotations"] for p in pose_rows], np.float32)
    threshold = stage["settings"].assets.pose_dedup_threshold
    sample = rotations[:: max(1, len(rotations) // 60)]
    closest = min(pose_distance(x, y) for i, x in enumerate(sample) for y in sample[i + 1:])
    assert closest > threshold
    errors = {Path(e["key"]).name: e["reason"] for e in lake.read("errors").to_pylist()}
    assert set(errors) == {"corrupt.bvh", "corrupt.glb", "truncated.fbx"}


def test_stage_rerun_skips_done_files_and_duplicates_nothing(stage):
    second, lake = stage["second"], stage["lake"]
    assert second.characters == {} and second.characters_skipped == len(EXPECTED)
    assert second.motion_files_skipped == 3 and second.new_poses == 0
    assert {t: lake.count(t) for t in ("characters", "motions", "poses", "errors")} == stage["counts"]
    runs = lake.read("runs", filter="stage = 'assets'").to_pylist()
    assert [r["status"] for r in runs] == ["completed", "completed"]


def test_worker_pool_blames_only_the_crashing_item():
    from serialgen.assets.worker import WorkerCrash, WorkerPool

    items = ["a", "b", "poison", "c", "d", "e"]
    with WorkerPool(2, initializer=None) as pool:  # the pool logic only: no bpy needed
        results = dict(pool.map(crash_on_poison, items, 2))
    assert isinstance(results.pop("poison"), WorkerCrash)
    assert results == {"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"}


@pytest.mark.slow
def test_assets_flow_publishes_table_artifact(prefect_harness, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from serialgen.flows.assets import assets

    sheet = tmp_path / "sheet.png"
    result = assets(lake=str(tmp_path / "lake"), procedural=2, procedural_motions=True, workers=1,
                    contact_sheet=str(sheet))
    assert result["characters"] == {"accepted": 2}
    # a new lake: every sampled pose is new, and each procedural clip gives at least one
    assert result["new_poses"] == result["total_poses"] >= len(procedural_motion.KINDS)
    assert result["contact_sheet"] == str(sheet)
    assert decode_image(sheet.read_bytes()).shape == (144, 2 * 96, 3)   # the 2 characters' 96 x 144 thumbnails
    lake = load_settings(lake=str(tmp_path / "lake")).open_lake()
    assert lake.count("characters") == 2 and lake.count("poses") == result["total_poses"]
    with get_client(sync_client=True) as client:
        key = ArtifactFilter(key=ArtifactFilterKey(any_=["assets-summary"]))
        artifacts = client.read_artifacts(artifact_filter=key)
    assert artifacts and {"table", "item", "count"} <= set(json.loads(artifacts[0].data)[0])


def test_sources_from_an_object_store(s3_server, asset_dirs, tmp_path):
    """Character folders on S3 (the lake's storage options) are listed and fetched with their sidecar files."""
    import boto3

    from serialgen.sources import list_sources
    from serialgen.stages.assets import CHARACTER_SUFFIXES

    endpoint, options = s3_server
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                          region_name="us-east-1")
    for name in ("char_glb.glb", "missing_texture.gltf", "missing_texture.bin"):
        client.upload_file(str(asset_dirs["characters"] / name), "lake", f"sources/chars/{name}")
    found = list_sources("s3://lake/sources/chars", CHARACTER_SUFFIXES, tmp_path, options)
    assert [uri for uri, _ in found] == ["s3://lake/sources/chars/char_glb.glb",
                                         "s3://lake/sources/chars/missing_texture.gltf"]
    assert found[0][1].read_bytes() == (asset_dirs["characters"] / "char_glb.glb").read_bytes()
    assert (found[1][1].parent / "missing_texture.bin").exists()


@pytest.mark.slow
def test_cli_assets_command(prefect_harness, tmp_path):
    from typer.testing import CliRunner

    from serialgen.cli import app

    lake = str(tmp_path / "lake")
    result = CliRunner().invoke(app, ["--lake", lake, "assets", "--procedural", "1", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "accepted" in result.output and "contact sheet" in result.output
    assert load_settings(lake=lake).open_lake().count("characters") == 1
    missing = CliRunner().invoke(app, ["--lake", lake, "assets", "--characters", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
