"""The evaluation metrics' math on constructed cases, with the tiny random CLIP and face models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from evaluation_models_data import build_tiny_clip, build_tiny_face_model

from serialgen.evaluation.clip import ClipModel
from serialgen.evaluation.face import ARCFACE_TEMPLATE, FACE_KEYPOINTS, FaceEmbedder, align_face
from serialgen.evaluation.metrics import (ap_similarity, clip_embeddings, clip_i, clip_t, face_embeddings, face_sim,
                                          remove_background)
from serialgen.training.metrics import psnr, ssim


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> ClipModel:
    return ClipModel(build_tiny_clip(tmp_path_factory.mktemp("clip")))


@pytest.fixture(scope="module")
def face_model(tmp_path_factory) -> FaceEmbedder:
    return FaceEmbedder(build_tiny_face_model(tmp_path_factory.mktemp("face") / "tiny_arcface.onnx"))


def _figure(background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A two-colour figure pasted on ``background``, and its foreground mask."""
    image, mask = background.copy(), np.zeros(background.shape[:2], np.uint8)
    mask[20:80, 20:44] = 255
    image[20:50, 20:44] = (200, 40, 40)
    image[50:80, 20:44] = (40, 40, 200)
    return image, mask


def test_identical_images_score_clip_i_100(clip):
    image = np.random.default_rng(0).integers(0, 256, (96, 64, 3), dtype=np.uint8)
    embeddings = clip_embeddings(clip, [image, image.copy()], mask_fn=lambda im: np.full(im.shape[:2], 255, np.uint8))
    assert clip_i(embeddings[:1], embeddings[1:])[0] == pytest.approx(100.0, abs=1e-3)


def test_background_removal_brings_the_same_foreground_closer(clip):
    rng = np.random.default_rng(1)
    first, mask = _figure(rng.integers(0, 256, (96, 64, 3), dtype=np.uint8))
    second, _ = _figure(np.full((96, 64, 3), (30, 160, 60), np.uint8))
    removed = clip_embeddings(clip, [first, second], mask_fn=lambda im: mask)
    kept = clip_embeddings(clip, [first, second])
    with_removal, without = clip_i(removed[:1], removed[1:])[0], clip_i(kept[:1], kept[1:])[0]
    assert with_removal == pytest.approx(100.0, abs=1e-3)
    assert without < with_removal - 1.0
    assert (remove_background(first, lambda im: mask)[~mask.astype(bool)] == 255).all()


def test_ap_clip_i_of_identical_outputs_is_100_and_skips_same_prompt_pairs(clip):
    image = np.random.default_rng(2).integers(0, 256, (96, 64, 3), dtype=np.uint8)
    k = 4
    outputs = clip_embeddings(clip, [image] * k)
    score, pairs = ap_similarity(outputs @ outputs.T, [f"prompt {i}" for i in range(k)])
    assert 100 * score == pytest.approx(100.0, abs=1e-3) and pairs == k * (k - 1) // 2
    # Two seeds of each of two prompts: only the 4 cross-prompt pairs count.
    assert ap_similarity(outputs @ outputs.T, ["a", "a", "b", "b"])[1] == 4
    assert ap_similarity(outputs[:2] @ outputs[:2].T, ["a", "a"])[1] == 0


def test_ap_clip_i_is_the_mean_of_pairwise_clip_i(clip):
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (96, 64, 3), dtype=np.uint8), np.full((96, 64, 3), (220, 30, 30), np.uint8),
              np.repeat(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], 96, 0).repeat(3, 2)]
    e = clip_embeddings(clip, images)
    expected = np.mean([clip_i(e[i:i + 1], e[j:j + 1])[0] for i, j in ((0, 1), (0, 2), (1, 2))])
    assert 100 * ap_similarity(e @ e.T, ["x", "y", "z"])[0] == pytest.approx(expected, abs=1e-4)
    assert expected < 99.5  # different images: the identical-output case above is not trivially 100


def test_clip_t_is_100_cosine_of_unit_embeddings(clip):
    image = np.random.default_rng(4).integers(0, 256, (96, 64, 3), dtype=np.uint8)
    images, texts = clip.embed_images([image]), clip.embed_texts(["a person in the park"])
    assert torch.allclose(images.norm(dim=-1), torch.ones(1)) and torch.allclose(texts.norm(dim=-1), torch.ones(1))
    assert clip_t(images, texts)[0] == pytest.approx(100 * float(images[0] @ texts[0]), abs=1e-4)


def _face_keypoints(scale: float, offset: tuple[float, float]) -> np.ndarray:
    keypoints = np.zeros((18, 3), np.float32)
    for row, index in enumerate(FACE_KEYPOINTS):
        keypoints[index] = (*(ARCFACE_TEMPLATE[row] * scale + offset), 0.9)
    return keypoints


def test_face_alignment_maps_keypoints_onto_the_arcface_template():
    image = np.full((300, 300, 3), 255, np.uint8)
    keypoints = _face_keypoints(2.0, (40.0, 30.0))
    nose = np.rint(keypoints[0, :2]).astype(int)
    image[nose[1] - 3:nose[1] + 4, nose[0] - 3:nose[0] + 4] = (255, 0, 0)
    crop = align_face(image, keypoints)
    x, y = np.rint(ARCFACE_TEMPLATE[2]).astype(int)
    assert crop.shape == (112, 112, 3) and tuple(crop[y, x]) == (255, 0, 0)
    assert tuple(crop[5, 5]) == (255, 255, 255)
    keypoints[FACE_KEYPOINTS[0], 2] = 0.1  # one eye not found: no face
    assert align_face(image, keypoints) is None


def test_faceless_images_are_excluded_from_face_sim_and_counted(face_model):
    rng = np.random.default_rng(5)
    faces = [rng.integers(0, 256, (200, 200, 3), dtype=np.uint8) for _ in range(2)]
    faceless = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)
    with_face, without_face = _face_keypoints(1.2, (20, 20)), np.zeros((18, 3), np.float32)
    poses = {id(faces[0]): with_face, id(faces[1]): with_face, id(faceless): without_face}
    pose_fn = lambda image: poses[id(image)]  # noqa: E731 - stands in for the pose estimator's keypoints
    outputs = face_embeddings(face_model, pose_fn, [faces[0], faces[1], faceless])
    reference = face_embeddings(face_model, pose_fn, [faces[0]])
    result = face_sim(outputs, np.repeat(reference, 3, axis=0))
    assert (result.n, result.total) == (2, 3) and result.detection_rate == pytest.approx(2 / 3)
    assert result.values[0] == pytest.approx(1.0, abs=1e-5) and np.isnan(result.values[2])
    assert result.values[1] < 0.999 and result.mean == pytest.approx(np.mean(result.values[:2]))


def test_psnr_matches_the_closed_form_for_a_constant_offset():
    base = torch.rand(2, 3, 16, 20) * 0.8
    for offset, data_range in ((0.1, 1.0), (0.05, 1.0), (12.0, 255.0)):
        a = base * data_range
        expected = 10 * np.log10(data_range ** 2 / offset ** 2)
        assert psnr(a + offset, a, data_range=data_range).numpy() == pytest.approx([expected] * 2, abs=1e-3)
    assert torch.isinf(psnr(base, base)).all()


def test_ssim_matches_the_closed_form_and_an_independent_implementation():
    from skimage.metrics import structural_similarity

    # Constant images: variances and covariance vanish, SSIM = (2 a b + C1) / (a^2 + b^2 + C1).
    a, b, c1 = 0.3, 0.6, 0.01 ** 2
    x, y = torch.full((1, 3, 24, 24), a), torch.full((1, 3, 24, 24), b)
    assert ssim(x, y).item() == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-3)
    assert ssim(x * 255, y * 255, data_range=255).item() == pytest.approx(ssim(x, y).item(), abs=1e-4)
    rng = np.random.default_rng(6)
    p = rng.random((48, 40, 3)).astype(np.float32)
    t = np.clip(p + rng.normal(0, 0.1, p.shape), 0, 1).astype(np.float32)
    reference = structural_similarity(p, t, data_range=1.0, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False)
    ours = ssim(torch.from_numpy(p).permute(2, 0, 1)[None], torch.from_numpy(t).permute(2, 0, 1)[None]).item()
    assert ours == pytest.approx(reference, abs=5e-3) and ours < 0.99


def test_missing_model_files_name_file_folder_and_purpose(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"open_clip_config\.json in .*clip_missing.*CLIP-I"):
        ClipModel(tmp_path / "clip_missing")
    (tmp_path / "clip_missing").mkdir()
    (tmp_path / "clip_missing" / "open_clip_config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"open_clip_model\.safetensors"):
        ClipModel(tmp_path / "clip_missing")
    with pytest.raises(FileNotFoundError, match=r"w600k_r50\.onnx in .*Face Sim"):
        FaceEmbedder(tmp_path / "w600k_r50.onnx")
