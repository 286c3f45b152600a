"""Class-colour control: each mask class painted in its mean colour plus pixel noise.

The trivial control of a synthetic-data study: an image that carries the mask's layout
and each class's average spectrum, and nothing a generator could have learned (no
texture, no context, no edges beyond the mask's). A segmenter trained on it learns the
layout and the colours; a learned generator must beat it to show that its imagery adds
more.

* :class:`ClassColours` — per class the mean and standard deviation of every band over
  the training tiles' pixels of that class (:meth:`ClassColours.measure`).
* :func:`colour_rows` — one mask painted row band by row band: each pixel its class's
  mean plus independent Gaussian noise of its class's per-band std, drawn from the
  (tile, sample) seed.

:class:`~synthsat.synthesis.classtexture.ClassTextureSynthesizer` writes the tiles
(``method=classcolour``), as for the texture control.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from synthsat.synthesis.texture_bank import class_labels

#: Mask rows painted at a time.
ROWS_PER_BAND = 256


@dataclass(frozen=True)
class ClassColours:
    """Per-class band statistics of real imagery, in raw image values.

    Attributes:
        mean: ``(num_classes + 1, bands)`` mean of each band per class; the last row is
            that of all labelled pixels (painted where the mask is unlabelled, and for a
            class without pixels).
        std: ``(num_classes + 1, bands)`` standard deviation (``ddof=0``), likewise.
        dtype: the real imagery's dtype (the outputs' when ``dtype`` is not set).
        ignore_index: mask value of unlabelled pixels.
    """

    mean: np.ndarray
    std: np.ndarray
    dtype: str = "float32"
    ignore_index: int | None = None

    @property
    def num_classes(self) -> int:
        """Classes of the masks."""
        return int(self.mean.shape[0]) - 1

    @property
    def bands(self) -> int:
        """Bands of the painted images."""
        return int(self.mean.shape[1])

    @classmethod
    def measure(
        cls,
        tiles: Sequence[tuple[np.ndarray, np.ndarray]],
        num_classes: int,
        ignore_index: int | None,
    ) -> ClassColours:
        """Mean and std of every band per class over ``tiles`` (``(image (C, H, W),
        mask (H, W))`` pairs of raw values and class indices); a class without pixels
        takes the statistics of all labelled pixels.

        Raises:
            ValueError: if no tile has a labelled pixel.
        """
        bands = tiles[0][0].shape[0]
        bins = num_classes + 1
        count = np.zeros(bins)
        total = np.zeros((bins, bands))
        squares = np.zeros((bins, bands))
        for image, mask in tiles:
            labels = class_labels(np.asarray(mask), num_classes, ignore_index).ravel()
            count += np.bincount(labels, minlength=bins)
            for c in range(bands):
                x = np.asarray(image[c], dtype=np.float64).ravel()
                total[:, c] += np.bincount(labels, weights=x, minlength=bins)
                squares[:, c] += np.bincount(labels, weights=x * x, minlength=bins)
        labelled = count[:num_classes].sum()
        if labelled == 0:
            raise ValueError("no labelled pixel in the tiles to measure class colours on")
        count[num_classes] = labelled
        total[num_classes] = total[:num_classes].sum(0)
        squares[num_classes] = squares[:num_classes].sum(0)
        empty = count == 0
        count[empty], total[empty], squares[empty] = labelled, total[-1], squares[-1]
        mean = total / count[:, None]
        std = np.sqrt(np.maximum(squares / count[:, None] - mean * mean, 0.0))
        dtype = str(tiles[0][0].dtype)
        return cls(mean.astype(np.float32), std.astype(np.float32), dtype, ignore_index)

    def rows(
        self, read: Callable[[int, int], np.ndarray], height: int, width: int, seed: int
    ) -> Iterator[np.ndarray]:
        """The painted tile, row band by row band (see :func:`colour_rows`)."""
        return colour_rows(read, height, width, self, seed, self.ignore_index)


def colour_rows(
    read: Callable[[int, int], np.ndarray],
    height: int,
    width: int,
    colours: ClassColours,
    seed: int,
    ignore_index: int | None = None,
) -> Iterator[np.ndarray]:
    """Paint a ``height x width`` mask, row band by row band.

    Args:
        read: ``read(row, h)`` -> mask rows ``[row, row + h)``, ``(h, width)``.
        height: mask height.
        width: mask width.
        colours: the class statistics.
        seed: seed of the noise (one per tile and sample).
        ignore_index: mask value of unlabelled pixels (any value outside the classes is
            painted as unlabelled too).

    Yields:
        float32 strips ``(C, h, width)`` of raw image values, top to bottom.
    """
    rng = np.random.default_rng(seed)
    k = colours.num_classes
    for row in range(0, height, ROWS_PER_BAND):
        h = min(ROWS_PER_BAND, height - row)
        labels = class_labels(read(row, h), k, ignore_index)
        noise = rng.standard_normal((colours.bands, h, width), dtype=np.float32)
        mean = colours.mean[labels].transpose(2, 0, 1)
        std = colours.std[labels].transpose(2, 0, 1)
        yield (mean + std * noise).astype(np.float32)
