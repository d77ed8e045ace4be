"""Preprocessors: tiny nets exported in U2-Net / YOLOX / DWPose conventions load through the real
loaders and learn; the DWPose decoding conventions; missing files are one clear line."""

from __future__ import annotations

import numpy as np
import pytest

from serialgen.checkpoints import preprocessors_dir
from serialgen.config import load_settings
from serialgen.preprocessing import DETECTOR_FILE, MASK_FILE, POSE_FILE, load_preprocessors
from serialgen.preprocessing.evaluation import evaluate
from serialgen.preprocessing.pose import (
    COCO17_OF_COCO18,
    box_to_centre_scale,
    coco17_to_coco18,
    crop_matrix,
    decode_simcc,
    yolox_grid,
)
from standardize_data import install_preprocessors, labelled_figures


def test_tiny_onnx_models_load_through_rembg_and_the_dwpose_runner_and_beat_baselines(tiny_preprocessors, settings):
    install_preprocessors(tiny_preprocessors, settings)
    pre = load_preprocessors(settings)
    from rembg.sessions.u2net_custom import U2netCustomSession

    assert isinstance(pre.mask_model.session, U2netCustomSession)
    inner = pre.mask_model.session.inner_session
    assert inner.get_inputs()[0].shape == [1, 3, 320, 320] and inner.get_outputs()[0].shape == [1, 1, 320, 320]
    detector, pose = pre.pose_model.detector, pre.pose_model.pose
    anchors = len(yolox_grid(pre.pose_model.detector_size)[0])
    assert detector.get_outputs()[0].shape == [1, anchors, 6]
    h, w = pre.pose_model.pose_size
    assert [o.shape for o in pose.get_outputs()] == [[1, 133, 2 * w], [1, 133, 2 * h]]
    assert set(pre.versions) == {"mask", "pose"} and "@" in pre.versions["pose"]

    held_out = labelled_figures(12, seed=99)
    scores = evaluate(pre, held_out, labelled_figures(12, seed=1))
    print(scores)
    assert scores["mask_iou"] > scores["mask_iou_whole_frame"] + 0.3
    assert scores["pck"] > scores["pck_mean_pose"] + 0.05
    image = held_out.images[0]
    mask, keypoints = pre.mask(image), pre.pose(image)
    assert mask.shape == image.shape[:2] and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    assert keypoints.shape == (18, 3) and keypoints.dtype == np.float32


def test_an_images_own_alpha_is_its_mask(tiny_preprocessors, settings):
    install_preprocessors(tiny_preprocessors, settings)
    pre = load_preprocessors(settings)
    rgba = np.zeros((40, 30, 4), np.uint8)
    rgba[5:30, 10:20] = (200, 30, 30, 255)
    mask = pre.mask(rgba)
    assert (mask == np.where(rgba[..., 3] >= 128, 255, 0)).all()


@pytest.mark.parametrize("missing", [MASK_FILE, DETECTOR_FILE, POSE_FILE])
def test_a_missing_model_file_is_one_line_naming_file_folder_and_purpose(tiny_preprocessors, settings, missing):
    folder = install_preprocessors(tiny_preprocessors, settings)
    (folder / missing).unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_preprocessors(settings)
    message = str(info.value)
    assert "\n" not in message and missing in message and str(folder) in message
    assert "train-preprocessors" in message


def test_configured_real_weights_are_checked_before_any_library_call(tmp_path):
    present = tmp_path / "yolox_l.onnx"
    present.write_bytes(b"not loaded: the missing file is reported first")
    settings = load_settings(lake=str(tmp_path / "lake"), profile="sd15", preprocessing={
        "mask_model": str(tmp_path / "u2net.onnx"), "pose_detector": str(present),
        "pose_model": str(tmp_path / "dw-ll_ucoco_384.onnx")})
    with pytest.raises(FileNotFoundError, match=r"missing u2net.onnx in .*: the rembg background-mask model"):
        load_preprocessors(settings)
    assert not preprocessors_dir(settings).exists()


def test_coco18_from_wholebody_body_points_follows_dwpose():
    body = np.zeros((17, 3), np.float32)
    body[:, 0], body[:, 1], body[:, 2] = np.arange(17), 100 + np.arange(17), 0.9
    body[6, 2] = 0.2  # right shoulder below the visibility threshold
    out = coco17_to_coco18(body, threshold=0.3)
    for i18, i17 in enumerate(COCO17_OF_COCO18):
        if i17 >= 0:
            assert out[i18, 0] == i17
    assert tuple(out[1, :2]) == (5.5, 105.5) and out[1, 2] == 0.0   # neck: mean of shoulders, not visible
    body[6, 2] = 0.8
    assert coco17_to_coco18(body, threshold=0.3)[1, 2] == 1.0


def test_simcc_decoding_maps_crop_bins_back_to_image_pixels():
    size = (64, 48)
    box = np.array([30.0, 20.0, 70.0, 140.0])
    centre, scale = box_to_centre_scale(box, size[1] / size[0])
    point = np.array([52.0, 77.0])
    in_crop = crop_matrix(centre, scale, size) @ np.append(point, 1.0)
    simcc_x, simcc_y = np.zeros((1, 2 * size[1])), np.zeros((1, 2 * size[0]))
    simcc_x[0, round(in_crop[0] * 2)], simcc_y[0, round(in_crop[1] * 2)] = 0.8, 0.6
    decoded = decode_simcc(simcc_x, simcc_y, centre, scale, size)[0]
    pixel = scale[0] / size[1]  # image pixels per crop pixel
    assert np.allclose(decoded[:2], point, atol=pixel) and decoded[2] == pytest.approx(0.6)
