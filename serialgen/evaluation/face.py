"""Face Sim's parts: a face crop aligned from pose keypoints, and an ArcFace-convention ONNX embedder.

No face detector: the pose estimator's nose and eyes (COCO-18) give a similarity transform onto
ArcFace's 112x112 template, the alignment insightface applies to its detector's landmarks. An image
whose nose or either eye is not confidently found has no face and is left out of Face Sim (counted).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from skimage.transform import SimilarityTransform, warp

from serialgen.storage.schemas import KEYPOINT_NAMES

FACE_SIZE = 112
#: insightface's ``arcface_dst`` for the image-left eye, image-right eye and nose tip (112x112 crop).
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366]], np.float64)
#: COCO-18 keypoints matching the template rows: the subject's right eye appears image-left in a front view.
FACE_KEYPOINTS = tuple(KEYPOINT_NAMES.index(name) for name in ("r_eye", "l_eye", "nose"))


def align_face(image: np.ndarray, keypoints: np.ndarray, min_score: float = 0.3,
               min_eye_distance: float = 2.0) -> np.ndarray | None:
    """The 112x112x3 uint8 ArcFace-aligned crop of ``image``, or None when the keypoints show no face."""
    points = np.asarray(keypoints, np.float64)[list(FACE_KEYPOINTS)]
    if (points[:, 2] < min_score).any() or np.linalg.norm(points[0, :2] - points[1, :2]) < min_eye_distance:
        return None
    transform = SimilarityTransform.from_estimate(ARCFACE_TEMPLATE, points[:, :2])  # crop pixel -> image pixel
    if not transform:
        return None
    crop = warp(np.asarray(image)[..., :3], transform, output_shape=(FACE_SIZE, FACE_SIZE), order=1,
                mode="constant", cval=1.0, preserve_range=True)
    return np.clip(np.rint(crop), 0, 255).astype(np.uint8)


class FaceEmbedder:
    """Unit-norm face embeddings from an ArcFace-convention ONNX file (1x3x112x112 RGB in (x-127.5)/127.5, 1x512 out),
    such as insightface's ``w600k_r50.onnx``."""

    def __init__(self, path: str | Path, label: str | None = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"missing {path.name} in {path.parent}: the ArcFace model of Face Sim "
                                    "(set evaluate.face_model)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        spec = self.session.get_inputs()[0]
        if list(spec.shape[1:]) != [3, FACE_SIZE, FACE_SIZE]:
            raise ValueError(f"{path} takes input {spec.shape}, not ArcFace's Nx3x{FACE_SIZE}x{FACE_SIZE}")
        self.input_name = spec.name
        self.label = label or path.stem

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 512) unit-norm embeddings of aligned 112x112x3 uint8 crops, one at a time (fixed batch 1 models)."""
        out = []
        for crop in crops:
            blob = ((np.asarray(crop, np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
            out.append(self.session.run(None, {self.input_name: blob})[0].reshape(-1))
        embeddings = np.stack(out) if out else np.zeros((0, 512), np.float32)
        return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
