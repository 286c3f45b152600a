"""The chips of the chip metrics: their side, a seeded selection, and cutting them out.

The chip metrics (diversity, segmentation consistency, domain Fréchet distance, FID / KID)
compare square chips at the same place in a real tile and in each of its synthetic
samples: non-overlapping full chips of one side for all tiles, a seeded subset of them
when there are too many.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from synthsat.data.errors import DataError


def chip_side(shapes: Sequence[tuple[int, int]], chip_size: int) -> int:
    """Chip side: ``chip_size`` or the smallest tile side, rounded down to a multiple of 32."""
    side = min([chip_size, *[min(s) for s in shapes]])
    if side >= 32:
        side -= side % 32
    if side < 16:
        raise DataError(f"tiles of {side} px are too small for chip metrics (need 16 px)")
    return side


def select_chips(
    shapes: Sequence[tuple[int, int]], side: int, max_chips: int | None, seed: int
) -> list[tuple[int, int, int]]:
    """Non-overlapping full chips ``(tile, row, col)``; a seeded subset of ``max_chips``."""
    chips = [
        (t, r, c)
        for t, (h, w) in enumerate(shapes)
        for r in range(0, h - side + 1, side)
        for c in range(0, w - side + 1, side)
    ]
    if max_chips is not None and len(chips) > max_chips:
        keep = np.sort(np.random.default_rng(seed).choice(len(chips), max_chips, replace=False))
        chips = [chips[i] for i in keep]
    return chips


def cut_chips(array: np.ndarray, corners: Sequence[tuple[int, int]], side: int) -> np.ndarray:
    """The ``side`` px chips at ``(row, col)`` corners of an ``(..., H, W)`` array, stacked
    along a new first axis: ``(len(corners), ..., side, side)``."""
    return np.stack([np.asarray(array[..., r : r + side, c : c + side]) for r, c in corners])
