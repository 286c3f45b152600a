"""Chip grids over a tile and the smooth weights that blend overlapping chips.

A tile of ``height x width`` pixels is covered by square chips of side ``chip`` that
overlap by at least ``overlap`` pixels; the last chip of a row or column is aligned
to the tile's edge, and a tile smaller than one chip gets a single (padded) chip.

Each chip's output is weighted by a separable window: a raised-cosine (Hann) taper
over the first and last ``overlap`` pixels and flat in between. The taper never
reaches zero, so every pixel has a positive total weight, and the weights are
normalised per axis (:meth:`ChipGrid.axis_weights`) so that the weights of all chips
covering a pixel sum to exactly one. Because both the window and the grid are
separable, the 2-D normalised weight of chip ``(i, j)`` is the outer product of the
row weights of ``i`` and the column weights of ``j`` — no per-pixel weight
accumulator is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


def chip_starts(length: int, chip: int, overlap: int) -> list[int]:
    """Start offsets of chips along one axis of ``length`` pixels.

    Chips advance by ``chip - overlap``; the last one is aligned to the edge (so it
    may overlap its neighbour by more than ``overlap``). An axis no longer than one
    chip has a single chip at 0.

    Args:
        length: axis length in pixels.
        chip: chip side in pixels.
        overlap: minimum overlap of neighbouring chips, ``0 <= overlap < chip``.

    Returns:
        increasing start offsets.
    """
    if length < 1:
        raise ValueError(f"axis length must be positive, got {length}")
    if chip < 1:
        raise ValueError(f"chip size must be positive, got {chip}")
    if not 0 <= overlap < chip:
        raise ValueError(f"overlap must be in [0, chip size {chip}), got {overlap}")
    if length <= chip:
        return [0]
    stride = chip - overlap
    starts = list(range(0, length - chip, stride))
    starts.append(length - chip)
    return starts


def taper(chip: int, overlap: int) -> np.ndarray:
    """1-D blend window: a raised-cosine ramp over ``overlap`` pixels at both ends.

    The ramp (at most half the chip long) is sampled at pixel centres, so it is
    strictly positive (its smallest value is ``sin(pi / (4 * overlap)) ** 2``) and
    symmetric.

    Returns:
        float64 array of length ``chip`` in ``(0, 1]``.
    """
    window = np.ones(chip, dtype=np.float64)
    ramp_len = min(overlap, chip // 2)
    if ramp_len > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp_len) + 0.5) / ramp_len)
        window[:ramp_len] = ramp
        window[chip - ramp_len :] = ramp[::-1]
    return window


@dataclass(frozen=True)
class ChipGrid:
    """Chips covering a ``height x width`` tile.

    Args:
        height: tile height in pixels.
        width: tile width in pixels.
        chip: chip side in pixels.
        overlap: minimum overlap of neighbouring chips in pixels.
    """

    height: int
    width: int
    chip: int
    overlap: int

    @cached_property
    def rows(self) -> list[int]:
        """Row offsets of the chip rows."""
        return chip_starts(self.height, self.chip, self.overlap)

    @cached_property
    def cols(self) -> list[int]:
        """Column offsets of the chip columns."""
        return chip_starts(self.width, self.chip, self.overlap)

    @property
    def padded_height(self) -> int:
        """Height of the area the chips cover (more than the tile's if it is small)."""
        return max(self.height, self.chip)

    @property
    def padded_width(self) -> int:
        """Width of the area the chips cover (more than the tile's if it is small)."""
        return max(self.width, self.chip)

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def axis_weights(self, axis: int) -> np.ndarray:
        """Normalised 1-D weights of every chip along ``axis`` (0: rows, 1: columns).

        Returns:
            float32 array ``(n_chips, chip)``: entry ``[i, t]`` weights the chip at
            ``starts[i]`` at offset ``t``; for each pixel the entries of all chips
            covering it sum to one.
        """
        return self._weights[axis]

    @cached_property
    def _weights(self) -> tuple[np.ndarray, np.ndarray]:
        return (
            _normalised(self.rows, self.padded_height, self.chip, self.overlap),
            _normalised(self.cols, self.padded_width, self.chip, self.overlap),
        )

    def chip_weight(self, i: int, j: int) -> np.ndarray:
        """Normalised 2-D weight ``(chip, chip)`` of the chip in row ``i``, column ``j``."""
        return np.outer(self.axis_weights(0)[i], self.axis_weights(1)[j])

    def weight_sum(self) -> np.ndarray:
        """Sum of the normalised weights of all chips at every tile pixel (all ones).

        Builds a whole-tile array: for checks and tests, not for synthesis.
        """
        total = np.zeros((self.padded_height, self.padded_width), dtype=np.float64)
        for i, r in enumerate(self.rows):
            for j, c in enumerate(self.cols):
                total[r : r + self.chip, c : c + self.chip] += self.chip_weight(i, j)
        return total[: self.height, : self.width]


def _normalised(starts: list[int], length: int, chip: int, overlap: int) -> np.ndarray:
    """Per-chip weights along one axis divided by the total weight at each pixel."""
    window = taper(chip, overlap)
    total = np.zeros(length, dtype=np.float64)
    for s in starts:
        total[s : s + chip] += window
    return np.stack([window / total[s : s + chip] for s in starts]).astype(np.float32)
