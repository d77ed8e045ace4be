"""Reading user image files for `real_images`: every PIL mode to RGB/RGBA, EXIF orientation, bomb limits,
and a reason for every file that cannot be used.

Unlike :func:`serialgen.storage.images.decode_image` (the lake's own bytes, trusted), these are
arbitrary files: the pixel count is checked from the header before decoding, 16-bit and float
modes are scaled rather than clipped, and a palette's or grey image's transparency survives.
"""

from __future__ import annotations

import hashlib
import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Modes whose transparency is kept (as RGBA) when some pixel is not opaque.
ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")


class UnusableImage(ValueError):
    """A file that is not an image the pipeline can use; the message is the reason recorded in `errors`."""


def read_real_image(data: bytes, max_pixels: int, max_bytes: int) -> tuple[np.ndarray, str]:
    """File bytes -> (HxWx3 RGB or HxWx4 RGBA uint8, the source's PIL mode), or :class:`UnusableImage`."""
    if not data:
        raise UnusableImage("empty file (0 bytes)")
    if len(data) > max_bytes:
        raise UnusableImage(f"file of {len(data)} bytes exceeds ingest.max_bytes ({max_bytes})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > max_pixels:
                raise UnusableImage(f"image of {img.width}x{img.height} pixels exceeds ingest.max_pixels "
                                    f"({max_pixels}; decompression-bomb limit)")
            mode = img.mode
            img.load()
    except UnusableImage:
        raise
    except UnidentifiedImageError:
        raise UnusableImage("not an image (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnusableImage(f"decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UnusableImage(f"truncated or corrupt image: {exc}") from None
    img = ImageOps.exif_transpose(img)
    return to_rgb_or_rgba(img), mode


def to_rgb_or_rgba(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> RGB uint8, or RGBA when the image carries real transparency."""
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        values = np.asarray(img, np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or values.max() > 255 else 255.0
        grey = np.clip(values / top * 255, 0, 255).round().astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ALPHA_MODES:
        rgba = np.asarray(img.convert("RGBA"))
        if rgba[..., 3].min() < 255:
            return rgba.copy()
    return np.asarray(img.convert("RGB")).copy()


def pixel_id(pixels: np.ndarray) -> str:
    """The content hash of decoded, orientation-corrected pixels: one id for the same picture in any file."""
    digest = hashlib.sha256(str(pixels.shape).encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()[:24]
