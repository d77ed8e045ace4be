"""The paper's personalization metrics (section 4.1), one implementation each.

CLIP-I    = 100 x cosine of CLIP image embeddings, backgrounds removed from both images;
CLIP-T    = 100 x cosine of the output's CLIP embedding (background kept) and the prompt's;
AP-CLIP-I = per character, the mean CLIP-I over pairs of its outputs for different prompts
            (:func:`ap_similarity`, also AP-ID-Sim with the identity probe);
Face Sim  = cosine of ArcFace embeddings of the output's and the reference's aligned faces,
            over the pairs where both show a face (``n`` and the detection rate reported).
PSNR/SSIM live in :mod:`serialgen.training.metrics` (torchmetrics).

Embeddings are computed once per image (:func:`clip_embeddings`, :func:`face_embeddings`) and the
scores are functions of them, so a reference shared by 80 outputs is embedded once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch

from serialgen.evaluation.clip import ClipModel
from serialgen.evaluation.face import FaceEmbedder, align_face

#: HxWx3 uint8 -> HxW uint8, 255 = foreground (what :meth:`serialgen.preprocessing.Preprocessors.mask` returns).
MaskFn = Callable[[np.ndarray], np.ndarray]
#: HxWx3 uint8 -> (18, 3) COCO-18 keypoints x, y, score (what :meth:`serialgen.preprocessing.Preprocessors.pose` returns).
PoseFn = Callable[[np.ndarray], np.ndarray]


def remove_background(image: np.ndarray, mask_fn: MaskFn) -> np.ndarray:
    """The image's foreground on white, blended by the soft mask."""
    rgb = np.asarray(image)[..., :3].astype(np.float32)
    alpha = mask_fn(image).astype(np.float32)[..., None] / 255.0
    return np.clip(np.rint(rgb * alpha + 255.0 * (1.0 - alpha)), 0, 255).astype(np.uint8)


def clip_embeddings(clip: ClipModel, images: Sequence[np.ndarray], mask_fn: MaskFn | None = None) -> torch.Tensor:
    """(N, D) unit-norm CLIP embeddings; with ``mask_fn`` of the images with their backgrounds removed (CLIP-I)."""
    if mask_fn is not None:
        images = [remove_background(image, mask_fn) for image in images]
    return clip.embed_images(images)


def clip_i(outputs: torch.Tensor, references: torch.Tensor) -> np.ndarray:
    """Row-wise CLIP-I of background-removed embeddings (from :func:`clip_embeddings` with a mask)."""
    return (100.0 * (outputs * references).sum(-1)).double().numpy()


def clip_t(images: torch.Tensor, prompts: torch.Tensor) -> np.ndarray:
    """Row-wise CLIP-T of image embeddings (backgrounds kept) and prompt embeddings."""
    return (100.0 * (images * prompts).sum(-1)).double().numpy()


def ap_similarity(similarity: torch.Tensor, prompts: Sequence[str]) -> tuple[float, int]:
    """One character's mean similarity over all pairs of its outputs made for different prompts, from their
    (n, n) similarity matrix (cosines of unit embeddings), and the number of pairs (NaN, 0 with fewer than two
    prompts). x 100 with CLIP: AP-CLIP-I."""
    pairs = [(i, j) for i, j in combinations(range(len(prompts)), 2) if prompts[i] != prompts[j]]
    if not pairs:
        return float("nan"), 0
    first, second = (torch.tensor(side) for side in zip(*pairs))
    return float(similarity[first, second].double().mean()), len(pairs)


@dataclass
class FaceSim:
    """Face Sim per pair (NaN where the output or the reference shows no face) and its coverage."""

    values: np.ndarray

    @property
    def total(self) -> int:
        return len(self.values)

    @property
    def n(self) -> int:
        return int(np.isfinite(self.values).sum())

    @property
    def detection_rate(self) -> float:
        return self.n / self.total if self.total else float("nan")

    @property
    def mean(self) -> float:
        return float(np.nanmean(self.values)) if self.n else float("nan")


def face_embeddings(embedder: FaceEmbedder, pose_fn: PoseFn, images: Sequence[np.ndarray]) -> np.ndarray:
    """(N, 512) face embeddings; rows of images without a face (per the pose keypoints) are NaN."""
    crops = [align_face(image, pose_fn(image)) for image in images]
    found = [i for i, crop in enumerate(crops) if crop is not None]
    out = np.full((len(images), 512), np.nan, np.float64)
    if found:
        embedded = embedder.embed([crops[i] for i in found])
        out = np.full((len(images), embedded.shape[1]), np.nan, np.float64)
        out[found] = embedded
    return out


def face_sim(outputs: np.ndarray, references: np.ndarray) -> FaceSim:
    """Row-wise cosine of face embeddings from :func:`face_embeddings`; NaN rows (no face) stay NaN."""
    return FaceSim((np.asarray(outputs) * np.asarray(references)).sum(-1))
