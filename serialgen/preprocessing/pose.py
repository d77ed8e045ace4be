"""Whole-body pose in DWPose's ONNX conventions: a YOLOX person detector, then a SimCC keypoint model.

Conventions (as DWPose's ``onnxdet.py`` / ``onnxpose.py`` run ``yolox_l.onnx`` and ``dw-ll_ucoco_384.onnx``):

* detector: the image resized to fit the model's square input (letterbox at the top left, filled with
  114), raw 0..255 values, CHW; output 1xNx(5 + classes) per anchor of strides 8/16/32: centre offset
  and log size in stride units, objectness and class scores (sigmoid applied). Score = objectness x
  person class; non-maximum suppression at IoU 0.45.
* pose model: the person box padded by 1.25, widened to the model's aspect ratio, warped (affine) to
  the model's input (dw-ll_ucoco_384: 288x384), normalised with ImageNet mean/std in 0..255; outputs
  ``simcc_x`` 1xKx(2W) and ``simcc_y`` 1xKx(2H); a keypoint sits at the arg-max bins / 2 and scores
  the smaller of the two maxima. K = 133 (COCO whole-body); the first 17 are COCO's body points.
* COCO-18 (OpenPose order of :data:`serialgen.storage.schemas.KEYPOINT_NAMES`): the neck is the mean
  of the shoulders, visible when both shoulders score above 0.3.

Input sizes are read from the ONNX files, so the tiny models ``train-preprocessors`` exports run
through exactly this code at their smaller sizes.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from serialgen.storage.schemas import NUM_KEYPOINTS

YOLOX_STRIDES = (8, 16, 32)
YOLOX_PAD_VALUE = 114
NMS_IOU = 0.45
BOX_PADDING = 1.25
SIMCC_SPLIT_RATIO = 2.0
POSE_MEAN = (123.675, 116.28, 103.53)
POSE_STD = (58.395, 57.12, 57.375)
WHOLEBODY_KEYPOINTS = 133
#: COCO-17 index of each COCO-18 keypoint (-1: the neck, the mean of the shoulders).
COCO17_OF_COCO18 = (0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)


def coco18_to_coco17(keypoints: np.ndarray) -> np.ndarray:
    """(18, C) COCO-18 -> (17, C) COCO-17 body order (the inverse of the mapping above, neck dropped)."""
    out = np.zeros((17, keypoints.shape[1]), keypoints.dtype)
    for i18, i17 in enumerate(COCO17_OF_COCO18):
        if i17 >= 0:
            out[i17] = keypoints[i18]
    return out


def coco17_to_coco18(keypoints: np.ndarray, threshold: float) -> np.ndarray:
    """(17, 3) COCO body keypoints (x, y, score) -> (18, 3) COCO-18 with DWPose's neck."""
    out = np.zeros((NUM_KEYPOINTS, 3), np.float32)
    for i18, i17 in enumerate(COCO17_OF_COCO18):
        if i17 >= 0:
            out[i18] = keypoints[i17]
    shoulders = keypoints[[5, 6]]
    out[1, :2] = shoulders[:, :2].mean(0)
    out[1, 2] = float((shoulders[:, 2] > threshold).all())
    return out


# -- detector ---------------------------------------------------------------------------------

def letterbox(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """YOLOX's preprocessing: resize to fit ``size`` (H, W), top-left, pad 114; returns (3xHxW float32, ratio)."""
    ratio = min(size[0] / image.shape[0], size[1] / image.shape[1])
    h, w = max(1, int(image.shape[0] * ratio)), max(1, int(image.shape[1] * ratio))
    padded = np.full((*size, 3), YOLOX_PAD_VALUE, np.uint8)
    padded[:h, :w] = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(padded.transpose(2, 0, 1), np.float32), ratio


def yolox_grid(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Anchor cells (N, 2) and their strides (N, 1) in YOLOX's output order for an input of ``size`` (H, W)."""
    grids, strides = [], []
    for stride in YOLOX_STRIDES:
        xv, yv = np.meshgrid(np.arange(size[1] // stride), np.arange(size[0] // stride))
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        strides.append(np.full((grids[-1].shape[0], 1), stride))
    return np.concatenate(grids).astype(np.float32), np.concatenate(strides).astype(np.float32)


def decode_yolox(output: np.ndarray, size: tuple[int, int], ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Raw (N, 5 + C) predictions -> person boxes (M, 4) xyxy in image pixels and scores (M,), best first."""
    grid, strides = yolox_grid(size)
    centre = (output[:, :2] + grid) * strides
    extent = np.exp(output[:, 2:4]) * strides
    boxes = np.concatenate([centre - extent / 2, centre + extent / 2], 1) / ratio
    scores = output[:, 4] * output[:, 5]
    return boxes, scores


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU) -> list[int]:
    """Greedy non-maximum suppression; indices kept, best score first."""
    order, keep = np.argsort(-scores), []
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order.size:
        i = order[0]
        keep.append(int(i))
        lt = np.maximum(boxes[i, :2], boxes[order[1:], :2])
        rb = np.minimum(boxes[i, 2:], boxes[order[1:], 2:])
        inter = np.prod(np.clip(rb - lt, 0, None), 1)
        order = order[1:][inter / (areas[i] + areas[order[1:]] - inter + 1e-9) <= iou]
    return keep


# -- pose model -------------------------------------------------------------------------------

def box_to_centre_scale(box: np.ndarray, aspect: float) -> tuple[np.ndarray, np.ndarray]:
    """DWPose's ``bbox_xyxy2cs`` (padding 1.25) then ``_fix_aspect_ratio`` (width / height = ``aspect``)."""
    centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], np.float32)
    w, h = (box[2] - box[0]) * BOX_PADDING, (box[3] - box[1]) * BOX_PADDING
    scale = np.array([w, w / aspect] if w > h * aspect else [h * aspect, h], np.float32)
    return centre, scale


def crop_matrix(centre: np.ndarray, scale: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The 2x3 affine (no rotation) mapping the ``scale`` box around ``centre`` onto an input of ``size`` (H, W)."""
    s = size[1] / scale[0]
    return np.array([[s, 0, size[1] / 2 - centre[0] * s], [0, s, size[0] / 2 - centre[1] * s]], np.float32)


def pose_input(image: np.ndarray, centre: np.ndarray, scale: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The normalised 3xHxW crop the SimCC model reads."""
    crop = cv2.warpAffine(image, crop_matrix(centre, scale, size), (size[1], size[0]), flags=cv2.INTER_LINEAR)
    return ((crop.astype(np.float32) - POSE_MEAN) / POSE_STD).transpose(2, 0, 1).astype(np.float32)


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray, centre: np.ndarray, scale: np.ndarray,
                 size: tuple[int, int]) -> np.ndarray:
    """(K, 2W) and (K, 2H) SimCC vectors -> (K, 3) image keypoints (x, y, score), as DWPose decodes them."""
    x, y = simcc_x.argmax(1), simcc_y.argmax(1)
    score = np.minimum(simcc_x.max(1), simcc_y.max(1))
    locs = np.stack([x, y], 1).astype(np.float32) / SIMCC_SPLIT_RATIO
    locs = locs / np.array([size[1], size[0]], np.float32) * scale + centre - scale / 2
    return np.concatenate([locs, np.clip(score, 0, 1)[:, None]], 1).astype(np.float32)


class PoseModel:
    """DWPose as ONNX: detector + whole-body SimCC model, two reused onnxruntime sessions."""

    def __init__(self, detector_path: Path, pose_path: Path, detection_threshold: float = 0.3,
                 keypoint_threshold: float = 0.3) -> None:
        import onnxruntime as ort

        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        self.detector = ort.InferenceSession(str(detector_path), providers=providers)
        self.pose = ort.InferenceSession(str(pose_path), providers=providers)
        self.detector_size = tuple(self.detector.get_inputs()[0].shape[2:4])
        self.pose_size = tuple(self.pose.get_inputs()[0].shape[2:4])
        self.detection_threshold, self.keypoint_threshold = detection_threshold, keypoint_threshold

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes (M, 4) and scores above the threshold, best first."""
        data, ratio = letterbox(image, self.detector_size)
        output = self.detector.run(None, {self.detector.get_inputs()[0].name: data[None]})[0][0]
        boxes, scores = decode_yolox(output, self.detector_size, ratio)
        keep = [i for i in nms(boxes, scores) if scores[i] > self.detection_threshold]
        return boxes[keep], scores[keep]

    def keypoints(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """(133, 3) whole-body keypoints of the person in ``box``."""
        centre, scale = box_to_centre_scale(box, self.pose_size[1] / self.pose_size[0])
        data = pose_input(image, centre, scale, self.pose_size)
        simcc_x, simcc_y = self.pose.run(None, {self.pose.get_inputs()[0].name: data[None]})[:2]
        return decode_simcc(simcc_x[0], simcc_y[0], centre, scale, self.pose_size)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 -> (18, 3) COCO-18 keypoints of the most confident person; all scores 0 when none is found."""
        image = np.ascontiguousarray(image[..., :3])
        boxes, _ = self.detect(image)
        if len(boxes) == 0:
            return np.zeros((NUM_KEYPOINTS, 3), np.float32)
        return coco17_to_coco18(self.keypoints(image, boxes[0])[:17], self.keypoint_threshold)
