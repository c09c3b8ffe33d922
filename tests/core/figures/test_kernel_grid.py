"""core/figures/kernel_grid.py: the Figure-3 grid, checked pixel by pixel against plain numpy."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from alexcli.core.figures.kernel_grid import (
    colour_fraction,
    grid_layout,
    kernel_grid,
    normalize_kernels,
)
from alexcli.core.figures.png import write_png

WHITE = (255, 255, 255)


def _weights(c=96, k=11, seed=0):
    return np.random.default_rng(seed).normal(0, 0.01, (c, 3, k, k)).astype(np.float32)


def _reference_tile(kernel: np.ndarray) -> np.ndarray:
    """The kernel stretched to 0–255 over its own min/max, as an (k, k, 3) image."""
    k = kernel.astype(np.float64)
    scaled = (k - k.min()) / (k.max() - k.min()) * 255
    return np.rint(scaled).astype(np.uint8).transpose(1, 2, 0)


def _tile_at(image, y, x, k, scale):
    """Read a k×k tile enlarged `scale` times back to k×k, checking the enlargement is
    nearest-neighbour (each scale×scale block one colour)."""
    block = image[y : y + k * scale, x : x + k * scale].reshape(k, scale, k, scale, 3)
    assert (block == block[:, :1, :, :1]).all(), "tile is not a nearest-neighbour enlargement"
    return block[:, 0, :, 0]


def test_paper_grid_geometry_by_hand():
    # 96 kernels 11×11, 2 towers: 16 per row, 3 rows per tower, tiles 11·4 = 44 px,
    # 2-px gaps, 12-px band between the towers.
    image, layout = kernel_grid(_weights())
    assert (layout.columns, layout.rows, layout.tile, layout.gap) == (16, 3, 44, 2)
    width = 2 + 16 * (44 + 2)  # 738
    height = 2 * (2 + 3 * (44 + 2)) + 12  # 292
    assert image.shape == (height, width, 3) and image.dtype == np.uint8
    assert layout.origin(0) == (2, 2)
    assert layout.origin(17) == (2 + 46, 2 + 46)  # tower 1, row 2, column 2
    assert layout.origin(48) == (140 + 12 + 2, 2)  # tower 2 starts below the band


def test_every_tile_is_its_kernel_normalised(tmp_path):
    w = _weights()
    image, _ = kernel_grid(w)
    write_png(tmp_path / "k.png", image)
    back = np.asarray(Image.open(tmp_path / "k.png").convert("RGB"))
    assert back.shape == image.shape
    for i in range(96):
        tower, j = divmod(i, 48)
        row, col = divmod(j, 16)
        y = tower * (140 + 12) + 2 + row * 46
        x = 2 + col * 46
        np.testing.assert_array_equal(_tile_at(back, y, x, 11, 4), _reference_tile(w[i]))


def test_towers_are_separate_blocks_with_a_rule_between():
    image, _ = kernel_grid(_weights())
    band = image[140:152]  # between tower 1's block (rows 0–139) and tower 2's (152–291)
    grey_rows = [r for r in range(12) if (band[r] == 128).all()]
    assert len(grey_rows) == 2, "a 2-px grey rule in the band"
    others = np.delete(band, grey_rows, axis=0)
    assert (others == 255).all(), "nothing else in the band"
    # the gaps around tiles are white: the left border, and the top border of each block
    left = np.delete(image[:, :2], [140 + r for r in grey_rows], axis=0)
    assert (left == 255).all()
    assert (image[0:2] == 255).all() and (image[152:154] == 255).all()


def test_one_tower_is_one_block():
    image, layout = kernel_grid(_weights(), towers=1)
    assert layout.rows == 6  # 96 kernels, 16 per row
    assert image.shape == (2 + 6 * 46, 738, 3)
    assert not (image == 128).all(axis=(1, 2)).any(), "no rule without a second tower"


def test_small_layout_columns_scale_and_empty_cells():
    w = _weights(c=20, k=7)
    image, layout = kernel_grid(w, towers=2, columns=4, scale=3, gap=1)
    # 10 per tower, 4 per row → 3 rows, the last with 2 empty cells
    assert (layout.rows, layout.tile, layout.separation) == (3, 21, 8)
    block = 1 + 3 * 22
    assert image.shape == (2 * block + 8, 1 + 4 * 22, 3)
    y, x = layout.origin(9)  # tower 1's last kernel: row 3, column 2
    assert (y, x) == (1 + 2 * 22, 1 + 22)
    np.testing.assert_array_equal(_tile_at(image, y, x, 7, 3), _reference_tile(w[9]))
    empty = image[y : y + 21, x + 22 :]
    assert (empty == 255).all(), "cells past a tower's last kernel stay blank"
    np.testing.assert_array_equal(_tile_at(image, block + 8 + 1, 1, 7, 3), _reference_tile(w[10]))


def test_default_scale_makes_tiles_about_44_px():
    assert grid_layout(96, 11).scale == 4
    assert grid_layout(32, 7).scale == 6
    assert grid_layout(32, 7).columns == 16
    assert grid_layout(8, 5).columns == 4  # a tower of 4 kernels: one row of 4
    assert grid_layout(8, 5, columns=50).columns == 4  # no blank width beyond a tower


def test_colour_is_kept_grey_stays_grey():
    grey = np.repeat(np.random.default_rng(1).normal(size=(1, 1, 5, 5)), 3, axis=1)
    tile = normalize_kernels(grey)[0]
    assert (tile[..., 0] == tile[..., 1]).all() and (tile[..., 1] == tile[..., 2]).all()
    red = np.zeros((1, 3, 5, 5))
    red[0, 0] = 1.0  # positive red weights only
    tile = normalize_kernels(red)[0]
    assert (tile[..., 0] == 255).all() and (tile[..., 1:] == 0).all()


def test_global_normalisation_is_one_range():
    w = _weights(c=4, k=5)
    w[1] *= 0.01  # a weak kernel
    tiles = normalize_kernels(w, "global").astype(int)
    flat = w.astype(np.float64)
    expected = np.rint((flat - flat.min()) / (flat.max() - flat.min()) * 255)
    np.testing.assert_array_equal(tiles, expected.transpose(0, 2, 3, 1))
    assert np.ptp(tiles[1]) <= 3, "a weak kernel stays near one grey"
    assert np.ptp(normalize_kernels(w, "kernel")[1].astype(int)) == 255


def test_a_constant_kernel_is_mid_grey():
    tiles = normalize_kernels(np.zeros((2, 3, 3, 3)))
    assert (tiles == 128).all()


def test_colour_fraction_grey_opponent_random():
    rng = np.random.default_rng(2)
    g = rng.normal(size=(1, 1, 11, 11))
    grey = np.repeat(g, 3, axis=1)
    opponent = np.concatenate([g, -g, np.zeros_like(g)], axis=1)  # R = −G, B = 0
    random = rng.normal(size=(200, 3, 11, 11))
    assert colour_fraction(grey)[0] == pytest.approx(0, abs=1e-12)
    assert colour_fraction(opponent)[0] == pytest.approx(1)
    assert colour_fraction(random).mean() == pytest.approx(2 / 3, abs=0.01)
    assert colour_fraction(random * 1e-3) == pytest.approx(colour_fraction(random))
    assert colour_fraction(np.zeros((1, 3, 2, 2)))[0] == 0


def test_weights_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match="C, 3, k, k"):
        normalize_kernels(np.zeros((4, 1, 5, 5)))
    with pytest.raises(ValueError, match="towers"):
        grid_layout(95, 11, towers=2)
