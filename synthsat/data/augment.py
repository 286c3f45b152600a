"""Geometric augmentation applied identically to image and mask."""

from __future__ import annotations

import numpy as np


def dihedral(image: np.ndarray, mask: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Apply element ``k`` (0..7) of the dihedral group: ``k % 4`` quarter turns, then a
    horizontal flip when ``k >= 4``. ``image`` is (C, H, W), ``mask`` is (H, W)."""
    turns = k % 4
    if turns:
        image = np.rot90(image, turns, axes=(1, 2))
        mask = np.rot90(mask, turns, axes=(0, 1))
    if k >= 4:
        image = image[:, :, ::-1]
        mask = mask[:, ::-1]
    return image, mask


def random_dihedral(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random flips and 90-degree rotations (one of the 8 dihedral transforms)."""
    return dihedral(image, mask, int(rng.integers(8)))
