"""Input checks: each bad input gives a clear error naming the file and the problem."""

from __future__ import annotations

import numpy as np

from synthsat.data.errors import DataError
from synthsat.data.raster_io import RasterInfo, raster_info
from synthsat.data.tiles import TilePair


def check_pair_headers(pair: TilePair, bands: int) -> tuple[RasterInfo, RasterInfo]:
    """Image and mask headers agree: same size and CRS, expected band counts."""
    image, mask = raster_info(pair.image), raster_info(pair.mask)
    if (image.width, image.height) != (mask.width, mask.height):
        raise DataError(
            f"{pair.image}: image is {image.width}x{image.height} px but its mask "
            f"{pair.mask} is {mask.width}x{mask.height} px; they must share one pixel grid"
        )
    if (image.crs is None) != (mask.crs is None) or (
        image.crs is not None and image.crs != mask.crs
    ):
        raise DataError(
            f"{pair.image}: image CRS {image.crs} differs from mask CRS {mask.crs} "
            f"({pair.mask}); reproject one onto the other's grid"
        )
    if image.crs is not None and not image.transform.almost_equals(mask.transform):
        raise DataError(
            f"{pair.image}: image and mask {pair.mask} are not aligned "
            f"(transforms {tuple(image.transform)[:6]} vs {tuple(mask.transform)[:6]})"
        )
    if image.count != bands:
        raise DataError(
            f"{pair.image}: image has {image.count} band(s) but the data config says bands={bands}"
        )
    if mask.count != 1:
        raise DataError(f"{pair.mask}: mask has {mask.count} bands, expected 1 (class index)")
    return image, mask


def label_lut(label_map: dict[int, int] | None) -> np.ndarray | None:
    """A 65536-entry look-up table for ``label_map`` (unmapped values kept), or None."""
    if not label_map:
        return None
    lut = np.arange(65536, dtype=np.int64)
    for raw, cls in label_map.items():
        lut[raw] = cls
    return lut


def check_mask_values(
    mask: np.ndarray, num_classes: int, ignore_index: int | None, where: str
) -> None:
    """All mask values are class indices 0..num_classes-1 or the ignore index."""
    values = np.unique(mask)
    allowed = set(range(num_classes)) | ({ignore_index} if ignore_index is not None else set())
    bad = [int(v) for v in values if int(v) not in allowed]
    if bad:
        raise DataError(
            f"{where}: mask holds value(s) {bad[:10]} outside the class list 0..{num_classes - 1}"
            f"{f' and ignore index {ignore_index}' if ignore_index is not None else ''}; "
            "fix the mask or map them with data.source.label_map"
        )
