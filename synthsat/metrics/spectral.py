"""Per-class spectral distance: 1-D Wasserstein distances between real and synthetic pixels.

For each class and band, the pixel values of the real imagery under that class are
compared with those of the synthetic imagery generated from the same masks. Large tiles
are subsampled: per class, a uniform random sample (without replacement, seeded, hence
reproducible) of at most ``max_pixels`` positions over all tiles is drawn; the real and the
synthetic values are read at the same positions. :class:`SpectralDistance` accumulates the
values tile by tile.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import wasserstein_distance


def class_pixel_positions(
    masks: Sequence[np.ndarray], classes: Sequence[int], max_pixels: int, seed: int = 0
) -> list[dict[int, np.ndarray]]:
    """A uniform sample of at most ``max_pixels`` pixel positions per class, over all tiles.

    Args:
        masks: ``(H, W)`` class-index masks, one per tile.
        classes: the class indices to sample.
        max_pixels: sample size cap per class.
        seed: random seed; the same inputs and seed give the same positions.

    Returns:
        per tile, ``{class: sorted flat pixel indices}`` (classes absent from a tile or not
        drawn there are left out).
    """
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    classes = [int(c) for c in classes]
    size = max(classes, default=0) + 1
    counts = np.zeros((len(masks), len(classes)), dtype=np.int64)
    for t, mask in enumerate(masks):
        hist = np.bincount(np.asarray(mask).ravel(), minlength=size)
        counts[t] = hist[classes]
    rng = np.random.default_rng(seed)
    positions: list[dict[int, np.ndarray]] = [{} for _ in masks]
    for ci, c in enumerate(classes):
        have = counts[:, ci]
        take = (
            have if have.sum() <= max_pixels else rng.multivariate_hypergeometric(have, max_pixels)
        )
        for t, n in enumerate(take):
            if n == 0:
                continue
            where = np.flatnonzero(np.asarray(masks[t]).ravel() == c)
            if n < where.size:
                where = np.sort(
                    np.random.default_rng([seed, c, t]).choice(where, int(n), replace=False)
                )
            positions[t][c] = where
    return positions


def gather_pixels(image: np.ndarray, positions: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Values ``(C, n)`` of a ``(C, H, W)`` image at each class's flat pixel positions."""
    flat = np.asarray(image).reshape(image.shape[0], -1)
    return {c: flat[:, idx].astype(np.float64) for c, idx in positions.items()}


def wasserstein_per_band(real: np.ndarray, synthetic: np.ndarray) -> np.ndarray:
    """1-D Wasserstein distance per band between ``(C, n)`` and ``(C, m)`` value samples."""
    if real.shape[0] != synthetic.shape[0]:
        raise ValueError(
            f"band counts differ: real {real.shape[0]}, synthetic {synthetic.shape[0]}"
        )
    return np.array([wasserstein_distance(r, s) for r, s in zip(real, synthetic)])


class SpectralDistance:
    """Per class, the per-band Wasserstein distance between real and synthetic pixels.

    The positions are drawn once, over the masks of all tiles
    (:func:`class_pixel_positions`); each :meth:`update` adds the values of one tile and
    its samples at that tile's positions.

    Args:
        masks: ``(H, W)`` masks, one per tile.
        classes: classes to compare (never the ignore index).
        max_pixels: pixels sampled per class.
        seed: sampling seed.
    """

    def __init__(
        self,
        masks: Sequence[np.ndarray],
        classes: Sequence[int],
        max_pixels: int = 200_000,
        seed: int = 0,
    ) -> None:
        self.positions = class_pixel_positions(masks, classes, max_pixels, seed)
        self._real: dict[int, list[np.ndarray]] = {}
        self._synthetic: dict[int, list[np.ndarray]] = {}

    def update(self, tile: int, real: np.ndarray, synthetic: Sequence[np.ndarray]) -> None:
        """Add tile ``tile`` (its index in ``masks``): the real ``(C, H, W)`` image and the
        synthetic samples generated from its mask (all pooled)."""
        where = self.positions[tile]
        for c, values in gather_pixels(real, where).items():
            self._real.setdefault(c, []).append(values)
        for sample in synthetic:
            for c, values in gather_pixels(sample, where).items():
                self._synthetic.setdefault(c, []).append(values)

    def compute(self) -> dict[int, np.ndarray]:
        """``{class: (C,) distances}`` in the units of the pixel values, for every class
        with pixels."""
        return {
            c: wasserstein_per_band(
                np.concatenate(self._real[c], 1), np.concatenate(self._synthetic[c], 1)
            )
            for c in sorted(self._real)
            if c in self._synthetic
        }


def standardised_mean(
    distances: dict[int, np.ndarray], std: np.ndarray, classes: Sequence[int]
) -> float | None:
    """Mean over ``classes`` (those with a distance) and bands of ``distance / std``.

    Returns:
        None if no class of ``classes`` has a distance.
    """
    per_class = [float(np.mean(distances[c] / std)) for c in classes if c in distances]
    return float(np.mean(per_class)) if per_class else None


def spectral_distances(
    real: Sequence[np.ndarray],
    synthetic: Sequence[Sequence[np.ndarray]],
    masks: Sequence[np.ndarray],
    classes: Sequence[int],
    max_pixels: int = 200_000,
    seed: int = 0,
) -> dict[int, np.ndarray]:
    """Per class, the per-band Wasserstein distance between real and synthetic pixels.

    Args:
        real: real ``(C, H, W)`` images, one per tile.
        synthetic: per tile, the ``K`` synthetic ``(C, H, W)`` samples generated from its mask
            (all ``K`` are pooled).
        masks: ``(H, W)`` masks, one per tile.
        classes: classes to compare (pass the scored classes; never the ignore index).
        max_pixels: pixels sampled per class.
        seed: sampling seed.

    Returns:
        ``{class: (C,) distances}`` in the units of the pixel values, for every class with
        pixels.
    """
    if not len(real) == len(synthetic) == len(masks):
        raise ValueError(
            f"need one mask and one sample list per real image, got {len(real)} "
            f"images, {len(synthetic)} sample lists and {len(masks)} masks"
        )
    distance = SpectralDistance(masks, classes, max_pixels, seed)
    for tile, (image, samples) in enumerate(zip(real, synthetic)):
        distance.update(tile, image, samples)
    return distance.compute()
