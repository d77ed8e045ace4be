"""Background images: safe decoding of user files, a seeded procedural generator, and per-pair crops.

The paper composited its renders over 9,186 photos. Without photos, the procedural generator gives
indoor- and outdoor-like scenes (gradients, value-noise textures, shapes, blurred structure) that
differ in layout, palette and frequency content, so the model cannot learn one background.
"""

from __future__ import annotations

import colorsys
import hashlib

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from serialgen.storage.images import ImageDecodeError, decode_image, encode_png, encode_webp

#: File name endings ingested from a background folder.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def background_id(data: bytes) -> str:
    """Content hash: the same photo ingested twice (or from two paths) is one background."""
    return hashlib.sha256(data).hexdigest()[:24]


def ingest_image(data: bytes, max_pixels: int, max_side: int) -> tuple[bytes, int, int]:
    """User image bytes -> (WebP bytes, width, height): EXIF-rotated RGB, at most ``max_side`` long.

    Raises :class:`ImageDecodeError` for unreadable, truncated or oversized (bomb) files.
    """
    rgb = decode_image(data, mode="RGB", max_pixels=max_pixels)
    height, width = rgb.shape[:2]
    if min(width, height) < 16:
        raise ImageDecodeError(f"image of {width}x{height} is too small for a background")
    if max(width, height) > max_side:
        factor = max_side / max(width, height)
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))
    return encode_webp(rgb, quality=92), rgb.shape[1], rgb.shape[0]


def procedural_background(seed: int, index: int, width: int, height: int) -> np.ndarray:
    """One procedural scene, HxWx3 uint8; a pure function of (seed, index, size).

    Layers: a scene base (room, landscape or texture), far shapes blurred strongly, near shapes
    blurred lightly (depth of field), then fine sensor grain.
    """
    rng = np.random.default_rng([seed, index, 0xB6])
    kind = ("indoor", "outdoor", "texture")[index % 3]
    palette = _palette(rng)
    unit = min(width, height) / 128  # blur radii and grain scale with the image
    if kind == "indoor":
        base = _indoor(rng, width, height, palette)
    elif kind == "outdoor":
        base = _outdoor(rng, width, height, palette)
    else:
        gradient = _vertical_gradient(height, width, palette[0], palette[1])
        base = 0.5 * gradient + 0.5 * _noise_rgb(rng, width, height, palette)
    img = Image.fromarray(np.clip(base * 255, 0, 255).astype(np.uint8))
    img = _shapes(rng, img, palette, n=int(rng.integers(2, 8))).filter(
        ImageFilter.GaussianBlur(radius=float(rng.uniform(2.0, 5.0)) * unit))
    img = _shapes(rng, img, palette, n=int(rng.integers(1, 6))).filter(
        ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.5)) * unit))
    out = np.asarray(img).astype(np.float32) / 255
    out = out + rng.normal(0, rng.uniform(0.005, 0.02), out.shape).astype(np.float32)
    return np.clip(out * 255, 0, 255).astype(np.uint8)


def procedural_background_png(seed: int, index: int, width: int, height: int) -> bytes:
    return encode_png(procedural_background(seed, index, width, height))


def crop_background(image: np.ndarray, crop: tuple[float, float, float], flip: bool,
                    canvas: tuple[int, int]) -> np.ndarray:
    """The canvas-sized background of one pair: a crop with the canvas aspect, optionally mirrored.

    ``crop = (u, v, size)``: the crop is ``size`` times the largest canvas-aspect window of the image,
    placed at fraction (u, v) of the free range.
    """
    width, height = canvas
    ih, iw = image.shape[:2]
    aspect = width / height
    cw, ch = (iw, iw / aspect) if iw / ih < aspect else (ih * aspect, ih)
    u, v, size = crop
    cw, ch = cw * size, ch * size
    x0, y0 = u * (iw - cw), v * (ih - ch)
    img = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR,
                                        box=(x0, y0, x0 + cw, y0 + ch), reducing_gap=2.0)
    out = np.asarray(img)
    return out[:, ::-1] if flip else out


# -- procedural building blocks ---------------------------------------------------------------

def _palette(rng: np.random.Generator) -> np.ndarray:
    """Five colours of one hue family (muted, varied lightness, as in real scenes) plus an accent."""
    hue = rng.uniform(0, 1)
    colours = [colorsys.hsv_to_rgb((hue + rng.normal(0, 0.05)) % 1, rng.uniform(0.05, 0.6), rng.uniform(0.25, 0.95))
               for _ in range(4)]
    accent = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.3, 0.9), rng.uniform(0.3, 1.0))
    return np.array([*colours, accent], np.float32)


def _vertical_gradient(height: int, width: int, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    t = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    return np.broadcast_to(top * (1 - t) + bottom * t, (height, width, 3)).astype(np.float32)


def _value_noise(rng: np.random.Generator, width: int, height: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1]: random values on a coarse grid, bicubic-upsampled."""
    grid = rng.random((max(2, cells * height // max(width, height)), max(2, cells * width // max(width, height))))
    img = Image.fromarray((grid * 255).astype(np.uint8)).resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32) / 255


def _noise_rgb(rng: np.random.Generator, width: int, height: int, palette: np.ndarray) -> np.ndarray:
    """Two octaves of value noise mapped between two palette colours (wood, plaster, foliage...)."""
    n = 0.65 * _value_noise(rng, width, height, int(rng.integers(3, 8))) \
        + 0.35 * _value_noise(rng, width, height, int(rng.integers(12, 40)))
    return palette[2] * (1 - n[..., None]) + palette[3] * n[..., None]


def _indoor(rng: np.random.Generator, width: int, height: int, palette: np.ndarray) -> np.ndarray:
    """A lit wall with frames (windows, pictures, doors) over a floor of planks or tiles in perspective."""
    horizon = int(height * rng.uniform(0.45, 0.8))
    img = _vertical_gradient(height, width, palette[0] * 1.1, palette[0] * 0.8)
    floor = _noise_rgb(rng, width, height, palette) * 0.85
    # Planks/tile joints converge to a vanishing point on the horizon.
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    vx = rng.uniform(0.2, 0.8) * width
    depth = np.maximum(yy - horizon, 1.0)
    across = (xx - vx) / depth * height * 0.05
    joints = np.abs(((across * rng.uniform(0.5, 2.0)) % 1.0) - 0.5) > 0.46
    if rng.random() < 0.5:  # tiles: joints in depth too
        joints |= np.abs(((height * 2 / depth * rng.uniform(0.5, 1.5)) % 1.0) - 0.5) > 0.45
    floor = np.where(joints[..., None], floor * 0.7, floor)
    img[horizon:] = floor[horizon:]
    wall = Image.fromarray(np.clip(img * 255, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(wall)
    for _ in range(int(rng.integers(0, 4))):
        w, h = rng.uniform(0.1, 0.35) * width, rng.uniform(0.1, 0.45) * horizon
        x0, y0 = rng.uniform(0, width - w), rng.uniform(0.05, 0.9) * max(horizon - h, 1)
        frame = tuple(int(c * 255) for c in palette[rng.integers(5)] * rng.uniform(0.5, 1.0))
        inside = tuple(int(c * 255) for c in np.clip(palette[rng.integers(5)] * rng.uniform(0.8, 1.4), 0, 1))
        draw.rectangle((x0, y0, x0 + w, y0 + h), fill=frame)
        draw.rectangle((x0 + 0.08 * w, y0 + 0.08 * h, x0 + 0.92 * w, y0 + 0.92 * h), fill=inside)
    img = np.asarray(wall).astype(np.float32) / 255
    cx, cy = rng.uniform(0, width), rng.uniform(0, horizon)
    light = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (0.6 * max(width, height)) ** 2))
    return np.clip(img * (0.7 + 0.5 * light[..., None]), 0, 1)


def _outdoor(rng: np.random.Generator, width: int, height: int, palette: np.ndarray) -> np.ndarray:
    """Sky (day or dusk), hazy far hills, a textured near ground line from a few sines."""
    if rng.random() < 0.7:
        sky_top = np.clip(np.array([0.35, 0.55, 0.85]) + rng.normal(0, 0.08, 3), 0, 1)
        sky_bottom = np.clip(sky_top + np.array([0.3, 0.25, 0.1]), 0, 1)
    else:  # dusk
        sky_top = np.array([0.25, 0.2, 0.45])
        sky_bottom = np.clip(np.array([0.95, 0.6, 0.35]) + rng.normal(0, 0.05, 3), 0, 1)
    img = _vertical_gradient(height, width, sky_top, sky_bottom)
    x = np.linspace(0, 2 * np.pi, width)
    rows = np.arange(height)[:, None]
    for layer, (level, haze) in enumerate(((0.35, 0.55), (0.55, 0.0))):
        waves = (rng.uniform(0.01, 0.08) * np.sin(k * x * rng.uniform(0.5, 2) + rng.uniform(0, 6)) for k in (1, 2, 5))
        ridge = height * (level + rng.uniform(-0.1, 0.15) + sum(waves))
        ground = rows >= ridge[None, :]
        texture = _noise_rgb(rng, width, height, palette) * (0.8 + 0.2 * layer)
        img[ground] = (texture * (1 - haze) + sky_bottom * haze)[ground]
    return img


def _shapes(rng: np.random.Generator, img: Image.Image, palette: np.ndarray, n: int) -> Image.Image:
    """Rectangles (windows, furniture), ellipses (trees, lamps) and polygons in palette colours."""
    width, height = img.size
    overlay = img.copy()
    draw = ImageDraw.Draw(overlay)
    for _ in range(n):
        colour = tuple(int(c) for c in np.clip(palette[rng.integers(len(palette))] * rng.uniform(0.6, 1.3), 0, 1) * 255)
        x0, y0 = rng.uniform(-0.1, 1.0) * width, rng.uniform(-0.1, 1.0) * height
        w, h = rng.uniform(0.05, 0.5) * width, rng.uniform(0.05, 0.6) * height
        shape = rng.integers(3)
        if shape == 0:
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill=colour)
        elif shape == 1:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=colour)
        else:
            pts = [(x0 + rng.uniform(0, w), y0 + rng.uniform(0, h)) for _ in range(int(rng.integers(3, 7)))]
            draw.polygon(pts, fill=colour)
    return Image.blend(img, overlay, float(rng.uniform(0.5, 0.9)))

