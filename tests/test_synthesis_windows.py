"""Chip grids and blend weights."""

from __future__ import annotations

import numpy as np
import pytest

from synthsat.synthesis.windows import ChipGrid, chip_starts, taper


@pytest.mark.parametrize(
    ("length", "chip", "overlap"),
    [
        (128, 32, 8),
        (100, 32, 8),
        (33, 32, 4),
        (512, 256, 32),
        (2048, 256, 32),
        (300, 256, 32),
    ],
)
def test_chip_starts_cover_the_axis_and_end_at_the_edge(
    length: int, chip: int, overlap: int
) -> None:
    starts = chip_starts(length, chip, overlap)
    assert starts[0] == 0
    assert starts[-1] == length - chip
    assert all(b - a <= chip - overlap for a, b in zip(starts, starts[1:]))
    assert starts == sorted(set(starts))


def test_small_axis_gets_one_padded_chip() -> None:
    assert chip_starts(20, 32, 8) == [0]
    assert chip_starts(32, 32, 8) == [0]
    grid = ChipGrid(20, 50, 32, 8)
    assert grid.padded_height == 32 and grid.padded_width == 50
    assert len(grid) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 32, 8), "axis length must be positive, got 0"),
        ((64, 32, 32), r"overlap must be in \[0, chip size 32\), got 32"),
        ((64, 32, -1), r"overlap must be in \[0, chip size 32\), got -1"),
        ((64, 0, 0), "chip size must be positive, got 0"),
    ],
)
def test_chip_starts_rejects_bad_arguments(args: tuple[int, int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        chip_starts(*args)


@pytest.mark.parametrize(("chip", "overlap"), [(32, 8), (256, 32), (64, 1), (16, 15)])
def test_taper_is_smooth_symmetric_and_strictly_positive(chip: int, overlap: int) -> None:
    w = taper(chip, overlap)
    assert w.shape == (chip,)
    assert np.all(w > 0) and np.all(w <= 1)
    np.testing.assert_allclose(w, w[::-1])
    assert w[chip // 2] == pytest.approx(1.0, abs=0.05)
    # a taper, not a box: the ramp rises monotonically
    ramp = w[: min(overlap, chip // 2)]
    assert np.all(np.diff(ramp) >= 0)


@pytest.mark.parametrize(
    ("height", "width", "chip", "overlap"),
    [
        (128, 128, 32, 8),
        (100, 77, 32, 8),
        (20, 50, 32, 4),
        (300, 260, 64, 16),
        (64, 64, 64, 8),
    ],
)
def test_blend_weights_sum_to_one_everywhere(
    height: int, width: int, chip: int, overlap: int
) -> None:
    grid = ChipGrid(height, width, chip, overlap)
    total = grid.weight_sum()
    assert total.shape == (height, width)
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    for axis in (0, 1):
        assert np.all(grid.axis_weights(axis) > 0)


def test_overlapping_chips_share_pixels_smoothly() -> None:
    grid = ChipGrid(32, 56, 32, 8)  # two chip columns overlapping by 8 px
    assert grid.cols == [0, 24]
    first, second = grid.axis_weights(1)
    # inside the overlap the first chip hands over to the second gradually
    hand_over = first[24:32]
    assert np.all(np.diff(hand_over) < 0)
    np.testing.assert_allclose(hand_over + second[:8], 1.0, atol=1e-6)


def test_known_starts_and_taper_values() -> None:
    assert chip_starts(100, 32, 8) == [0, 24, 48, 68]  # stride 24, the last on the edge
    assert chip_starts(96, 32, 0) == [0, 32, 64]
    assert chip_starts(33, 32, 31) == [0, 1]
    assert chip_starts(1, 1, 0) == [0]
    # raised cosine sampled at pixel centres: 0.5 - 0.5 cos(pi (k + 1/2) / 2)
    low, high = 0.5 - 0.5 * np.cos(np.pi / 4), 0.5 - 0.5 * np.cos(3 * np.pi / 4)
    np.testing.assert_allclose(taper(6, 2), [low, high, 1, 1, high, low])
    np.testing.assert_allclose(taper(4, 8), [low, high, high, low])  # ramp capped at chip / 2
    np.testing.assert_array_equal(taper(5, 0), np.ones(5))
    np.testing.assert_allclose(taper(4, 1), [0.5, 1, 1, 0.5])  # a one-pixel ramp
    assert taper(6, 2).dtype == np.float64


def test_known_blend_weights() -> None:
    """Two 4 px chips overlapping by 2 px on a 6 px axis: weights by hand."""
    grid = ChipGrid(4, 6, 4, 2)
    assert grid.rows == [0] and grid.cols == [0, 2] and len(grid) == 2
    low, high = 0.5 - 0.5 * np.cos(np.pi / 4), 0.5 - 0.5 * np.cos(3 * np.pi / 4)
    w = np.array([low, high, high, low])
    # pixel totals along the columns: chip 0 covers 0..3, chip 1 covers 2..5
    total = np.array([low, high, high + low, low + high, high, low])
    cols = grid.axis_weights(1)
    assert cols.dtype == np.float32 and cols.shape == (2, 4)
    np.testing.assert_allclose(cols[0], w / total[0:4], rtol=1e-6)
    np.testing.assert_allclose(cols[1], w / total[2:6], rtol=1e-6)
    np.testing.assert_allclose(grid.axis_weights(0), np.ones((1, 4)))  # one chip row
    np.testing.assert_allclose(grid.chip_weight(0, 1), np.outer(np.ones(4), cols[1]))
    np.testing.assert_allclose(grid.weight_sum(), np.ones((4, 6)), atol=1e-6)
    # a small tile: the padded area is the chip, the sum is cut to the tile
    small = ChipGrid(3, 5, 8, 2)
    assert (small.padded_height, small.padded_width) == (8, 8)
    assert small.weight_sum().shape == (3, 5)
