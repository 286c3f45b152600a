"""Reading and writing rasters: GeoTIFF, PNG, JPEG and anything else GDAL reads."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from synthsat.data.errors import DataError


@dataclass(frozen=True)
class RasterInfo:
    """Header of a raster file: shape, band count, dtype and georeference (if any)."""

    path: Path
    width: int
    height: int
    count: int
    dtype: str
    crs: rasterio.crs.CRS | None
    transform: rasterio.Affine
    nodata: tuple[float | None, ...] = ()  # per band; None where the band declares none
    colorinterp: tuple[str, ...] = ()  # per band: "gray", "palette", "red", ..., "alpha"


def open_raster(path: str | Path) -> rasterio.DatasetReader:
    """Open ``path`` for reading; an unreadable file raises :class:`DataError`."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except rasterio.RasterioIOError as err:
        raise DataError(f"{path}: cannot read raster ({err})") from err


#: GeoTIFF tag of an image that holds no imagery, only a stand-in that makes a folder of
#: masks a data folder (the layouts job's class-colour paintings): nothing may learn from
#: it or encode it.
PLACEHOLDER_TAG = "SYNTHSAT_PLACEHOLDER"


def refuse_placeholder(path: str | Path, needs: str) -> None:
    """Raise :class:`DataError` when the image ``path`` is a placeholder (it carries
    :data:`PLACEHOLDER_TAG`): ``needs`` says what wanted real imagery from it."""
    with open_raster(path) as src:
        made_by = src.tags().get(PLACEHOLDER_TAG)
    if made_by is not None:
        raise DataError(
            f"{path}: a placeholder image ({made_by}), not imagery, but {needs} needs "
            "real imagery; render layouts with style=random, and take textures or colours "
            "from the real data"
        )


def raster_info(path: str | Path) -> RasterInfo:
    """Read only the header of ``path``."""
    with open_raster(path) as src:
        return info_of(src, path)


def info_of(src: rasterio.DatasetReader, path: str | Path) -> RasterInfo:
    """The header of an open raster ``src`` read from ``path``."""
    return RasterInfo(
        Path(path),
        src.width,
        src.height,
        src.count,
        src.dtypes[0],
        src.crs,
        src.transform,
        tuple(src.nodatavals),
        tuple(c.name for c in src.colorinterp),
    )


def read_raster(path: str | Path, window: Window | None = None) -> np.ndarray:
    """Read all bands of ``path`` (optionally a window) as a (C, H, W) array."""
    with open_raster(path) as src:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                return src.read(window=window)
        except rasterio.RasterioIOError as err:
            raise DataError(f"{path}: cannot read raster data ({err})") from err
