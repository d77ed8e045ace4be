"""Training the tiny preprocessors on synthetic pairs, whose exact masks and keypoints are free labels.

Each net sees exactly the input its runner feeds at inference (rembg's U2-Net normalisation, YOLOX's
letterbox, DWPose's box-to-crop affine), so the exported ONNX files behave like the real ones in the
runners of :mod:`serialgen.preprocessing`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from serialgen.config import PreprocessingSettings
from serialgen.preprocessing.mask import U2NET_SIZE, u2net_input
from serialgen.preprocessing.nets import TinyDetector, TinySegmenter, TinySimCC, export_onnx
from serialgen.preprocessing.pose import (
    SIMCC_SPLIT_RATIO,
    box_to_centre_scale,
    coco18_to_coco17,
    crop_matrix,
    pose_input,
    yolox_grid,
)
from serialgen.runtime import torch_threads

#: Width (in SimCC bins) of the 1-D Gaussian labels around a keypoint.
SIMCC_SIGMA = 2.0
#: Box jitter (share of the box size) for pose crops, so the pose net tolerates detector error.
BOX_JITTER = 0.12


@dataclass
class LabelledImages:
    """Images with their exact labels: RGB HxWx3 uint8, foreground HxW bool, COCO-18 keypoints (18, 3)."""

    images: list[np.ndarray]
    foreground: list[np.ndarray]
    keypoints: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.images)


def foreground_box(foreground: np.ndarray) -> np.ndarray:
    """xyxy box (pixels, exclusive right/bottom) around the foreground."""
    ys, xs = np.nonzero(foreground)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def _batches(n: int, steps: int, batch_size: int, rng: np.random.Generator):
    for _ in range(steps):
        yield rng.integers(0, n, min(batch_size, n))


def _fit(model: torch.nn.Module, loss_fn, steps: int, cfg: PreprocessingSettings, n: int) -> list[float]:
    rng = np.random.default_rng(cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, cfg.learning_rate, total_steps=max(steps, 1))
    model.train()
    losses = []
    for index in _batches(n, steps, cfg.batch_size, rng):
        loss = loss_fn(index, rng)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses


def train_segmenter(data: LabelledImages, cfg: PreprocessingSettings) -> tuple[TinySegmenter, list[float]]:
    """Foreground BCE + soft Dice on rembg-normalised 320x320 inputs (mirrored half the time)."""
    torch.manual_seed(cfg.seed)
    x = torch.from_numpy(np.stack([u2net_input(im) for im in data.images]))
    label_size = (U2NET_SIZE[0] // 4, U2NET_SIZE[1] // 4)  # the logits' resolution
    y = torch.from_numpy(np.stack([
        np.asarray(Image.fromarray(fg.astype(np.uint8) * 255).resize(label_size, Image.Resampling.BILINEAR))
        for fg in data.foreground]).astype(np.float32) / 255)[:, None]
    model = TinySegmenter()

    def loss_fn(index, rng):
        flip = bool(rng.integers(2))
        xb, yb = x[index], y[index]
        if flip:
            xb, yb = xb.flip(-1), yb.flip(-1)
        logits = model.logits(xb)
        p = torch.sigmoid(logits)
        dice = 1 - (2 * (p * yb).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + yb.sum((1, 2, 3)) + 1)
        return F.binary_cross_entropy_with_logits(logits, yb) + dice.mean()

    return model, _fit(model, loss_fn, cfg.mask_steps, cfg, len(data))


def _detector_sample(image: np.ndarray, fg: np.ndarray, size: tuple[int, int],
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A YOLOX input (letterbox geometry: 114 padding, raw pixels) with the image at a random scale and
    place (mirrored half the time), and its person box; variety the few synthetic pairs lack."""
    if rng.integers(2):
        image, fg = image[:, ::-1], fg[:, ::-1]
    ratio = min(size[0] / image.shape[0], size[1] / image.shape[1]) * rng.uniform(0.5, 1.0)
    h, w = max(1, int(image.shape[0] * ratio)), max(1, int(image.shape[1] * ratio))
    top, left = rng.integers(0, size[0] - h + 1), rng.integers(0, size[1] - w + 1)
    canvas = np.full((*size, 3), 114, np.uint8)
    canvas[top:top + h, left:left + w] = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((w, h)))
    box = foreground_box(fg) * ratio + (left, top, left, top)
    return canvas.transpose(2, 0, 1).astype(np.float32), box


def train_detector(data: LabelledImages, cfg: PreprocessingSettings) -> tuple[TinyDetector, list[float]]:
    """YOLOX-style targets: at each stride the cell holding the box centre is positive (offset, log size,
    objectness, person); every other anchor is negative objectness. Eight random placements per image."""
    torch.manual_seed(cfg.seed)
    size = (cfg.detector_size, cfg.detector_size)
    grid, strides = yolox_grid(size)
    rng = np.random.default_rng(cfg.seed + 2)
    inputs, regression, positive = [], [], []
    for image, fg in zip(data.images, data.foreground):
        for _ in range(8):
            x, box = _detector_sample(image, fg, size, rng)
            centre, extent = (box[:2] + box[2:]) / 2, box[2:] - box[:2]
            reg = np.concatenate([centre / strides - grid, np.log(np.maximum(extent, 1) / strides)], 1)
            inputs.append(x)
            regression.append(reg.astype(np.float32))
            positive.append((grid == np.floor(centre / strides)).all(1))
    x, reg, pos = (torch.from_numpy(np.stack(a)) for a in (inputs, regression, positive))
    model = TinyDetector()

    def loss_fn(index, rng):
        raw = model.raw(x[index])
        p = pos[index].float()
        objectness = F.binary_cross_entropy_with_logits(raw[..., 4], p, pos_weight=torch.tensor(8.0))
        person = F.binary_cross_entropy_with_logits(raw[..., 5][pos[index]], torch.ones(int(p.sum())))
        box = F.smooth_l1_loss(raw[..., :4][pos[index]], reg[index][pos[index]])
        return objectness + person + 5 * box

    return model, _fit(model, loss_fn, cfg.detector_steps, cfg, len(x))


def _pose_sample(image: np.ndarray, fg: np.ndarray, keypoints: np.ndarray, size: tuple[int, int],
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One jittered crop and its SimCC labels (17 x 2W, 17 x 2H) for the COCO body points."""
    box = foreground_box(fg)
    extent = box[2:] - box[:2]
    box = box + np.concatenate([extent, extent]) * rng.uniform(-BOX_JITTER, BOX_JITTER, 4)
    centre, scale = box_to_centre_scale(box, size[1] / size[0])
    crop = pose_input(image, centre, scale, size)
    matrix = crop_matrix(centre, scale, size)
    body = coco18_to_coco17(keypoints)
    xy = (body[:, :2] @ matrix[:, :2].T + matrix[:, 2]) * SIMCC_SPLIT_RATIO
    visible = body[:, 2] > 0
    bins_x, bins_y = np.arange(2 * size[1]), np.arange(2 * size[0])
    label_x = np.exp(-(bins_x[None] - xy[:, :1]) ** 2 / (2 * SIMCC_SIGMA ** 2)) * visible[:, None]
    label_y = np.exp(-(bins_y[None] - xy[:, 1:]) ** 2 / (2 * SIMCC_SIGMA ** 2)) * visible[:, None]
    return crop, label_x.astype(np.float32), label_y.astype(np.float32)


def train_pose(data: LabelledImages, cfg: PreprocessingSettings) -> tuple[TinySimCC, list[float]]:
    """SimCC with Gaussian 1-D labels (BCE, so the peak learns the visibility score); four jittered crops per image."""
    torch.manual_seed(cfg.seed)
    size = (cfg.pose_height, cfg.pose_width)
    rng = np.random.default_rng(cfg.seed + 1)
    samples = [_pose_sample(im, fg, kp, size, rng) for im, fg, kp in zip(data.images, data.foreground, data.keypoints)
               for _ in range(4)]
    x, lx, ly = (torch.from_numpy(np.stack(a)) for a in zip(*samples))
    model = TinySimCC(size)
    weight = torch.tensor(20.0)  # labels are sparse along each axis: up-weight the peak

    def loss_fn(index, rng):
        sx, sy = model.logits(x[index])
        return (F.binary_cross_entropy_with_logits(sx[:, :17], lx[index], pos_weight=weight)
                + F.binary_cross_entropy_with_logits(sy[:, :17], ly[index], pos_weight=weight))

    return model, _fit(model, loss_fn, cfg.pose_steps, cfg, len(x))


def train_and_export(data: LabelledImages, cfg: PreprocessingSettings, folder: Path,
                     names: tuple[str, str, str]) -> dict[str, float]:
    """Train the three nets, export them (U2-Net, YOLOX and SimCC conventions) into ``folder``; returns timings/losses."""
    metrics: dict[str, float] = {}
    size_pose = (cfg.pose_height, cfg.pose_width)
    jobs = (("mask", train_segmenter, torch.zeros(1, 3, *U2NET_SIZE), "input", ["mask"]),
            ("detector", train_detector, torch.zeros(1, 3, cfg.detector_size, cfg.detector_size), "images", ["output"]),
            ("pose", train_pose, torch.zeros(1, 3, *size_pose), "input", ["simcc_x", "simcc_y"]))
    for (role, train, example, input_name, outputs), name in zip(jobs, names):
        start = time.perf_counter()
        with torch_threads(1):  # these nets are too small to gain from intra-op threads; on a busy machine they lose
            model, losses = train(data, cfg)
        export_onnx(model, example, folder / name, input_name, outputs)
        metrics[f"{role}_seconds"] = round(time.perf_counter() - start, 2)
        metrics[f"{role}_loss_first"] = round(float(np.mean(losses[:10])), 4)
        metrics[f"{role}_loss_last"] = round(float(np.mean(losses[-10:])), 4)
    return metrics
