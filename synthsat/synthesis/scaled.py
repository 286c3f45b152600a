"""Synthesis at a scale: the mask and the style image on the grid the generator saw.

A generator trained at ``data.scale`` learnt from tiles the cache resampled (images by
area averaging, masks by the nearest pixel centre, :func:`~synthsat.data.cache.rescale`).
Synthesis at that scale reads each mask tile through :class:`ScaledMaskReader`, which
presents the class mask on that same grid (:func:`~synthsat.data.cache.scaled_shape`,
the nearest-centre rule), so the synthetic tile aligns pixel for pixel with the mask a
segmenter trains on at that scale; :class:`ScaledImage` presents the real image for
``style=encoder`` area-averaged to the same grid. Both keep the interface the
synthesisers use (``height``, ``width``, ``read(window)``), and hold the scaled tile in
memory (at a scale below 1 it is small); the native mask is read strip by strip.
At scale 1 the native readers are used unchanged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from synthsat.data.cache import nearest_indices, resample_image, scaled_shape
from synthsat.data.checks import fill_invalid, invalid_pixels
from synthsat.data.colours import Colour
from synthsat.data.masks import STRIP_PIXELS, ClosedOnExit, MaskFile, MaskReader
from synthsat.data.raster_io import raster_info, read_raster


def _window_slices(window: Window | None) -> tuple[slice, slice]:
    if window is None:
        return slice(None), slice(None)
    row, col = int(window.row_off), int(window.col_off)
    return slice(row, row + int(window.height)), slice(col, col + int(window.width))


class ScaledMaskFile(ClosedOnExit):
    """A mask's class indices on the grid of ``scale`` (nearest pixel centre), read like
    a :class:`~synthsat.data.masks.MaskFile`.

    Args:
        native: the open native mask (closed with this file).
        scale: the resampling factor in (0, 1].

    Raises:
        DataError: pixels of the native mask whose colours the colour map does not list.
    """

    def __init__(self, native: MaskFile, scale: float) -> None:
        self.path = native.path
        self.native = native
        self.kind = native.kind
        self.by_colour = False  # already class indices
        self.height, self.width = scaled_shape(native.height, native.width, scale)
        rows, cols = nearest_indices(native.height, native.width, scale)
        try:
            self.values = self._pick(native, rows, cols)
        except BaseException:
            native.close()
            raise

    def _pick(self, native: MaskFile, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The native classes at ``rows`` x ``cols``, decoded strip by strip."""
        values: np.ndarray | None = None
        unmapped: Counter[Colour] = Counter()
        step = max(1, STRIP_PIXELS // max(native.width, 1))
        for start in range(0, native.height, step):
            stop = min(start + step, native.height)
            picked = np.flatnonzero((rows >= start) & (rows < stop))
            strip, missing = native.decode(Window(0, start, native.width, stop - start))
            unmapped += missing
            if values is None:
                values = np.empty((self.height, self.width), strip.dtype)
            values[picked] = strip[rows[picked] - start][:, cols]
        if unmapped:
            raise native.unmapped_error(unmapped)
        assert values is not None
        return values

    def note(self) -> str | None:
        """The native mask's note (palette masks)."""
        return self.native.note()

    def decode(self, window: Window | None = None) -> tuple[np.ndarray, Counter[Colour]]:
        """Class values of ``window`` of the scaled grid, and no unmapped colours."""
        return self.read(window), Counter()

    def read(self, window: Window | None = None) -> np.ndarray:
        """Class values of ``window`` of the scaled grid (the whole mask by default)."""
        rows, cols = _window_slices(window)
        return self.values[rows, cols].copy()

    def close(self) -> None:
        """Close the native raster."""
        self.native.close()


class ScaledMaskReader(MaskReader):
    """A :class:`~synthsat.data.masks.MaskReader` whose masks open on the grid of
    ``scale`` (:class:`ScaledMaskFile`); at scale 1 it is a plain ``MaskReader``.

    :meth:`values` (the check of every mask value) reads the native mask: the scaled
    one holds a subset of its values.
    """

    def __init__(
        self,
        label_map: Mapping[int, int] | None = None,
        colour_map: Mapping[Any, int] | None = None,
        scale: float = 1.0,
    ) -> None:
        super().__init__(label_map, colour_map)
        if not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        self.scale = float(scale)

    def open(self, path: str | Path) -> MaskFile:  # type: ignore[override]
        """The mask at ``path`` on the scaled grid (native at scale 1)."""
        native = super().open(path)
        if self.scale == 1:
            return native
        return ScaledMaskFile(native, self.scale)  # type: ignore[return-value]

    def values(self, path: str | Path) -> np.ndarray:
        """The distinct class values of the native mask at ``path``."""
        return MaskReader(self.label_map, self.colour_map).values(path)


class ScaledImage:
    """A real image area-averaged to the grid of ``scale``, read like an open raster
    (``height``, ``width``, ``nodatavals``, ``read(window=...)``, ``close``).

    Pixels that are non-finite or nodata in the native image are filled with their
    band's mean before averaging (as the tile cache does) and read as NaN where the
    nearest native pixel was one, so the encoder's reader treats them as missing.
    """

    def __init__(self, path: str | Path, scale: float) -> None:
        raw = read_raster(path)
        _, h, w = raw.shape
        nonfinite, nodata = invalid_pixels(raw, raster_info(path).nodata)
        invalid = nonfinite | nodata
        shape = scaled_shape(h, w, scale)
        small = resample_image(fill_invalid(raw, invalid), shape).astype(np.float32)
        rows, cols = nearest_indices(h, w, scale)
        small[:, invalid[rows[:, None], cols[None, :]]] = np.nan
        self.data = small
        self.count = raw.shape[0]
        self.height, self.width = shape
        self.nodatavals: tuple[float | None, ...] = (None,) * self.count

    def read(self, window: Window | None = None) -> np.ndarray:
        """Values of ``window`` of the scaled grid, (C, h, w) float32."""
        rows, cols = _window_slices(window)
        return self.data[:, rows, cols].copy()

    def close(self) -> None:
        """Nothing to close (the values are in memory)."""
