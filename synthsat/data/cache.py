"""A validated, memory-mapped cache of whole tiles.

Reading random patches through GDAL for every sample is slow (torchgeo's
``RandomGeoSampler`` gives tens of patches per second). Each tile is therefore
checked and decoded once into two ``.npy`` files (image C x H x W in its native
dtype, mask H x W as class indices: palette masks as their indices, colour masks
mapped by the colour map, see :mod:`synthsat.data.masks`) plus per-band statistics;
training patches are then slices of memory maps. The cache key covers the files'
paths, sizes and modification times and the label and colour maps, so editing a file
or a map invalidates its entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from synthsat.atomic import write_text, write_with
from synthsat.data.checks import (
    check_mask_values,
    check_pair_headers,
    fill_invalid,
    invalid_pixels,
)
from synthsat.data.errors import DataError
from synthsat.data.masks import MaskReader
from synthsat.data.raster_io import read_raster
from synthsat.data.tiles import TilePair

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: non-finite and nodata pixels unlabelled and filled
#: What to do with non-finite image pixels (``data.on_nonfinite``).
NONFINITE = ("error", "ignore")


@dataclass
class CachedTile:
    """A tile's arrays (memory-mapped) and per-band statistics of its labelled pixels."""

    name: str
    pair: TilePair
    image: np.ndarray  # (C, H, W), native dtype
    mask: np.ndarray  # (H, W), uint8 or uint16 class indices
    band_sum: np.ndarray  # (C,) float64
    band_sumsq: np.ndarray  # (C,) float64
    count: int

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self.mask.shape  # type: ignore[return-value]


def _file_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


class TileCache:
    """Checks and caches tiles under ``root``.

    Args:
        root: cache directory (created).
        bands: expected image band count.
        num_classes: number of classes (mask values 0..num_classes-1).
        ignore_index: mask value that is not a class (or None).
        label_map: raw mask value -> class index, applied before the value check.
        colour_map: RGB colour -> class index for colour masks (keys ``(r, g, b)``,
            ``'#rrggbb'`` or ``'r,g,b'``), applied before the value check; see
            :mod:`synthsat.data.masks`.
        on_nonfinite: image pixels holding NaN or infinite values are an ``error``
            (a :class:`DataError` naming the file and the count) or, with ``ignore``,
            unlabelled like nodata pixels: such pixels get the ignore index in the
            mask (so they are neither trained on nor scored), are left out of the band
            statistics and are filled with the tile's band means in the image.
            Pixels equal to the raster's declared nodata value are always unlabelled.
        scale: resampling factor in (0, 1]: tiles are cached at ``round(side * scale)``
            pixels, images by area averaging and masks by the nearest pixel centre
            (see :func:`rescale`); 1 keeps the native grid. Synthetic images written on
            another grid (a synthesis at another scale) are resampled to the same
            training grid (:meth:`load_synthetic`).
    """

    def __init__(
        self,
        root: str | Path,
        bands: int,
        num_classes: int,
        ignore_index: int | None,
        label_map: dict[int, int] | None = None,
        on_nonfinite: str = "error",
        colour_map: Mapping[Any, int] | None = None,
        scale: float = 1.0,
    ) -> None:
        if not 0 < scale <= 1:
            raise ValueError(f"data.scale must be in (0, 1], got {scale}")
        self.scale = float(scale)
        if on_nonfinite not in NONFINITE:
            raise ValueError(f"on_nonfinite must be one of {NONFINITE}, got '{on_nonfinite}'")
        self.masks = MaskReader(label_map, colour_map)
        self.masks.check_classes(num_classes, ignore_index)
        self.on_nonfinite = on_nonfinite
        self.root = Path(root)
        self.bands = bands
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.label_map = label_map

    def _entry(self, pair: TilePair) -> Path:
        key = json.dumps(
            [
                CACHE_VERSION,
                _file_key(pair.image),
                _file_key(pair.mask),
                sorted((self.label_map or {}).items()),
                sorted((self.masks.colour_map or {}).items()),
                self.bands,
                self.num_classes,
                self.ignore_index,
                self.on_nonfinite,
            ]
            + ([self.scale] if self.scale != 1 else [])
        )
        return self.root / f"{pair.name}-{hashlib.sha1(key.encode()).hexdigest()[:16]}"

    def load(self, pair: TilePair) -> CachedTile:
        """The cached tile, checking and decoding it first if needed (image and mask on
        one pixel grid)."""
        return self._load(pair, same_grid=True)

    def load_synthetic(self, pair: TilePair) -> CachedTile:
        """A synthetic image with its real mask, cached on the training grid.

        The synthetic image may lie on the mask's pixel grid (then exactly as
        :meth:`load`) or on another grid covering the same extent (a synthesis at
        another scale; see :func:`~synthsat.data.checks.check_same_extent`): the mask
        is resampled from its native grid by the nearest pixel centre, as for real
        tiles, and the image directly from its own grid to :func:`scaled_shape` of the
        mask by :func:`resample_image` (unchanged when it is already that size).
        """
        return self._load(pair, same_grid=False)

    def _load(self, pair: TilePair, same_grid: bool) -> CachedTile:
        for path in (pair.image, pair.mask):
            if not path.exists():
                raise DataError(f"{path}: file does not exist")
        entry = self._entry(pair)
        meta_path = entry / "meta.json"
        if not meta_path.exists():
            self._build(pair, entry, same_grid)
        meta = json.loads(meta_path.read_text())
        return CachedTile(
            name=pair.name,
            pair=pair,
            image=np.load(entry / "image.npy", mmap_mode="r"),
            mask=np.load(entry / "mask.npy", mmap_mode="r"),
            band_sum=np.asarray(meta["band_sum"], dtype=np.float64),
            band_sumsq=np.asarray(meta["band_sumsq"], dtype=np.float64),
            count=int(meta["count"]),
        )

    def _invalid(self, pair: TilePair, image: np.ndarray, nodata: tuple) -> np.ndarray:
        """Pixels of ``image`` to unlabel (non-finite, nodata), or raise per ``on_nonfinite``."""
        nonfinite, missing = invalid_pixels(image, nodata)
        n_bad, n_missing = int(nonfinite.sum()), int(missing.sum())
        total = image.shape[1] * image.shape[2]
        if n_bad and self.on_nonfinite == "error":
            raise DataError(
                f"{pair.image}: {n_bad} of {total} pixel(s) hold NaN or infinite values; "
                "fix the imagery, declare them as the raster's nodata, or set "
                "data.on_nonfinite=ignore to leave them out (unlabelled)"
            )
        invalid = nonfinite | missing
        if invalid.any():
            if self.ignore_index is None:
                raise DataError(
                    f"{pair.image}: {int(invalid.sum())} pixel(s) are nodata or non-finite, "
                    "but there is no ignore index to unlabel them; set data.ignore_index"
                )
            parts = [f"{n_bad} non-finite"] if n_bad else []
            parts += [f"{n_missing} nodata ({nodata[0]})"] if n_missing else []
            log.warning(
                "%s: %s of %d pixel(s) left out (ignore index %s in the mask, filled in the image)",
                pair.image,
                " and ".join(parts),
                total,
                self.ignore_index,
            )
        return invalid

    def _build(self, pair: TilePair, entry: Path, same_grid: bool = True) -> None:
        info, _ = check_pair_headers(
            pair, self.bands, colour_map=self.masks.colour_map, same_grid=same_grid
        )
        mask = self.masks.read(pair.mask)  # class indices (label / colour map applied)
        check_mask_values(mask, self.num_classes, self.ignore_index, str(pair.mask))
        image = read_raster(pair.image)
        invalid = self._invalid(pair, image, info.nodata)
        if image.shape[1:] != mask.shape:  # a synthetic image on another grid
            image, mask = self._regrid(image, mask, invalid)
        else:
            if invalid.any():
                mask = np.where(invalid, self.ignore_index, mask)
                image = fill_invalid(image, invalid)
            mask = mask.astype(np.uint8 if mask.max(initial=0) < 256 else np.uint16)
            if self.scale != 1:
                image, mask = rescale(image, mask, self.scale)
        labelled = mask != self.ignore_index if self.ignore_index is not None else None
        pixels = image[:, labelled] if labelled is not None else image.reshape(image.shape[0], -1)
        pixels = pixels.astype(np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            band_sum, band_sumsq = pixels.sum(1), (pixels**2).sum(1)
        check_finite_statistics(str(pair.image), band_sum, band_sumsq, pixels)
        meta = {
            "image": str(pair.image),
            "mask": str(pair.mask),
            "band_sum": band_sum.tolist(),
            "band_sumsq": band_sumsq.tolist(),
            "count": int(pixels.shape[1]),
        }
        entry.mkdir(parents=True, exist_ok=True)
        save_npy(entry / "image.npy", image)
        save_npy(entry / "mask.npy", mask)
        write_text(entry / "meta.json", json.dumps(meta))

    def _regrid(
        self, image: np.ndarray, mask: np.ndarray, invalid: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """An image on its own grid and its native mask, both on the mask's grid at
        :attr:`scale`: the mask by the nearest pixel centre (:func:`rescale_mask`), the
        image by :func:`resample_image`. Invalid image pixels are filled before, and
        every training pixel they reach is unlabelled."""
        shape = scaled_shape(*mask.shape, self.scale)
        mask = rescale_mask(mask, self.scale)
        if invalid.any():
            reach = resample_image(invalid[None].astype(np.float32), shape)[0] > 0
            mask = np.where(reach, self.ignore_index, mask)
            image = fill_invalid(image, invalid)
        mask = mask.astype(np.uint8 if mask.max(initial=0) < 256 else np.uint16)
        return resample_image(image, shape), mask


def check_finite_statistics(
    where: str, band_sum: np.ndarray, band_sumsq: np.ndarray, pixels: np.ndarray
) -> None:
    """Refuse a tile whose band sums overflow (finite pixels too large to square, e.g. a
    float64 ``1e200``): its mean and standard deviation would be inf or NaN, and so every
    normalised patch, the loss and the scores.

    Raises:
        DataError: naming ``where`` (the image file), the bands and their largest value.
    """
    bad = [b for b in range(len(band_sum)) if not np.isfinite([band_sum[b], band_sumsq[b]]).all()]
    if bad:
        largest = float(np.abs(pixels[bad[0]]).max())
        raise DataError(
            f"{where}: band statistics are not finite (band(s) {bad}; values up to "
            f"{largest:g} overflow their sum of squares); fix the imagery, or declare such "
            "values as the raster's nodata"
        )


def scaled_shape(height: int, width: int, scale: float) -> tuple[int, int]:
    """The (height, width) of a ``height`` x ``width`` grid resampled by ``scale``."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def rescale(image: np.ndarray, mask: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Resample a tile to :func:`scaled_shape`: the image by area averaging (in its dtype,
    rounded for integer types), the mask by the class of the nearest source pixel centre."""
    h, w = mask.shape
    pixels = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    small = F.interpolate(pixels, size=scaled_shape(h, w, scale), mode="area")[0].numpy()
    return _as_dtype(small, image.dtype), rescale_mask(mask, scale)


def rescale_mask(mask: np.ndarray, scale: float) -> np.ndarray:
    """A class mask on :func:`scaled_shape`: each output pixel takes the class of the
    source pixel nearest its centre (the mask rule of :func:`rescale`)."""
    rows, cols = nearest_indices(*mask.shape, scale)
    return np.ascontiguousarray(mask[rows[:, None], cols[None, :]])


def nearest_indices(height: int, width: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The source rows and columns whose pixels are nearest the centres of the
    :func:`scaled_shape` grid's rows and columns (the mask rule of :func:`rescale`)."""
    out_h, out_w = scaled_shape(height, width, scale)
    rows = np.minimum(((np.arange(out_h) + 0.5) * height / out_h).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(out_w) + 0.5) * width / out_w).astype(np.int64), width - 1)
    return rows, cols


def _as_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float ``values`` in ``dtype``: rounded and clipped to its range for integer types."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        values = np.clip(np.rint(values), info.min, info.max)
    return values.astype(dtype)


def resample_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A (C, h, w) image resampled to ``shape`` (height, width), in its dtype.

    Unchanged when it already has that size. An axis that shrinks is area-averaged (as
    :func:`rescale` does); one that grows is interpolated linearly between pixel centres
    (bilinear, ``align_corners=False``: the same half-pixel centres as the mask rule),
    which keeps an enlarged synthetic tile smooth instead of blocky. Integer images are
    rounded and clipped to their dtype.
    """
    _, h, w = image.shape
    out_h, out_w = shape
    if (h, w) == (out_h, out_w):
        return image
    pixels = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    if out_h <= h and out_w <= w:
        pixels = F.interpolate(pixels, size=shape, mode="area")
    elif out_h >= h and out_w >= w:
        pixels = F.interpolate(pixels, size=shape, mode="bilinear", align_corners=False)
    else:  # one axis shrinks, the other grows: each by its own rule, height first
        for size in ((out_h, w), (out_h, out_w)):
            grows = size[0] > pixels.shape[2] or size[1] > pixels.shape[3]
            mode = "bilinear" if grows else "area"
            extra = {"align_corners": False} if grows else {}
            pixels = F.interpolate(pixels, size=size, mode=mode, **extra)
    return _as_dtype(pixels[0].numpy(), image.dtype)


def save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` a C-contiguous copy of ``array`` to ``path`` atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # np.save(path) would append .npy to the temporary name
            np.save(f, np.ascontiguousarray(array))

    write_with(path, write)


def band_statistics(tiles: list[CachedTile]) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and standard deviation over the labelled pixels of ``tiles``."""
    total = sum(t.count for t in tiles)
    if total == 0:
        raise DataError(
            "cannot compute band statistics: the training tiles have no labelled "
            "pixels (every mask value is the ignore index); set data.mean/data.std"
        )
    s = sum(t.band_sum for t in tiles)
    sq = sum(t.band_sumsq for t in tiles)
    with np.errstate(over="ignore", invalid="ignore"):
        mean = s / total
        std = np.sqrt(np.maximum(sq / total - mean**2, 1e-12))
        mean, std = mean.astype(np.float32), std.astype(np.float32)
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
        names = ", ".join(str(t.pair.image) for t in tiles)
        raise DataError(
            f"band statistics of the training tiles are not finite (mean {mean.tolist()}, "
            f"std {std.tolist()}): pixel values too large for float32 in {names}; fix the "
            "imagery, or set data.mean/data.std"
        )
    return mean, std
