"""Background masks through rembg: one reused ``u2net_custom`` session on a local U2-Net-convention ONNX file.

U2-Net's convention (what rembg's custom session feeds and reads): a 1x3x320x320 float input, the
RGB image resized to 320x320 (Lanczos), divided by its maximum and normalised with ImageNet's mean
and std; the first output is 1x1xHxW, min-max normalised by rembg and resized back. Any file in this
convention loads from any path without network: u2net.onnx, isnet-anime.onnx, or the tiny net that
``train-preprocessors`` exports.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

#: rembg's BaseSession.normalize constants for U2-Net models.
U2NET_SIZE = (320, 320)
U2NET_MEAN = (0.485, 0.456, 0.406)
U2NET_STD = (0.229, 0.224, 0.225)
#: An alpha channel counts as the image's own mask when some pixel is at most this opaque.
ALPHA_TRANSPARENT = 250


def u2net_input(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> the 3x320x320 float32 array rembg's custom session feeds (for training the tiny net)."""
    resized = np.asarray(Image.fromarray(image).convert("RGB").resize(U2NET_SIZE, Image.Resampling.LANCZOS),
                         np.float64)
    resized = resized / max(resized.max(), 1e-6)
    normalised = (resized - U2NET_MEAN) / U2NET_STD
    return normalised.transpose(2, 0, 1).astype(np.float32)


def own_alpha(image: np.ndarray) -> np.ndarray | None:
    """The foreground mask (255 = foreground) an RGBA image carries, or None when it has no real transparency."""
    if image.ndim == 3 and image.shape[2] == 4 and image[..., 3].min() <= ALPHA_TRANSPARENT:
        return np.where(image[..., 3] >= 128, 255, 0).astype(np.uint8)
    return None


class MaskModel:
    """One rembg session, reused for every image (creating a session loads the model)."""

    def __init__(self, model_path: Path) -> None:
        from rembg import new_session

        self.session = new_session("u2net_custom", model_path=str(model_path))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 (or HxWx4: its own alpha when transparent) uint8 -> HxW uint8 mask, 255 = foreground."""
        alpha = own_alpha(image)
        if alpha is not None:
            return alpha
        soft = np.asarray(self.session.predict(Image.fromarray(np.ascontiguousarray(image[..., :3])))[0])
        return np.where(soft >= 128, 255, 0).astype(np.uint8)
