"""Test data of the preprocessing and standardize tests: drawn figures with exact labels, tiny trained
preprocessors (exported through the real export path) and a tiny standardizer folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from composite_data import figure_keypoints, figure_rgba
from serialgen.checkpoints import preprocessors_dir
from serialgen.config import PreprocessingSettings, Settings, load_settings
from serialgen.preprocessing import DETECTOR_FILE, MASK_FILE, POSE_FILE
from serialgen.preprocessing.training import LabelledImages, train_and_export

#: Enough steps for the nets to find the drawn figures (a few seconds each on one core).
STEPS = {"mask_steps": 100, "detector_steps": 1000, "pose_steps": 400, "batch_size": 8}


def figure_scene(rng: np.random.Generator, width: int = 96, height: int = 144,
                 stretch: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A figure of random size and place over a noisy coloured background: RGB, foreground mask (bool),
    COCO-18 keypoints. ``stretch`` scales the figure's height about its neck (other proportions)."""
    keypoints = figure_keypoints(rng, width, height, jitter=0.04)
    keypoints[:, 1] = keypoints[1, 1] + (keypoints[:, 1] - keypoints[1, 1]) * stretch
    size = rng.uniform(0.4, 0.95)
    shift = rng.uniform(-0.45, 0.45, 2) * (1 - size) * (width, height)
    keypoints[:, :2] = (keypoints[:, :2] - (width / 2, height / 2)) * size + (width / 2, height / 2) + shift
    rgba = figure_rgba(keypoints, width, height, rng)
    background = np.clip(rng.uniform(0, 255, 3) + rng.normal(0, 12, (height, width, 3)), 0, 255)
    alpha = rgba[..., 3:].astype(np.float32) / 255
    rgb = (rgba[..., :3] * alpha + background * (1 - alpha)).round().astype(np.uint8)
    return rgb, rgba[..., 3] >= 128, keypoints


def labelled_figures(n: int, seed: int) -> LabelledImages:
    rng = np.random.default_rng(seed)
    scenes = [figure_scene(rng) for _ in range(n)]
    return LabelledImages(*(list(x) for x in zip(*scenes)))


def train_tiny_preprocessors(folder: Path) -> dict:
    cfg = PreprocessingSettings(**STEPS)
    return train_and_export(labelled_figures(48, seed=1), cfg, folder, (MASK_FILE, DETECTOR_FILE, POSE_FILE))


def install_preprocessors(trained: Path, settings: Settings) -> Path:
    """Copy trained models to where the tiny profile loads them for ``settings``' lake."""
    target = preprocessors_dir(settings)
    shutil.copytree(trained, target, dirs_exist_ok=True)
    return target


def save_tiny_standardizer(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised tiny standardizer with the canonical skeleton, saved like a trained one. Built
    against an empty lake beside ``folder``: a lake with standard views (the default ``./lake`` after a demo)
    would give it their mean skeleton instead."""
    from serialgen.training.standardizer import build_standardizer

    settings = load_settings(lake=str(folder.parent / f"{folder.name}-empty-lake"), standardizer={"seed": seed})
    return build_standardizer(settings).save_pretrained(folder)
