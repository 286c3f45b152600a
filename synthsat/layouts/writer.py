"""A folder of layouts that the data readers take as data (``data=rasters``).

::

    <out>/masks/<name>.tif    1 band of class indices (uint8 / uint16), deflate, on the
                              training masks' CRS and pixel size, east of their extent
    <out>/images/<name>.tif   the layout in its classes' mean training colours, in the
                              training images' bands and dtype: a placeholder that makes
                              <out> an image / mask data folder (synthesize replaces it;
                              tagged, so that no encoder or control reads it as imagery)
    <out>/splits.json         every layout in ``train`` (no val / test)
    <out>/layouts.json        the run's settings and what made each layout

Every file is written atomically; masks of an earlier run of more layouts are removed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.transform import Affine

from synthsat.atomic import write_text, write_with
from synthsat.data.errors import DataError
from synthsat.data.raster_io import PLACEHOLDER_TAG, raster_info, read_raster
from synthsat.layouts.training import TrainingMasks

#: The record of a layouts folder.
RECORD = "layouts.json"


def check_out(out: Path) -> None:
    """Refuse an ``out`` that holds images or masks of something else than a layouts run.

    Raises:
        DataError: ``out/images`` or ``out/masks`` exist without ``out/layouts.json``.
    """
    if (out / RECORD).is_file():
        return
    taken = [sub for sub in ("images", "masks") if (out / sub).exists()]
    if taken:
        raise DataError(
            f"out={out} holds {' and '.join(f'{s}/' for s in taken)} but no {RECORD}: not "
            "a layouts folder, so nothing there is overwritten; choose a new or empty folder"
        )


def class_colours(training: TrainingMasks) -> tuple[np.ndarray, str]:
    """Each class's mean colour in the training images, (classes, bands) float64, and
    the images' dtype (classes without pixels: the mean of all labelled pixels)."""
    sums: np.ndarray | None = None
    counts = np.zeros(training.num_classes, np.int64)
    dtype = "uint8"
    for mask, path in zip(training.masks, training.image_paths, strict=True):
        image = read_raster(path)
        dtype = str(image.dtype)
        if sums is None:
            sums = np.zeros((training.num_classes, image.shape[0]), np.float64)
        labels = mask.astype(np.int64).ravel()
        keep = labels < training.num_classes
        if training.ignore_index is not None:
            keep &= labels != training.ignore_index
        for band in range(image.shape[0]):
            values = image[band].ravel()[keep].astype(np.float64)
            sums[:, band] += np.bincount(labels[keep], values, minlength=training.num_classes)
        counts += np.bincount(labels[keep], minlength=training.num_classes)
    assert sums is not None
    overall = sums.sum(0) / max(int(counts.sum()), 1)
    means = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], overall)
    return means, dtype


def layout_transforms(
    template: Path, others: Sequence[Path], shape: tuple[int, int], n: int
) -> tuple[Any, list[Affine]]:
    """The CRS and each layout's transform: the ``template`` mask's CRS and pixel grid,
    the layouts in a row east of the extent of ``others`` (one layout width apart), so
    they overlap no real tile; non-georeferenced data: no CRS, the identity."""
    info = raster_info(template)
    if info.crs is None:
        return None, [Affine.identity()] * n
    inverse = ~info.transform
    east = 0.0
    for path in others:
        other = raster_info(path)
        for corner in ((other.width, 0), (other.width, other.height)):
            col, _ = inverse @ (other.transform @ corner)
            east = max(east, col)
    step = shape[1] * 2
    start = int(np.ceil(east)) + shape[1]
    return info.crs, [info.transform @ Affine.translation(start + i * step, 0) for i in range(n)]


def _write_raster(
    path: Path, array: np.ndarray, profile: Mapping[str, Any], tags: Mapping[str, str] | None = None
) -> None:
    def write(tmp: Path) -> None:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(array)
            if tags:
                dst.update_tags(**tags)

    path.parent.mkdir(parents=True, exist_ok=True)
    write_with(path, write)


def write_layouts(
    out: Path,
    names: Sequence[str],
    layouts: Sequence[np.ndarray],
    training: TrainingMasks,
    record: Mapping[str, Any],
    infos: Sequence[Mapping[str, Any]],
    extent: Sequence[Path] = (),
) -> Path:
    """Write ``layouts`` (and their placeholder images, splits and record) into ``out``,
    placed east of the masks of ``extent`` (every tile of the data; default: the
    training masks).

    Returns:
        the record's path (``out/layouts.json``).
    """
    check_out(out)
    shape = layouts[0].shape
    crs, transforms = layout_transforms(
        training.mask_paths[0], list(extent) or training.mask_paths, shape, len(layouts)
    )
    colours, image_dtype = class_colours(training)
    for sub in ("images", "masks"):
        for stale in sorted((out / sub).glob("*.tif")):
            if stale.stem not in set(names):
                stale.unlink()
    for name, mask, transform in zip(names, layouts, transforms, strict=True):
        base = {
            "driver": "GTiff",
            "height": mask.shape[0],
            "width": mask.shape[1],
            "crs": crs,
            "transform": transform,
            "compress": "deflate",
        }
        _write_raster(
            out / "masks" / f"{name}.tif",
            mask[None],
            {**base, "count": 1, "dtype": str(mask.dtype)},
        )
        labels = np.minimum(mask.astype(np.int64), training.num_classes - 1)
        image = np.moveaxis(colours[labels], -1, 0)
        if training.ignore_index is not None:
            image[:, mask == training.ignore_index] = 0
        if np.dtype(image_dtype).kind in "iu":
            info = np.iinfo(image_dtype)
            image = np.clip(np.rint(image), info.min, info.max)
        image = image.astype(image_dtype)
        _write_raster(
            out / "images" / f"{name}.tif",
            image,
            {**base, "count": image.shape[0], "dtype": image_dtype, "photometric": "minisblack"},
            tags={PLACEHOLDER_TAG: "the layouts job's class colours"},
        )
    splits = {"train": list(names), "val": [], "test": []}
    write_text(out / "splits.json", json.dumps(splits, indent=2) + "\n")
    full = {**record, "layouts": [{"name": n, **i} for n, i in zip(names, infos, strict=True)]}
    return write_text(out / RECORD, json.dumps(full, indent=2) + "\n")
