"""serialgen.imaging: the one home of grids and tiles (fit to a height or into a square, gutters, RGBA over white)."""

from __future__ import annotations

import numpy as np
import pytest

from serialgen.imaging import fit_height, fit_square, grid


def _solid(h: int, w: int, value, channels: int = 3) -> np.ndarray:
    return np.full((h, w, channels), value, np.uint8)


def test_grid_pads_rows_below_and_right_with_gutters_in_the_background_colour():
    a, b, c = _solid(4, 3, 10), _solid(2, 5, 20), _solid(3, 2, 30)
    sheet = grid([[a, b], [c]], gutter=1, background=(90, 90, 90))
    # Row 1: 4 + 1 tall, (3 + 1) + (5 + 1) wide; row 2: 3 + 1 tall, padded to the same width.
    assert sheet.shape == (5 + 4, 10, 3) and sheet.dtype == np.uint8
    assert (sheet[:4, :3] == 10).all() and (sheet[:2, 4:9] == 20).all() and (sheet[5:8, :2] == 30).all()
    background = np.ones(sheet.shape[:2], bool)
    background[:4, :3] = background[:2, 4:9] = background[5:8, :2] = False
    assert (sheet[background] == 90).all()


def test_grid_without_gutter_is_the_tiles_side_by_side_and_needs_a_tile():
    a, b = _solid(2, 2, 7), _solid(3, 1, 8)
    assert np.array_equal(grid([[a, b]]), np.array([[[7] * 3, [7] * 3, [8] * 3],
                                                    [[7] * 3, [7] * 3, [8] * 3],
                                                    [[255] * 3, [255] * 3, [8] * 3]], np.uint8))
    with pytest.raises(ValueError, match="at least one tile"):
        grid([[]])


def test_transparency_and_grey_become_rgb_over_white():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (0, 0, 0, 255)           # opaque black stays black, transparent black becomes white
    grey = np.full((2, 1), 128, np.uint8)
    sheet = grid([[rgba, grey]])
    assert sheet.shape == (2, 3, 3)
    assert tuple(sheet[0, 0]) == (0, 0, 0) and tuple(sheet[1, 1]) == (255, 255, 255)
    assert (sheet[:, 2] == 128).all()


def test_fit_height_keeps_the_aspect_and_fit_square_centres_inside_the_margin():
    assert fit_height(_solid(100, 50, 60), 40).shape == (40, 20, 3)
    assert fit_height(_solid(100, 1, 60), 10).shape == (10, 1, 3)   # never narrower than a pixel
    square = fit_square(_solid(30, 10, 0), 34)
    assert square.shape == (34, 34, 3)
    dark = np.argwhere(square.max(-1) < 128)
    assert dark[:, 0].min() == 2 and dark[:, 0].max() == 31          # 30 rows tall, 2 pixels in from the edges
    assert dark[:, 1].min() == 12 and dark[:, 1].max() == 21         # 10 columns wide, centred
    assert (fit_square(None, 8) == 255).all() and fit_square(None, 8).shape == (8, 8, 3)


def test_the_preview_grids_are_rows_of_cells_one_height_tall_with_a_two_pixel_gutter():
    from serialgen.compositing.preview import pair_grid
    from serialgen.stages.standardize import preview_grid

    pair = {"input_image": _solid(96, 64, 10), "background_mask": np.ones((96, 64), bool),
            "reference_pose_image": _solid(96, 64, 0), "target_image": _solid(192, 128, 20),
            "target_pose_image": _solid(192, 128, 0)}
    sheet = pair_grid([pair, pair], height=48)
    assert sheet.shape == (2 * (48 + 2), 5 * (32 + 2), 3)
    assert (sheet[:48, 34:66] == 255).all() and (sheet[48:50] == 255).all()   # the mask (True = 255) and a gutter
    assert pair_grid([]) is None
    row = {"original": _solid(100, 50, 10), "mask": np.zeros((96, 64), np.uint8), "pose": _solid(96, 64, 0),
           "standardized": _solid(96, 64, 20)}
    assert preview_grid([row, row], height=48).shape == (2 * (48 + 2), 24 + 2 + 3 * (32 + 2), 3)
    assert preview_grid([]) is None
