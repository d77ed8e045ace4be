"""Evaluate-stage scoring speed: :func:`score_generations` (each image embedded once, batched; a reference
shared by all its outputs) vs the per-pair baseline (both images of every pair embedded again, one by one).

    python benchmarks/bench_evaluate.py [--outputs 80] [--characters 2]

Tiny random CLIP / face models in the real formats (tests/evaluation_models_data.py, built into a temporary folder); mask = saturation threshold, pose = a fixed
face, standing in for the lake's preprocessors so that only the scoring itself is timed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from evaluation_models_data import build_tiny_clip, build_tiny_face_model  # noqa: E402

from serialgen.evaluation.clip import ClipModel
from serialgen.evaluation.face import ARCFACE_TEMPLATE, FACE_KEYPOINTS, FaceEmbedder
from serialgen.evaluation.metrics import clip_embeddings, clip_i, clip_t, face_embeddings, face_sim
from serialgen.evaluation.evaluators import ClipFaceEvaluator
from serialgen.evaluation.scoring import score_generations
from serialgen.evaluation.testset import TestCharacter
from serialgen.storage.images import decode_image, encode_png


def mask(image: np.ndarray) -> np.ndarray:
    rgb = image[..., :3].astype(np.int16)
    return np.where(rgb.max(-1) - rgb.min(-1) > 40, 255, 0).astype(np.uint8)


def pose(image: np.ndarray) -> np.ndarray:
    keypoints = np.zeros((18, 3), np.float32)
    h, w = image.shape[:2]
    for row, index in enumerate(FACE_KEYPOINTS):
        keypoints[index] = (*(ARCFACE_TEMPLATE[row] / 112 * (w * 0.4) + (w * 0.3, h * 0.05)), 0.9)
    return keypoints


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--outputs", type=int, default=80, help="generations per character")
    parser.add_argument("--characters", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        evaluator = ClipFaceEvaluator(ClipModel(build_tiny_clip(Path(tmp) / "clip")),
                              FaceEmbedder(build_tiny_face_model(Path(tmp) / "face.onnx")), mask, pose)
        references = {f"c{i}": TestCharacter(f"c{i}", "anime", rng.integers(0, 256, (192, 128, 3), dtype=np.uint8), "-")
                      for i in range(args.characters)}
        rows = [{"generation_id": f"g{c}{k}", "method": "two_stage", "personalizer_version": "v",
                 "standardizer_version": None, "character_id": c, "prompt": f"a person, prompt {k % 20}",
                 "prompt_category": "action", "seed": k // 20, "standardized_reference": None,
                 "image": encode_png(rng.integers(0, 256, (192, 128, 3), dtype=np.uint8))}
                for c in references for k in range(args.outputs)]
        start = time.perf_counter()
        score_generations(evaluator, rows, references, "bench")
        ours = time.perf_counter() - start
        start = time.perf_counter()
        for row in rows:  # baseline: every pair scored on its own
            image, reference = decode_image(row["image"], "RGB"), references[row["character_id"]].image
            pair = clip_embeddings(evaluator.clip, [image, reference], evaluator.mask_fn)
            clip_i(pair[:1], pair[1:])
            clip_t(clip_embeddings(evaluator.clip, [image]), evaluator.clip.embed_texts([row["prompt"]]))
            faces = face_embeddings(evaluator.face, evaluator.pose_fn, [image, reference])
            face_sim(faces[:1], faces[1:])
        baseline = time.perf_counter() - start
    n = len(rows)
    print(f"{n} generations, {args.characters} characters: score_generations {ours:.2f} s ({n / ours:.1f} images/s, "
          f"AP-CLIP-I and aggregates included); per-pair baseline {baseline:.2f} s ({n / baseline:.1f} images/s); "
          f"speed-up {baseline / ours:.2f}x")


if __name__ == "__main__":
    main()
