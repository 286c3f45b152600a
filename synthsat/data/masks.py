"""Land-cover masks read as class indices, whatever way they store them.

A mask raster is one of:

* **class values** — one band of integers, the class indices (or raw codes mapped by
  ``label_map``);
* **palette** — one band with a colour table (a palette-mode PNG, a paletted TIFF):
  read as its palette indices, as written, never as the colours they show; a note in
  the log says so. With a ``colour_map``, the palette's colours are mapped to classes
  instead (the colours are the classes, whatever index a tool gave them);
* **RGB colours** — three bands (or four, the fourth an opaque alpha band): each
  pixel's colour is mapped to its class through ``colour_map`` (RGB triplet -> class
  index).

Anything ambiguous is a :class:`~synthsat.data.errors.DataError` naming the file: an
RGB mask without a ``colour_map`` (the message lists its colours), colours the map
does not list (with their pixel counts), a ``colour_map`` while the mask holds one band
of class values, transparent RGBA pixels, other band counts, and ``label_map``
together with ``colour_map``.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
from rasterio.windows import Window

from synthsat.data.colours import (
    COLOUR_MAP_OPTION,
    MAX_LISTED,
    Colour,
    colour_counts,
    format_colour,
    format_counts,
    pack,
    parse_colour,
    parse_colour_map,
)
from synthsat.data.errors import DataError
from synthsat.data.raster_io import RasterInfo, info_of, open_raster

__all__ = [
    "MAX_LISTED",
    "PALETTE",
    "RGB",
    "STRIP_PIXELS",
    "VALUES",
    "Colour",
    "MaskFile",
    "MaskReader",
    "format_colour",
    "format_counts",
    "mask_kind",
    "parse_colour",
    "parse_colour_map",
]

log = logging.getLogger(__name__)

#: How a mask stores its classes (see the module docstring).
VALUES, PALETTE, RGB = "values", "palette", "rgb"
#: Pixels per strip when a whole mask is scanned.
STRIP_PIXELS = 1 << 20
_OPTION = COLOUR_MAP_OPTION


def check_whole_values(values: np.ndarray, where: str | Path) -> None:
    """Refuse a float mask holding values that are not whole numbers (2.5, NaN, inf):
    class indices are integers, and truncating them would train on the wrong classes.

    Raises:
        DataError: naming ``where``, the pixel count and a few of the values.
    """
    if not np.issubdtype(values.dtype, np.floating):
        return
    bad = ~np.isfinite(values) | (values != np.floor(values))
    if bad.any():
        found = ", ".join(f"{v:g}" for v in np.unique(values[bad])[:MAX_LISTED])
        raise DataError(
            f"{where}: mask values must be integers (class indices); {int(bad.sum())} "
            f"pixel(s) hold other values ({found}); fix the mask (e.g. round it, or save "
            "it with an integer dtype)"
        )


def _strips(height: int, width: int) -> list[Window]:
    rows = max(1, STRIP_PIXELS // max(width, 1))
    return [Window(0, r, width, min(rows, height - r)) for r in range(0, height, rows)]


def mask_kind(info: RasterInfo, colour_map: Mapping[Colour, int] | None) -> str:
    """How the mask ``info`` stores its classes: ``values``, ``palette`` or ``rgb``.

    Raises:
        DataError: naming the file: an RGB mask without ``colour_map`` (listing its
            colours), a ``colour_map`` for a mask of class values, a band count that is
            neither 1 nor 3 (or 4 with alpha), RGB colours that are not integers.
    """
    path, count = info.path, info.count
    if count == 1:
        if info.colorinterp[:1] == ("palette",):
            return PALETTE
        if colour_map:
            raise DataError(
                f"{path}: mask has 1 band of class values (no palette), but {_OPTION} "
                "is set, for masks of colours; remove colour_map, or save this mask in "
                "the colours it names"
            )
        return VALUES
    if not (count == 3 or (count == 4 and info.colorinterp[3:4] == ("alpha",))):
        raise DataError(
            f"{path}: mask has {count} bands; expected 1 (class values or palette indices) "
            f"or 3 (RGB colours mapped to classes by {_OPTION})"
        )
    if not np.issubdtype(np.dtype(info.dtype), np.integer):
        raise DataError(f"{path}: RGB mask of dtype {info.dtype}; colours must be integers")
    if not colour_map:
        with open_raster(path) as src:
            counts: Counter[Colour] = Counter()
            for window in _strips(src.height, src.width):
                counts += colour_counts(pack(src.read((1, 2, 3), window=window)))
        raise DataError(
            f"{path}: mask has {count} bands of RGB colours ({len(counts)} colour(s): "
            f"{format_counts(counts)}), but {_OPTION} does not say which class each colour "
            "is; set it (e.g. {'#rrggbb': class index, 'r,g,b': class index}) or save "
            "the mask as 1 band of class indices"
        )
    return RGB


class ClosedOnExit(ABC):
    """A ``with`` block of it (itself) calls its ``close()`` on leaving."""

    @abstractmethod
    def close(self) -> None:
        """Releases what the object holds."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class MaskFile(ClosedOnExit):
    """An open mask raster that reads class indices (see the module docstring).

    Args:
        path: the mask raster.
        label_map: raw value -> class index, for masks of values or palette indices.
        colour_map: RGB colour -> class index, for RGB masks and palette colours.
    """

    def __init__(
        self,
        path: str | Path,
        label_map: Mapping[int, int] | None = None,
        colour_map: Mapping[Colour, int] | None = None,
    ) -> None:
        self.path = Path(path)
        self._src = open_raster(self.path)
        try:
            info = info_of(self._src, self.path)
            self.kind = mask_kind(info, colour_map)
            self.palette: dict[int, Colour] = {}
            if self.kind == PALETTE:
                self.palette = {i: c[:3] for i, c in self._src.colormap(1).items()}
        except BaseException:
            self._src.close()
            raise
        self.height, self.width = self._src.height, self._src.width
        self._lut: np.ndarray | None = None
        self._keys = self._classes = np.zeros(0, np.int64)
        if self.kind == RGB and colour_map:
            order = sorted(colour_map)
            self._keys = pack(np.array(order, np.int64).T.reshape(3, -1))
            self._classes = np.array([colour_map[c] for c in order], np.int64)
        elif self.kind == PALETTE and colour_map:
            # palette index -> class of its colour; -1: unmapped (or no palette entry)
            self._lut = np.full(max(self.palette, default=0) + 1, -1, np.int64)
            for index, colour in self.palette.items():
                self._lut[index] = colour_map.get(colour, -1)
        elif label_map:
            self._lut = np.arange(65536, dtype=np.int64)
            for raw, cls in label_map.items():
                self._lut[raw] = cls
        self._mapped_palette = self.kind == PALETTE and bool(colour_map)
        #: Classes come from colours (an RGB mask, or a palette mask with a colour map).
        self.by_colour = self.kind == RGB or self._mapped_palette

    def note(self) -> str | None:
        """What a reader should know about how this mask is read (palette masks)."""
        if self.kind != PALETTE:
            return None
        if self._mapped_palette:
            return (
                f"{self.path}: palette mask: classes taken from its palette colours "
                f"through {_OPTION}, not from the palette indices"
            )
        return (
            f"{self.path}: palette mask: read as its palette indices, as written "
            f"({len(self.palette)} palette entries; the colours are not looked at). If "
            f"the colours are the classes, map them with {_OPTION}"
        )

    def decode(self, window: Window | None = None) -> tuple[np.ndarray, Counter[Colour]]:
        """Class values of ``window`` (the whole mask by default) and unmapped colours.

        Returns:
            ``(values, unmapped)``: (H, W) class values, -1 where a pixel's colour is
            not in ``colour_map``; the pixel count of each unmapped colour.
        """
        if self.kind == RGB:
            return self._decode_rgb(window)
        raw = self._src.read(1, window=window)
        check_whole_values(raw, self.path)
        lut = self._lut
        if lut is None or not np.issubdtype(raw.dtype, np.integer):
            return raw, Counter()  # whole floats: the value check names any outside the classes
        if self._mapped_palette:
            values = np.where(raw < len(lut), lut[np.minimum(raw, len(lut) - 1)], -1)
            unmapped = Counter[Colour]()
            for i, n in zip(*np.unique(raw[values < 0], return_counts=True), strict=True):
                if int(i) not in self.palette:
                    raise DataError(
                        f"{self.path}: {int(n)} pixel(s) hold palette index {int(i)}, which "
                        "has no palette entry (no colour to map)"
                    )
                unmapped[self.palette[int(i)]] += int(n)
            return values, unmapped
        if raw.min(initial=0) >= 0 and raw.max(initial=0) < len(lut):
            return lut[raw], Counter()
        inside = (raw >= 0) & (raw < len(lut))  # values beyond the map are kept as they are
        return np.where(inside, lut[np.clip(raw, 0, len(lut) - 1)], raw), Counter()

    def _decode_rgb(self, window: Window | None) -> tuple[np.ndarray, Counter[Colour]]:
        bands = self._src.read(window=window)
        if bands.shape[0] == 4:
            alpha = bands[3]
            transparent = int((alpha < np.iinfo(alpha.dtype).max).sum())
            if transparent:
                raise DataError(
                    f"{self.path}: {transparent} pixel(s) of the RGBA mask are (partly) "
                    "transparent, so their class is ambiguous; make the mask opaque, or "
                    "save it as RGB or as 1 band of class indices"
                )
        keys = pack(bands[:3])
        at = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        hit = self._keys[at] == keys
        values = np.where(hit, self._classes[at], -1)
        return values, colour_counts(keys[~hit]) if not hit.all() else Counter()

    def unmapped_error(self, unmapped: Counter[Colour]) -> DataError:
        """The error for pixels whose colours ``colour_map`` does not list."""
        what = "palette colour(s)" if self.kind == PALETTE else "colour(s)"
        return DataError(
            f"{self.path}: {sum(unmapped.values())} pixel(s) have {len(unmapped)} {what} "
            f"that {_OPTION} does not list: {format_counts(unmapped)}; add them to "
            "colour_map (a class index, or the ignore index to leave them out)"
        )

    def read(self, window: Window | None = None) -> np.ndarray:
        """Class values of ``window`` (the whole mask by default), (H, W).

        Raises:
            DataError: pixels whose colours ``colour_map`` does not list (with counts).
        """
        values, unmapped = self.decode(window)
        if unmapped:
            raise self.unmapped_error(unmapped)
        return values

    def close(self) -> None:
        """Close the raster."""
        self._src.close()


class MaskReader:
    """Reads mask rasters as class indices, with a ``label_map`` or a ``colour_map``.

    Args:
        label_map: raw mask value -> class index (masks of values or palette indices).
        colour_map: RGB colour -> class index (RGB masks; palette masks by colour). Keys
            may be ``(r, g, b)`` tuples, ``'#rrggbb'`` or ``'r,g,b'`` strings.

    Raises:
        DataError: both maps are given (which one a 1-band mask follows would be a
            guess), or ``colour_map`` does not parse (:func:`parse_colour_map`).
    """

    def __init__(
        self,
        label_map: Mapping[int, int] | None = None,
        colour_map: Mapping[Any, int] | None = None,
    ) -> None:
        self.label_map = {int(k): int(v) for k, v in label_map.items()} if label_map else None
        outside = [k for k in self.label_map or {} if not 0 <= k < 65536]
        if outside:
            raise DataError(
                f"data.source.label_map: raw value(s) {outside[:MAX_LISTED]} outside 0..65535"
            )
        self.colour_map = parse_colour_map(colour_map)
        if self.label_map and self.colour_map:
            raise DataError(
                "data.source: set label_map (masks of class values) or colour_map (masks "
                "of colours), not both"
            )

    def check_classes(self, num_classes: int, ignore_index: int | None) -> None:
        """Every class of ``colour_map`` is in 0..num_classes-1 or the ignore index."""
        allowed = set(range(num_classes)) | ({ignore_index} if ignore_index is not None else set())
        bad = [(c, v) for c, v in (self.colour_map or {}).items() if v not in allowed]
        if bad:
            listed = ", ".join(f"{format_colour(c)} -> {v}" for c, v in bad[:MAX_LISTED])
            raise DataError(
                f"{_OPTION} maps colours to classes outside the class list "
                f"0..{num_classes - 1}"
                f"{f' and ignore index {ignore_index}' if ignore_index is not None else ''}: "
                f"{listed}"
            )

    def open(self, path: str | Path) -> MaskFile:
        """The mask at ``path``, open for reading class values."""
        return MaskFile(path, self.label_map, self.colour_map)

    def read(self, path: str | Path) -> np.ndarray:
        """All class values of the mask at ``path``, (H, W); logs palette notes.

        Mapped masks are decoded strip by strip (memory: the result, plus a strip's
        worth), so unmapped colours are counted over the whole file.

        Raises:
            DataError: see :func:`mask_kind` and :meth:`MaskFile.read`.
        """
        with self.open(path) as mask:
            if note := mask.note():
                log.info(note)
            if not mask.by_colour and self.label_map is None:
                return mask.read()  # as stored
            out = np.empty((mask.height, mask.width), np.int32 if mask.by_colour else np.int64)
            unmapped: Counter[Colour] = Counter()
            for window in _strips(mask.height, mask.width):
                values, missing = mask.decode(window)
                unmapped += missing
                out[window.row_off : window.row_off + window.height] = values
            if unmapped:
                raise mask.unmapped_error(unmapped)
            return out

    def values(self, path: str | Path) -> np.ndarray:
        """The distinct class values of the mask at ``path``, read strip by strip.

        Memory stays flat in the mask's size; unmapped colours are counted over the
        whole file before the error. Logs palette notes.
        """
        found: set[int] = set()
        unmapped: Counter[Colour] = Counter()
        with self.open(path) as mask:
            if note := mask.note():
                log.info(note)
            for window in _strips(mask.height, mask.width):
                values, missing = mask.decode(window)
                unmapped += missing
                found.update(int(v) for v in _unique(values))
            if unmapped:
                raise mask.unmapped_error(unmapped)
        found.discard(-1)
        return np.array(sorted(found), dtype=np.int64)


def _unique(values: np.ndarray) -> np.ndarray:
    """Distinct values of an integer array (bincount for small unsigned types)."""
    if values.dtype in (np.uint8, np.uint16):
        return np.flatnonzero(np.bincount(values.ravel()))
    return np.unique(values)
