"""Standardizing in-memory images with a trained standardizer: the preprocessors (mask, pose) and the
pipeline loaded once per :class:`ImageStandardizer`, run on batches.

Shared by the standardize stage (one replica per Ray actor), serial generation (two-stage references)
and anything else that needs a standardized image; the stage adds the lake, Ray and the `standardized` rows.
Per batch: the background mask (rembg; an image's own alpha when it has one) and the COCO-18 pose (DWPose)
of each image, pad-to-frame at the model's 2:3 size with the padding box kept, then one DDIM call for the
batch with one seed per image, toward the canonical standard skeleton saved with the model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serialgen.checkpoints import content_version
from serialgen.config import Settings
from serialgen.pose_drawing import draw_pose
from serialgen.storage.images import on_white
from serialgen.storage.runs import last_completed


@dataclass
class StandardizedImage:
    image: np.ndarray                          # HxWx3 uint8 standardized (white background, A-pose, front)
    input_mask: np.ndarray                     # padded-frame mask, 255 = background
    reference_keypoints: np.ndarray            # (18, 3) padded-frame pixels, score
    padding_box: tuple[int, int, int, int]     # where the original sits in the frame (left, top, right, bottom)
    model_version: str                         # standardizer version


def resolve_model_dir(settings: Settings) -> Path:
    """``standardize.model_dir``, else the model of the latest completed train-standardizer run of this profile."""
    configured = settings.standardize.model_dir
    if configured is not None:
        folder = Path(configured).expanduser()
        if not (folder / "standardizer.json").is_file():
            raise FileNotFoundError(f"missing standardizer.json in {folder}: the standardizer model folder "
                                    "(standardize.model_dir, written by `serialgen train-standardizer`)")
        return folder
    run = last_completed(settings.open_lake(), "train-standardizer")
    if run is None or not run["checkpoint"]:
        raise FileNotFoundError(f"no trained standardizer in lake {settings.lake}: run `serialgen train-standardizer` "
                                "or set standardize.model_dir")
    folder = Path(run["checkpoint"])
    folder = folder if (folder / "standardizer.json").is_file() else folder / "model"
    marker = folder.parent / "training.json"
    trained = json.loads(marker.read_text()).get("profile") if marker.is_file() else None
    if trained not in (None, settings.profile):
        raise FileNotFoundError(f"no {settings.profile} standardizer: the latest train-standardizer run ({folder}) "
                                f"trained profile {trained}; train one with this profile or set standardize.model_dir")
    if not (folder / "standardizer.json").is_file():
        raise FileNotFoundError(f"missing standardizer.json in {folder}: the model folder of run {run['run_id']}")
    return folder


def model_version(folder: Path) -> str:
    """``<run folder>/<model folder>@<content version>``: changes with the weights, and only with them."""
    return f"{folder.parent.name}/{folder.name}@{content_version(folder)}"


class ImageStandardizer:
    """One standardizer replica: preprocessors + pipeline, loaded once, run on batches of images."""

    def __init__(self, settings: Settings, model_dir: Path | None = None, device: str | None = None) -> None:
        import torch

        from serialgen.pipelines import StandardizationPipeline
        from serialgen.preprocessing import load_preprocessors

        self.preprocessors = load_preprocessors(settings)   # path errors before the (larger) model loads
        folder = model_dir or resolve_model_dir(settings)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.float16 if device == "cuda" and settings.standardizer.mixed_precision == "fp16" else None
        self.pipeline = StandardizationPipeline.from_pretrained(folder, device, dtype)
        if self.pipeline.model.standard_keypoints is None:
            raise FileNotFoundError(f"missing standard_keypoints.json in {folder}: the canonical target skeleton "
                                    "(saved by train-standardizer)")
        self.version = model_version(folder)
        self.settings = settings
        self.size = self.pipeline.model.standard_pose.shape[:2]

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple] | str:
        """(RGB, background mask, frame keypoints, padding box) of one image, or why it cannot be standardized."""
        from serialgen.pipelines.standardization import pad_to_frame

        cfg = self.settings
        foreground = self.preprocessors.mask(image)
        share = float((foreground >= 128).mean())
        if share < cfg.standardize.min_foreground:
            return f"empty mask: foreground covers {share:.2%} of the image (< {cfg.standardize.min_foreground:.0%})"
        rgb = on_white(image)
        keypoints = self.preprocessors.pose(rgb)
        if not (keypoints[:, 2] > cfg.preprocessing.keypoint_threshold).any():
            return "no person found: no keypoint above the detection threshold"
        background, box = pad_to_frame(255 - foreground, self.size, 255)
        h, w = image.shape[:2]
        scale = np.array([(box[2] - box[0]) / w, (box[3] - box[1]) / h], np.float32)
        frame = np.concatenate([keypoints[:, :2] * scale + box[:2], keypoints[:, 2:]], 1).astype(np.float32)
        return rgb, background, frame, box

    def __call__(self, images: Sequence[np.ndarray], seeds: Sequence[int]) -> list[StandardizedImage | str]:
        """Standardize a batch; a string in place of an image's result says why it failed."""
        cfg = self.settings
        prepared = [self.prepare(im) for im in images]
        ok = [i for i, p in enumerate(prepared) if not isinstance(p, str)]
        out: list[StandardizedImage | str] = list(prepared)  # errors stay in place
        if not ok:
            return out
        height, width = self.size
        threshold = cfg.preprocessing.keypoint_threshold
        poses = [draw_pose(np.concatenate([prepared[i][2][:, :2], (prepared[i][2][:, 2:] > threshold)], 1),
                           width, height) for i in ok]
        results = self.pipeline([prepared[i][0] for i in ok], [prepared[i][1] for i in ok], poses,
                                num_inference_steps=cfg.standardizer.inference_steps,
                                guidance_scale=cfg.standardizer.guidance_scale, seed=[seeds[i] for i in ok])
        for i, result in zip(ok, results):
            _, background, frame, box = prepared[i]
            out[i] = StandardizedImage(result, background, frame, box, self.version)
        return out


def standardize_images(settings: Settings, images: Sequence[np.ndarray], seed: int = 0,
                       standardizer: ImageStandardizer | None = None) -> list[StandardizedImage]:
    """Standardize in-memory images (image i sampled with seed + i) with ``standardizer`` (default: one loaded for
    this call); ValueError naming an image that cannot be."""
    replica = standardizer or ImageStandardizer(settings)
    batch = settings.standardize.batch_size
    out: list[StandardizedImage] = []
    for first in range(0, len(images), batch):
        chunk = images[first:first + batch]
        for k, result in enumerate(replica(chunk, [seed + first + k for k in range(len(chunk))])):
            if isinstance(result, str):
                raise ValueError(f"image {first + k}: {result}")
            out.append(result)
    return out
