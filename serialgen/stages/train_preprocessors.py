"""Stage driver: train the tiny preprocessors on `pairs` and record their held-out scores (no Prefect).

The synthetic pairs carry exact labels (background mask, COCO-18 keypoints with visibility). The
nets are exported to ``<lake>/_checkpoints/preprocessors/`` in the real models' ONNX conventions,
loaded back through :func:`serialgen.preprocessing.load_preprocessors` and scored on the test split
(held-out characters): mask IoU vs the whole frame, PCK vs the mean training pose.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from serialgen.checkpoints import content_version, preprocessors_dir
from serialgen.config import Settings
from serialgen.dag import config_hash
from serialgen.preprocessing import DETECTOR_FILE, MASK_FILE, POSE_FILE, load_preprocessors
from serialgen.preprocessing.evaluation import evaluate
from serialgen.preprocessing.training import LabelledImages, train_and_export
from serialgen.storage.images import decode_image, decode_mask
from serialgen.storage.runs import MODEL_VERSION, StageRun

STAGE = "train-preprocessors"


@dataclass
class TrainPreprocessorsReport:
    run_id: str
    folder: Path
    train_images: int
    metrics: dict

    def as_dict(self) -> dict:
        return {**asdict(self), "folder": str(self.folder)}


def labelled_pairs(settings: Settings, split: str) -> LabelledImages:
    """The composited inputs of ``split`` with their exact foreground masks and reference keypoints (the
    ``true_*`` labels: the standardizer's columns carry estimator-like errors on purpose)."""
    table = settings.open_lake().read(
        "pairs", columns=["input_image", "true_background_mask", "true_reference_keypoints"],
        filter=f"split = '{split}'")
    rows = table.to_pylist()
    return LabelledImages([decode_image(r["input_image"], "RGB") for r in rows],
                          [decode_mask(r["true_background_mask"]) < 128 for r in rows],
                          [np.asarray(r["true_reference_keypoints"], np.float32) for r in rows])


def run_train_preprocessors(settings: Settings, flow_run_id: str | None = None) -> TrainPreprocessorsReport:
    """Train, export, reload and score the mask, detector and keypoint nets."""
    lake = settings.open_lake()
    train = labelled_pairs(settings, "train")
    if len(train) == 0:
        raise FileNotFoundError(f"no train pairs in lake {settings.lake}: run `serialgen composite` first")
    test = labelled_pairs(settings, "test")
    folder = preprocessors_dir(settings)
    start = time.perf_counter()
    with StageRun(lake, STAGE, config_hash(settings, STAGE), inputs=["pairs"], flow_run_id=flow_run_id) as run:
        metrics = train_and_export(train, settings.preprocessing, folder, (MASK_FILE, DETECTOR_FILE, POSE_FILE))
        tiny = settings.model_copy(update={"profile": "tiny", "preprocessing": settings.preprocessing.model_copy(
            update={"mask_model": None, "pose_detector": None, "pose_model": None})})
        loaded = load_preprocessors(tiny)
        cfg = settings.preprocessing
        if len(test):
            metrics.update(evaluate(loaded, test, train, cfg.pck_threshold, cfg.keypoint_threshold))
        metrics.update(train_images=len(train), seconds=round(time.perf_counter() - start, 2), **loaded.versions)
        run.metrics = {**metrics, MODEL_VERSION: content_version(folder)}
        run.checkpoint = str(folder)
    return TrainPreprocessorsReport(run.run_id, folder, len(train), metrics)
