"""Per-image preprocessing for standardization: a background mask (rembg) and a COCO-18 pose (DWPose), as ONNX.

Real weights come only from the local files named in ``preprocessing``; the tiny profile loads the
models ``serialgen train-preprocessors`` trained and exported in the same conventions, through the
same loaders. Every path is checked before any library is called.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serialgen.checkpoints import content_version, preprocessors_dir
from serialgen.config import ConfigError, Settings
from serialgen.dag import OFFLINE_PROFILES
from serialgen.preprocessing.mask import MaskModel
from serialgen.preprocessing.pose import PoseModel

#: File names of the tiny models under :func:`preprocessors_dir`.
MASK_FILE, DETECTOR_FILE, POSE_FILE = "mask_u2net.onnx", "detector_yolox.onnx", "pose_simcc.onnx"


def model_files(settings: Settings) -> dict[str, tuple[Path, str]]:
    """{role: (path, what it is for)} of the three ONNX files this profile uses."""
    cfg = settings.preprocessing
    configured = {"mask": cfg.mask_model, "detector": cfg.pose_detector, "pose": cfg.pose_model}
    if settings.profile in OFFLINE_PROFILES and not any(configured.values()):
        folder = preprocessors_dir(settings)
        hint = "trained by `serialgen train-preprocessors`"
        return {"mask": (folder / MASK_FILE, f"the background-mask model ({hint})"),
                "detector": (folder / DETECTOR_FILE, f"the person detector ({hint})"),
                "pose": (folder / POSE_FILE, f"the keypoint model ({hint})")}
    purpose = {"mask": "the rembg background-mask model, U2-Net convention (e.g. u2net.onnx), preprocessing.mask_model",
               "detector": "DWPose's YOLOX person detector (yolox_l.onnx), preprocessing.pose_detector",
               "pose": "DWPose's whole-body pose model (dw-ll_ucoco_384.onnx), preprocessing.pose_model"}
    missing = [role for role, path in configured.items() if path is None]
    if missing:
        raise ConfigError(f"profile {settings.profile}: {purpose[missing[0]]} is not set (a local ONNX file)")
    return {role: (Path(path).expanduser(), purpose[role]) for role, path in configured.items()}


def check_files(files: dict[str, tuple[Path, str]]) -> None:
    """One line naming the first missing file, its folder and what it is for."""
    for path, purpose in files.values():
        if not path.is_file():
            raise FileNotFoundError(f"missing {path.name} in {path.parent}: {purpose}")


def file_version(path: Path) -> str:
    """``<file name>@<content version>``: identifies the weights a row was preprocessed with."""
    return f"{path.name}@{content_version(path)}"


@dataclass
class Preprocessors:
    """A mask model and a pose model, loaded once and reused (one instance per worker)."""

    mask_model: MaskModel
    pose_model: PoseModel
    versions: dict[str, str] = field(default_factory=dict)  # {"mask": "name@version", "pose": "name@version"}

    def mask(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 (or HxWx4: own alpha used when transparent) uint8 -> HxW uint8, 255 = foreground."""
        return self.mask_model(image)

    def pose(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 -> (18, 3) float32 (x, y pixels, score in [0, 1]), COCO-18; scores all 0: no person."""
        return self.pose_model(image)


def load_preprocessors(settings: Settings) -> Preprocessors:
    """The profile's preprocessors; FileNotFoundError naming a missing model file."""
    files = model_files(settings)
    check_files(files)
    cfg = settings.preprocessing
    paths = {role: path for role, (path, _) in files.items()}
    return Preprocessors(
        MaskModel(paths["mask"]),
        PoseModel(paths["detector"], paths["pose"], cfg.detection_threshold, cfg.keypoint_threshold),
        {"mask": f"u2net_custom:{file_version(paths['mask'])}",
         "pose": f"dwpose:{file_version(paths['detector'])}+{file_version(paths['pose'])}"},
    )


__all__ = ["Preprocessors", "load_preprocessors", "model_files"]
