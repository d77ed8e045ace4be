"""Estimator-like errors on the input side of pairs: masks as a segmenter, keypoints as a pose estimator."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from composite_data import STANDING, write_characters
from serialgen.compositing.backgrounds import procedural_background
from serialgen.compositing.estimator_noise import (
    LEFT_RIGHT, EstimatorNoise, confidence, degrade_keypoints, degrade_mask, is_back_view)
from serialgen.compositing.pairs import RENDER_COLUMNS, PairComposer
from serialgen.config import CompositeSettings
from serialgen.pose_drawing import draw_pose
from serialgen.storage.images import encode_png

W, H = 96, 144
EXACT = EstimatorNoise(seed=1, mask_grow=0.0, mask_holes=0, shadow_threshold=2.0, keypoint_jitter=0.0,
                       swap_left_right=False)


def ellipse_background() -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    return ((xx - W / 2) / 20) ** 2 + ((yy - H / 2) / 50) ** 2 > 1


def standing(scale: float = 1.0, back: bool = False) -> np.ndarray:
    xy = (STANDING - 0.5) * scale + 0.5
    if back:  # seen from behind: the figure's right side is on the image's right
        xy[:, 0] = 1 - xy[:, 0]
    return np.concatenate([xy * (W, H), np.ones((18, 1))], axis=1).astype(np.float32)


def test_mask_grows_shrinks_gets_holes_and_takes_the_shadow():
    background = ellipse_background()
    zero = np.zeros((H, W), np.float32)
    assert np.array_equal(degrade_mask(background, zero, EXACT), background)

    grown = degrade_mask(background, zero, replace(EXACT, mask_grow=3.0))
    shrunk = degrade_mask(background, zero, replace(EXACT, mask_grow=-3.0))
    area = (~background).sum()
    assert np.all(~grown[~background]) and (~grown).sum() > area + 200, "dilation covers the figure and more"
    assert np.all(shrunk[background]) and (~shrunk).sum() < area - 200, "erosion stays inside the figure"

    holed = degrade_mask(background, zero, replace(EXACT, mask_holes=3))
    assert np.all(holed[background]) and (~holed).sum() < area - 20, "holes only remove foreground"

    shadow = np.zeros((H, W), np.float32)
    shadow[-10:, :] = 0.4                       # a contact shadow at the feet, outside the figure
    with_shadow = degrade_mask(background, shadow, replace(EXACT, shadow_threshold=0.2))
    assert not with_shadow[-10:, :].any() and np.array_equal(with_shadow[:-10], background[:-10])


def test_confidence_falls_for_occluded_edge_and_small_points():
    rng = np.random.default_rng(0)
    known = np.ones(18, bool)
    trials = [(standing(), rng) for _ in range(300)]
    base = np.mean([confidence(kp, known, (W, H), r) for kp, r in trials], axis=0)

    occluded = standing()
    occluded[3, 2] = 0                          # right elbow hidden
    hidden = np.mean([confidence(occluded, known, (W, H), rng) for _ in range(300)], axis=0)
    assert hidden[3] < 0.3 < base[3], "a hidden point is mostly not reported"
    assert hidden[4] < base[4] - 0.15, "the wrist next to a hidden elbow is less sure"

    small = standing(scale=0.15)
    tiny = np.mean([confidence(small, known, (W, H), rng) for _ in range(300)], axis=0)
    face = [0, 14, 15, 16, 17]
    assert tiny[face].mean() < base[face].mean() - 0.3, "faces of small figures are hard"
    assert abs(tiny[1] - base[1]) < 0.05, "the neck of a small figure is still found"

    at_edge = standing()
    at_edge[10, :2] = (W / 2, H - 0.5)          # right ankle on the bottom row
    edge = np.mean([confidence(at_edge, known, (W, H), rng) for _ in range(300)], axis=0)
    assert edge[10] < base[10] - 0.3
    outside = standing()
    outside[13, :2] = (W / 2, H + 5)
    outside[13, 2] = 0
    assert confidence(outside, known, (W, H), rng)[13] == 0.0


def test_keypoints_jitter_drop_and_swap_only_on_back_views():
    known = np.ones(18, bool)
    front, back = standing(), standing(back=True)
    assert not is_back_view(front, known) and is_back_view(back, known)
    swap = EstimatorNoise(seed=3, mask_grow=0.0, mask_holes=0, shadow_threshold=2.0, keypoint_jitter=0.0,
                          swap_left_right=True)
    exact_back = degrade_keypoints(back, known, (W, H), replace(swap, swap_left_right=False))
    swapped = degrade_keypoints(back, known, (W, H), swap)
    for right, left in LEFT_RIGHT:
        assert np.array_equal(swapped[right], exact_back[left]) and np.array_equal(swapped[left], exact_back[right])
    assert np.array_equal(degrade_keypoints(front, known, (W, H), swap),
                          degrade_keypoints(front, known, (W, H), replace(swap, swap_left_right=False)))

    jitter = EstimatorNoise(seed=4, mask_grow=0.0, mask_holes=0, shadow_threshold=2.0, keypoint_jitter=0.02,
                            swap_left_right=False)
    moved = degrade_keypoints(front, known, (W, H), jitter)
    kept = moved[:, 2] > 0
    error = np.hypot(*(moved[kept, :2] - front[kept, :2]).T)
    figure = np.ptp(front[:, 1])
    assert kept.sum() >= 12 and 0.005 * figure < error.mean() < 0.06 * figure


def test_composer_degrades_a_share_of_inputs_and_keeps_the_exact_labels(lake):
    write_characters(lake, 4, 6, W, H)
    lake.upsert("backgrounds", [{"background_id": "bg", "source_uri": "procedural://0/0", "width": W, "height": H,
                                 "image": encode_png(procedural_background(0, 0, W, H))}], "t")
    cfg = CompositeSettings(backgrounds_per_render=2, estimator_noise_probability=0.5, shadow_probability=1.0)
    composer = PairComposer(lake, cfg, ["bg"])
    renders = lake.read("renders", columns=RENDER_COLUMNS)
    pairs = composer.compose(renders, composer.plan(renders))
    noisy = np.array([json.loads(m["augmentation"])["estimator"] is not None for m in pairs.meta])
    assert len(noisy) == 48 and 12 <= noisy.sum() <= 36
    changed = 0
    for i, m in enumerate(pairs.meta):
        same_mask = np.array_equal(pairs.background_masks[i], pairs.true_background_masks[i])
        same_kp = np.array_equal(pairs.keypoints[i], pairs.true_keypoints[i])
        if not noisy[i]:
            assert same_mask and same_kp
        changed += not (same_mask and same_kp)
        assert np.array_equal(pairs.pose_images[i], draw_pose(pairs.keypoints[i], W, H)), "the pose drawn is the noisy one"
    assert changed >= noisy.sum() - 2
