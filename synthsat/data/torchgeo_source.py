"""``TorchGeoSource``: any torchgeo dataset of imagery and masks as a tile source.

torchgeo reads rasters on the fly (reprojecting and mosaicking per query), which is too
slow for random training patches. This source therefore exports the dataset once into
GeoTIFF pairs (``images/<tile>.tif``, ``masks/<tile>.tif`` under ``root``) and is from
then on a :class:`~synthsat.data.sources.PairedRasterSource`: the datamodule checks and
caches every tile like any other, and training patches are memory-map slices.

* a :class:`~torchgeo.datasets.GeoDataset` yielding ``image`` and ``mask`` (e.g. two
  ``RasterDataset`` s intersected, ``image & mask``): one tile per footprint of its index
  (per file pair), or tiles of at most ``tile_size`` pixels cut from each footprint;
  written with the dataset's CRS and grid.
* a :class:`~torchgeo.datasets.NonGeoDataset` yielding ``image`` (C, H, W) and ``mask``
  (H, W): one un-georeferenced tile per sample.

The export is redone only when its fingerprint changes: the datasets' types, lengths,
CRS and resolution and the size and time of the files they read (a ``GeoDataset``'s
``files``, or every file under a ``NonGeoDataset``'s ``root``), and ``tile_size``.
Pixels are written losslessly: float pixels that all hold integers go into the smallest
integer type that holds them (torchgeo returns imagery as float32).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin
from torchgeo.datasets import GeoDataset, RasterDataset

from synthsat.atomic import write_text, write_with
from synthsat.data.errors import DataError
from synthsat.data.sources import SPLITS, PairedRasterSource

EXPORT_VERSION = 1
MANIFEST = "torchgeo.json"
#: Integer types tried, smallest first, for float pixels that all hold integers.
INTEGER_TYPES = ("uint8", "uint16", "int16", "int32")


def compact(array: np.ndarray) -> np.ndarray:
    """``array`` in the smallest integer type holding it exactly, when it holds only
    integers (float32 imagery of uint8 rasters becomes uint8 again); else unchanged.
    Booleans become uint8; float arrays with NaN, inf or fractions keep their type."""
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.size == 0:
        return array
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or not np.array_equal(array, np.round(array)):
            return array
    elif not np.issubdtype(array.dtype, np.integer):
        return array
    low, high = array.min(), array.max()
    for name in INTEGER_TYPES:
        info = np.iinfo(name)
        if info.min <= low and high <= info.max:
            return array.astype(name)
    return array


def write_geotiff(path: Path, array: np.ndarray, crs: Any = None, transform: Any = None) -> None:
    """Write a (C, H, W) or (H, W) array as a GeoTIFF, atomically; without ``crs`` and
    ``transform`` it is un-georeferenced (pixel grid only)."""
    bands = array[None] if array.ndim == 2 else array
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "count": bands.shape[0],
        "height": bands.shape[1],
        "width": bands.shape[2],
        "dtype": bands.dtype.name,
    }
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            # an un-georeferenced tile is meant: its grid is its pixels
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(tmp, "w", **profile) as dst:
                dst.write(bands)

    write_with(path, write)


def _numpy(value: Any) -> np.ndarray:
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def _files_of(dataset: Any) -> list[str]:
    """Files a dataset reads: a GeoDataset's ``files`` (and those of the datasets it
    combines), or every file under a NonGeoDataset's ``root``."""
    found: list[str] = []
    for child in getattr(dataset, "datasets", None) or []:
        found += _files_of(child)
    try:
        files = getattr(dataset, "files", None)
    except Exception:  # noqa: BLE001 - a dataset without file paths (e.g. in memory)
        files = None
    if files:
        found += [str(f) for f in files]
    root = getattr(dataset, "root", None)
    if not found and isinstance(root, str | os.PathLike) and Path(root).is_dir():
        found += [str(p) for p in Path(root).rglob("*") if p.is_file()]
    return sorted(set(found))


def _describe(dataset: Any) -> dict[str, Any]:
    """What the export fingerprint covers for one dataset."""
    stats = []
    for name in _files_of(dataset):
        try:
            st = os.stat(name)
            stats.append([name, st.st_size, st.st_mtime_ns])
        except OSError:
            stats.append([name, None, None])
    return {
        "type": f"{type(dataset).__module__}.{type(dataset).__qualname__}",
        "length": len(dataset),
        "crs": str(getattr(dataset, "crs", None)) if _is_geo(dataset) else None,
        "res": list(dataset.res) if _is_geo(dataset) else None,
        "files": stats,
    }


def _is_geo(dataset: Any) -> bool:
    return isinstance(dataset, GeoDataset)


def _tile_stem(row: Any, number: int) -> str:
    """A tile's name: the stem of the first file of its index row, else its number."""
    for key, value in row.items():
        if "filepath" in str(key) and isinstance(value, str | os.PathLike):
            return Path(value).stem
    return f"tile{number:04d}"


class TorchGeoSource(PairedRasterSource):
    """Tiles of a torchgeo dataset, exported once to GeoTIFF pairs under ``root``.

    Args:
        root: folder the tiles are written to (``images/``, ``masks/`` and
            ``torchgeo.json``); a folder that holds anything else is never written to.
        dataset: a ``GeoDataset`` yielding ``image`` and ``mask`` (e.g. ``image & mask``),
            a ``NonGeoDataset`` yielding them, or a mapping ``{"train": ..., "val": ...,
            "test": ...}`` of such datasets (its keys are the splits). Each may be a
            callable returning the dataset (Hydra's ``_partial_: true``), so nothing is
            read before the data is prepared.
        image: instead of ``dataset``: a ``GeoDataset`` (or callable) of imagery, ...
        mask: ... and one of masks: the source reads ``image & mask``.
        tile_size: ``GeoDataset`` s: cut each footprint into tiles of at most this many
            pixels a side (None: one tile per footprint).
        **rules: ``splits``, ``label_map``, ``colour_map`` of
            :class:`~synthsat.data.sources.FolderSource` (``splits`` names tiles: the
            stems of the image files, ``<stem>_<k>`` when cut, ``tile<n>`` / ``<n>``
            without files; not with a ``dataset`` mapping).
    """

    def __init__(
        self,
        root: str | Path,
        dataset: Any = None,
        image: Any = None,
        mask: Any = None,
        tile_size: int | None = None,
        **rules: Any,
    ) -> None:
        super().__init__(root, "images/*.tif", "masks/*.tif", **rules)
        if (dataset is None) == (image is None or mask is None):
            raise ValueError("TorchGeoSource needs either `dataset` or both `image` and `mask`")
        if isinstance(dataset, Mapping):
            unknown = sorted(set(dataset) - set(SPLITS))
            if unknown:
                raise ValueError(f"dataset splits {unknown} unknown, expected {SPLITS}")
            if rules.get("splits") is not None:
                raise ValueError("give the splits either as a `dataset` mapping or as `splits`")
        if tile_size is not None and tile_size < 1:
            raise ValueError(f"tile_size must be a positive pixel count, got {tile_size}")
        self.dataset, self.image, self.mask = dataset, image, mask
        self.tile_size = tile_size
        self._exported = False

    # -- the datasets ------------------------------------------------------------------
    @staticmethod
    def _build(value: Any) -> Any:
        """A dataset, from itself or from a callable returning it."""
        from torch.utils.data import Dataset

        return value if isinstance(value, Dataset) or not callable(value) else value()

    def datasets(self) -> dict[str, Any]:
        """Split (or ``""`` for all) -> the torchgeo dataset.

        Raises:
            DataError: torchgeo finds no data where a dataset points.
        """
        from torchgeo.datasets import DatasetNotFoundError

        try:
            if self.dataset is None:
                return {"": self._build(self.image) & self._build(self.mask)}
            if isinstance(self.dataset, Mapping):
                return {str(k): self._build(v) for k, v in self.dataset.items()}
            return {"": self._build(self.dataset)}
        except DatasetNotFoundError as err:
            raise DataError(
                f"{self.root}: cannot export the torchgeo dataset: {err} (the toy world of "
                "data=torchgeo is generated by any data=toyworld job)"
            ) from err

    # -- export ------------------------------------------------------------------------
    def _fingerprint(self, datasets: dict[str, Any]) -> str:
        key = {
            "version": EXPORT_VERSION,
            "tile_size": self.tile_size,
            "datasets": {split: _describe(ds) for split, ds in datasets.items()},
        }
        return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()

    def _check_writable(self) -> None:
        foreign = self.root.exists() and not (self.root / MANIFEST).exists()
        if foreign and (not self.root.is_dir() or any(self.root.iterdir())):
            raise DataError(
                f"{self.root}: holds files that are not a torchgeo export "
                f"(no {MANIFEST}); TorchGeoSource writes its tiles only into an empty "
                "or new folder (data.source.root)"
            )

    def prepare(self) -> None:
        """Export the dataset(s) unless ``root`` holds an export with this fingerprint."""
        if self._exported:
            return
        datasets = self.datasets()
        fingerprint = self._fingerprint(datasets)
        manifest = self.root / MANIFEST
        if manifest.exists() and json.loads(manifest.read_text()).get("fingerprint") == fingerprint:
            self._exported = True
            return
        self._check_writable()
        for sub in ("images", "masks"):
            shutil.rmtree(self.root / sub, ignore_errors=True)
        manifest.unlink(missing_ok=True)
        names: dict[str, list[str]] = {}
        for split, ds in datasets.items():
            prefix = f"{split}_" if split else ""
            tiles = self._geo_tiles(ds) if _is_geo(ds) else self._nongeo_tiles(ds)
            for stem, sample, crs, transform in tiles:
                name = f"{prefix}{stem}"
                self._write(name, sample, crs, transform)
                names.setdefault(split, []).append(name)
        if not names:
            raise DataError(f"{self.root}: the torchgeo dataset gave no tiles")
        record = {"fingerprint": fingerprint, "tiles": names}
        write_text(manifest, json.dumps(record, indent=1))
        self._exported = True

    def _write(self, name: str, sample: Mapping[str, Any], crs: Any, transform: Any) -> None:
        if "image" not in sample or "mask" not in sample:
            raise DataError(
                f"{self.root}: torchgeo sample '{name}' has keys {sorted(sample)}; "
                "a TorchGeoSource needs 'image' and 'mask'"
            )
        image = _numpy(sample["image"])
        mask = _numpy(sample["mask"])
        image = image[None] if image.ndim == 2 else image
        mask = mask[0] if mask.ndim == 3 and mask.shape[0] == 1 else mask
        if image.ndim != 3 or mask.ndim != 2 or image.shape[1:] != mask.shape:
            raise DataError(
                f"{self.root}: torchgeo sample '{name}' has image {image.shape} and mask "
                f"{mask.shape}; expected (C, H, W) and (H, W)"
            )
        write_geotiff(self.root / "images" / f"{name}.tif", compact(image), crs, transform)
        write_geotiff(self.root / "masks" / f"{name}.tif", compact(mask), crs, transform)

    def _geo_tiles(self, ds: Any) -> Iterator[tuple[str, dict[str, Any], Any, Any]]:
        """Whole footprints of the index (or cuts of ``tile_size``) on the dataset's grid."""
        xres, yres = ds.res
        seen: dict[str, int] = {}
        for number, (interval, row) in enumerate(ds.index.iterrows()):
            xmin, ymin, xmax, ymax = row.geometry.bounds
            width = max(1, round((xmax - xmin) / xres))
            height = max(1, round((ymax - ymin) / yres))
            step = self.tile_size or max(width, height)
            stem = _tile_stem(row, number)
            count = seen.get(stem, 0)
            seen[stem] = count + 1
            base = stem if count == 0 else f"{stem}_{count}"
            cuts = math.ceil(height / step) * math.ceil(width / step)
            k = 0
            for top in range(0, height, step):
                for left in range(0, width, step):
                    x0, y1 = xmin + left * xres, ymax - top * yres
                    x1 = xmin + min(left + step, width) * xres
                    y0 = ymax - min(top + step, height) * yres
                    query = (
                        slice(x0, x1, xres),
                        slice(y0, y1, yres),
                        slice(interval.left, interval.right),
                    )
                    name = base if cuts == 1 else f"{base}_{k:03d}"
                    k += 1
                    yield name, ds[query], ds.crs, from_origin(x0, y1, xres, yres)

    @staticmethod
    def _nongeo_tiles(ds: Any) -> Iterator[tuple[str, dict[str, Any], Any, Any]]:
        digits = max(1, len(str(len(ds) - 1)))
        for i in range(len(ds)):
            yield f"{i:0{digits}d}", ds[i], None, None

    # -- the tiles ---------------------------------------------------------------------
    def all_pairs(self) -> list[Any]:
        self.prepare()
        return super().all_pairs()

    def split_names(self) -> dict[str, list[str]]:
        self.prepare()
        if isinstance(self.dataset, Mapping):
            return {s: [s] for s in self.dataset}  # tiles are named <split>_<stem>
        return super().split_names()

    def describe(self) -> str:
        return f"{self.root} (torchgeo export)"


class MaskRasters(RasterDataset):
    """A torchgeo ``RasterDataset`` of masks: every file under ``paths`` read as ``mask``
    (class indices, nearest resampling). For ``image & mask`` in a config, beside
    ``RasterDataset`` itself, which reads imagery."""

    is_image = False


__all__ = ["MaskRasters", "TorchGeoSource", "compact", "write_geotiff"]
