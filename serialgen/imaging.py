"""Grids of images (previews, contact sheets, report grids, side-by-side references): tiles fitted to a cell
height or into a square, laid out in rows with gutters, transparency over white. numpy and PIL only.

Every grid in the package goes through :func:`grid`; the tiles come from :func:`fit_height` or
:func:`fit_square` (or are used at their own size).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from serialgen.storage.images import on_white

WHITE = (255, 255, 255)


def fit_height(image: np.ndarray, height: int, resample: Image.Resampling = Image.Resampling.BICUBIC) -> np.ndarray:
    """``image`` (uint8 HxW, HxWx3 or HxWx4: transparency over white) as RGB ``height`` pixels tall, aspect kept."""
    rgb = on_white(np.asarray(image))
    width = max(1, round(rgb.shape[1] * height / rgb.shape[0]))
    return np.asarray(Image.fromarray(rgb).resize((width, height), resample))


def fit_square(image: np.ndarray | None, size: int, margin: int = 2,
               resample: Image.Resampling = Image.Resampling.BICUBIC, background: tuple[int, int, int] = WHITE
               ) -> np.ndarray:
    """``image`` scaled to fit a ``size`` x ``size`` RGB square ``margin`` pixels in from each edge and centred on
    ``background``; a blank square when None."""
    canvas = Image.new("RGB", (size, size), background)
    if image is not None:
        picture = Image.fromarray(on_white(np.asarray(image)))
        scale = (size - 2 * margin) / max(picture.size)
        picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                                 resample)
        canvas.paste(picture, ((size - picture.width) // 2, (size - picture.height) // 2))
    return np.asarray(canvas)


def grid(rows: Sequence[Sequence[np.ndarray]], gutter: int = 0, background: tuple[int, int, int] = WHITE
         ) -> np.ndarray:
    """One uint8 RGB image of ``rows`` of tiles (uint8 HxW, HxWx3 or HxWx4, transparency over white), left to
    right and top to bottom. Each tile is followed by ``gutter`` pixels on its right and below; a row is as tall
    as its tallest tile (shorter ones padded below), and every row is padded on the right to the widest. Gutters
    and padding are ``background``. At least one tile."""
    lines = []
    for row in rows:
        tiles = [on_white(np.asarray(t)) for t in row]
        if not tiles:
            continue
        height = max(t.shape[0] for t in tiles) + gutter
        lines.append(np.concatenate([_pad(t, height, t.shape[1] + gutter, background) for t in tiles], 1))
    if not lines:
        raise ValueError("a grid needs at least one tile")
    width = max(line.shape[1] for line in lines)
    return np.concatenate([_pad(line, line.shape[0], width, background) for line in lines], 0)


def _pad(image: np.ndarray, height: int, width: int, background: tuple[int, int, int]) -> np.ndarray:
    """``image`` in the top-left corner of a ``height`` x ``width`` canvas of ``background``."""
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = background
    canvas[:image.shape[0], :image.shape[1]] = image
    return canvas
