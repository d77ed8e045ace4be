"""Held-out scores of loaded preprocessors against trivial baselines: mask IoU (vs the whole frame) and
keypoint PCK (vs the mean training pose, in image-relative coordinates)."""

from __future__ import annotations

import numpy as np

from serialgen.preprocessing import Preprocessors
from serialgen.preprocessing.training import LabelledImages, foreground_box
from serialgen.training.metrics import mask_iou, pck


def mean_pose(data: LabelledImages) -> np.ndarray:
    """(18, 3) mean keypoint position as a share of the image size (the trivial pose baseline)."""
    rel = [kp[:, :2] / (im.shape[1], im.shape[0]) for im, kp in zip(data.images, data.keypoints)]
    return np.concatenate([np.mean(rel, 0), np.ones((18, 1))], 1).astype(np.float32)


def evaluate(preprocessors: Preprocessors, test: LabelledImages, train: LabelledImages,
             pck_threshold: float = 0.1, score_threshold: float = 0.3) -> dict[str, float]:
    """IoU and PCK@``pck_threshold`` of ``preprocessors`` on ``test`` beside the baselines."""
    baseline = mean_pose(train)
    ious, whole, ours, trivial = [], [], np.zeros(2), np.zeros(2)
    for image, fg, kp in zip(test.images, test.foreground, test.keypoints):
        ious.append(mask_iou(preprocessors.mask(image) >= 128, fg))
        whole.append(mask_iou(np.ones_like(fg), fg))
        box = foreground_box(fg)
        size = float(max(box[2] - box[0], box[3] - box[1]))
        ours += pck(preprocessors.pose(image), kp, size, pck_threshold, score_threshold)
        guess = baseline * (image.shape[1], image.shape[0], 1)
        trivial += pck(guess, kp, size, pck_threshold, score_threshold)
    return {"test_images": len(test), "mask_iou": float(np.mean(ious)), "mask_iou_whole_frame": float(np.mean(whole)),
            "pck": float(ours[0] / max(ours[1], 1)), "pck_mean_pose": float(trivial[0] / max(trivial[1], 1)),
            "pck_threshold": pck_threshold}
