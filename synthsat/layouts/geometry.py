"""Geometric pieces of training masks: the eight dihedral transforms, random crops and
quadrant mosaics.

All functions take a ``numpy.random.Generator`` and draw from it in a fixed order, so a
seeded generator gives the same pieces (and bytes) every time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The dihedral transforms of a square: ``(k, flip)`` = rotate by ``k`` quarter turns
#: (counter-clockwise), then mirror left-right if ``flip``. Index 0 is the identity.
DIHEDRAL: tuple[tuple[int, bool], ...] = tuple((k, f) for f in (False, True) for k in range(4))


def dihedral(array: np.ndarray, index: int) -> np.ndarray:
    """``array`` (…, H, W) under dihedral transform ``index`` (see :data:`DIHEDRAL`)."""
    k, flip = DIHEDRAL[index]
    out = np.rot90(array, k, axes=(-2, -1))
    if flip:
        out = out[..., ::-1]
    return np.ascontiguousarray(out)


def swaps_axes(index: int) -> bool:
    """Whether dihedral transform ``index`` turns an (H, W) array into a (W, H) one."""
    return DIHEDRAL[index][0] % 2 == 1


def random_piece(
    rng: np.random.Generator,
    masks: Sequence[np.ndarray],
    shape: tuple[int, int],
    rotate: bool = True,
) -> np.ndarray | None:
    """A random crop of one of ``masks``, of ``shape`` after a random dihedral transform.

    The transform is drawn first (one of the 8, or of identity and left-right flip
    without ``rotate``, among those for which some mask is large enough); the crop is
    cut, of the shape the transform turns into ``shape``, from a random mask large
    enough, at a random position, and transformed.

    Returns:
        the (H, W) piece, or None when no mask is large enough (in either orientation).
    """
    h, w = shape

    def fitting(index: int) -> list[int]:
        need = (w, h) if swaps_axes(index) else (h, w)
        return [i for i, m in enumerate(masks) if m.shape[0] >= need[0] and m.shape[1] >= need[1]]

    choices = [i for i in (range(8) if rotate else (0, 4)) if fitting(i)]
    if not choices:
        return None
    index = choices[int(rng.integers(len(choices)))]
    need = (w, h) if swaps_axes(index) else (h, w)
    fits = fitting(index)
    mask = masks[fits[int(rng.integers(len(fits)))]]
    top = int(rng.integers(mask.shape[0] - need[0] + 1))
    left = int(rng.integers(mask.shape[1] - need[1] + 1))
    return dihedral(mask[top : top + need[0], left : left + need[1]], index)


def quadrants(shape: tuple[int, int]) -> list[tuple[slice, slice]]:
    """The four quadrants of an (H, W) array as (row, column) slices: top-left, top-right,
    bottom-left, bottom-right (the odd row or column goes to the bottom / right ones)."""
    h, w = shape
    rows = (slice(0, h // 2), slice(h // 2, h))
    cols = (slice(0, w // 2), slice(w // 2, w))
    return [(r, c) for r in rows for c in cols]


def mosaic(
    rng: np.random.Generator,
    masks: Sequence[np.ndarray],
    shape: tuple[int, int],
    rotate: bool = True,
) -> np.ndarray | None:
    """An (H, W) mask of four quadrants, each a :func:`random_piece` of a random mask.

    Returns:
        the mosaic, or None when a quadrant fits no mask.
    """
    out: np.ndarray | None = None
    for rows, cols in quadrants(shape):
        piece = random_piece(rng, masks, (rows.stop - rows.start, cols.stop - cols.start), rotate)
        if piece is None:
            return None
        if out is None:
            out = np.empty(shape, dtype=piece.dtype)
        out[rows, cols] = piece
    return out
