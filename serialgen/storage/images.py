"""Image bytes for the lake's binary columns: PNG for RGBA and masks, PNG or WebP for RGB."""

from __future__ import annotations

import io
import zlib

import numpy as np
from PIL import Image, ImageOps

#: Refuse images larger than this many pixels (decompression bombs); ~ 16k x 16k.
MAX_PIXELS = 268_000_000


class ImageDecodeError(ValueError):
    """Bytes that are not a readable image, or one that is too large."""


def encode_png(array: np.ndarray) -> bytes:
    """uint8 HxW (L), HxWx3 (RGB) or HxWx4 (RGBA) -> PNG bytes (lossless).

    zlib level 1 with run-length matching only: faster, and smaller on renders, masks and pose images,
    than level 1's default strategy.
    """
    array = _as_uint8(array)
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1, compress_type=zlib.Z_RLE)
    return buf.getvalue()


def encode_webp(array: np.ndarray, quality: int = 95, lossless: bool = False) -> bytes:
    """uint8 HxWx3 RGB -> WebP bytes (smaller than PNG for photographic content)."""
    buf = io.BytesIO()
    Image.fromarray(_as_uint8(array)).save(buf, format="WEBP", quality=quality, lossless=lossless)
    return buf.getvalue()


def decode_image(data: bytes, mode: str | None = None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded bytes -> uint8 array, EXIF orientation applied, optionally converted to ``mode``.

    The size is checked from the header, before any pixel is decoded (decompression bombs).
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > max_pixels:
                raise ImageDecodeError(f"image of {img.width}x{img.height} exceeds {max_pixels} pixels")
            img = ImageOps.exif_transpose(img)
            if mode is not None and img.mode != mode:
                img = img.convert(mode)
            return np.asarray(img).copy()
    except ImageDecodeError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        raise ImageDecodeError(f"not a readable image: {exc}") from exc


def on_white(image: np.ndarray) -> np.ndarray:
    """uint8 HxW, HxWx3 or HxWx4 -> HxWx3; transparent pixels become white (what lies under them is arbitrary)."""
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.shape[2] == 4:
        alpha = image[..., 3:].astype(np.float32) / 255
        return np.rint(image[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(image)


def encode_mask(mask: np.ndarray) -> bytes:
    """Bool or [0, 1] float or uint8 HxW mask -> 8-bit greyscale PNG."""
    if mask.dtype == bool:
        mask = mask.astype(np.uint8) * 255
    elif mask.dtype != np.uint8:
        mask = np.clip(np.rint(np.asarray(mask, np.float32) * 255), 0, 255).astype(np.uint8)
    if mask.ndim != 2:
        raise ValueError(f"a mask is HxW, got shape {mask.shape}")
    return encode_png(mask)


def decode_mask(data: bytes) -> np.ndarray:
    """PNG mask bytes -> HxW uint8 (0..255)."""
    return decode_image(data, mode="L")


def _as_uint8(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f"expected HxW, HxWx3 or HxWx4, got shape {array.shape}")
    return np.ascontiguousarray(array)
