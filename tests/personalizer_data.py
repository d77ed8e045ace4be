"""Test rows for the personalizer: `real_images` and `standardized` written straight into a lake.

Each "character" is a drawn figure (head + torso) in its own colour: the real image shows it shifted
on a noisy background at its own size; the standardized image shows it centred on white (96x64).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from serialgen.storage.images import encode_png

COLOURS = [(200, 40, 40), (40, 90, 200), (30, 160, 60), (220, 170, 30), (150, 60, 180), (20, 180, 190)]
STANDARDIZER_VERSION = "standardizer-test@1"


def figure(colour, size: tuple[int, int], box: tuple[int, int, int, int], background: np.ndarray | None = None
           ) -> np.ndarray:
    height, width = size
    image = Image.fromarray(background) if background is not None else Image.new("RGB", (width, height), "white")
    x0, y0, x1, y1 = box
    head = (x0 + (x1 - x0) // 4, y0, x1 - (x1 - x0) // 4, y0 + (y1 - y0) // 4)
    draw = ImageDraw.Draw(image)
    draw.ellipse(head, fill=colour)
    draw.rectangle((x0, head[3], x1, y1), fill=colour)
    return np.asarray(image)


def make_real_and_standardized(lake, train: int = 4, test: int = 2, seed: int = 0) -> list[str]:
    """``train`` + ``test`` characters, one real image and one standardized image each; returns the image ids."""
    rng = np.random.default_rng(seed)
    real, standardized, ids = [], [], []
    for i in range(train + test):
        colour = COLOURS[i % len(COLOURS)]
        height, width = (120, 80) if i % 2 else (72, 96)  # portrait and landscape sources
        background = (rng.uniform(0, 255, (1, 1, 3)) + rng.normal(0, 20, (height, width, 3))).clip(0, 255)
        dx, dy = int(rng.integers(0, width // 3)), int(rng.integers(0, height // 4))
        image = figure(colour, (height, width), (dx, dy, dx + width // 2, dy + height * 2 // 3),
                       background.astype(np.uint8))
        image_id = f"img{i:02d}"
        ids.append(image_id)
        real.append({"image_id": image_id, "source_uri": f"test://{i}", "image": encode_png(image), "has_alpha": False,
                     "caption": None if i % 3 == 0 else f"a character in colour {i}", "domain": "anime" if i % 2 else None,
                     "character_id": f"c{i}", "split": "train" if i < train else "test", "source_mode": "RGB",
                     "width": width, "height": height})
        standard = figure(colour, (96, 64), (20, 6, 44, 90))
        standardized.append({
            "image_id": image_id, "model_version": STANDARDIZER_VERSION, "image": encode_png(standard),
            "input_mask": encode_png(np.zeros((96, 64), np.uint8)), "reference_keypoints": [[0.0, 0.0, 0.0]] * 18,
            "reference_pose_image": encode_png(np.zeros((96, 64, 3), np.uint8)),
            "target_keypoints": [[0.0, 0.0, 0.0]] * 18, "padding_box": [0, 0, 64, 96], "width": 64, "height": 96,
            "seed": 0, "steps": 20, "guidance_scale": 3.5, "sampler": "ddim", "preprocessors": "{}", "seconds": 0.1})
    lake.upsert("real_images", real, "test")
    lake.upsert("standardized", standardized, "test")
    return ids
