"""Input checks: each bad input gives a clear error naming the file and the problem."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from rasterio.transform import Affine

from synthsat.data.colours import Colour
from synthsat.data.errors import DataError
from synthsat.data.masks import check_whole_values, mask_kind
from synthsat.data.raster_io import RasterInfo, raster_info
from synthsat.data.tiles import TilePair


def check_pair_headers(
    pair: TilePair,
    bands: int,
    bands_from: str = "the data config says",
    colour_map: Mapping[Colour, int] | None = None,
    same_grid: bool = True,
) -> tuple[RasterInfo, RasterInfo]:
    """Image and mask headers agree: same size, CRS and grid, expected band counts.

    Training (the tile cache) and synthesis (the mask and its style image) both check
    their inputs here.

    Args:
        pair: the image / mask pair.
        bands: expected image band count.
        bands_from: where ``bands`` comes from, for the message.
        colour_map: RGB colour -> class index of colour masks; without it a mask must
            have one band (class values or palette indices), see
            :func:`~synthsat.data.masks.mask_kind`.
        same_grid: True (real pairs): the image must lie on the mask's pixel grid.
            False (a synthetic image written at another scale): the image may have
            another size if it covers the mask's extent (:func:`check_same_extent`).
    """
    image, mask = raster_info(pair.image), raster_info(pair.mask)
    if same_grid and (image.width, image.height) != (mask.width, mask.height):
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
    if (image.width, image.height) != (mask.width, mask.height):
        check_same_extent(image, mask)
    elif image.crs is not None and not image.transform.almost_equals(mask.transform):
        raise DataError(
            f"{pair.image}: image and mask {pair.mask} are not aligned "
            f"(transforms {tuple(image.transform)[:6]} vs {tuple(mask.transform)[:6]})"
        )
    if image.count != bands:
        raise DataError(
            f"{pair.image}: image has {image.count} band(s) but {bands_from} bands={bands}"
        )
    mask_kind(mask, colour_map)
    return image, mask


def check_same_extent(image: RasterInfo, mask: RasterInfo) -> None:
    """A synthetic image on another pixel grid than its mask covers the mask's extent.

    Georeferenced: the image's transform is the mask's scaled to the image's size,
    ``mask.transform @ Affine.scale(mask.width / image.width, mask.height / image.height)``
    (same origin, same bounds; the synthesis writes exactly that). Without a CRS the size
    says the scale: width and height must shrink or grow alike (to within a pixel).

    Raises:
        DataError: naming both files, their sizes (and transforms).
    """
    sx, sy = mask.width / image.width, mask.height / image.height
    what = (
        f"{image.path}: synthetic image is {image.width}x{image.height} px but its mask "
        f"{mask.path} is {mask.width}x{mask.height} px"
    )
    if image.crs is not None:
        expected = mask.transform @ Affine.scale(sx, sy)
        if not image.transform.almost_equals(expected):
            raise DataError(
                f"{what}, and it does not cover the mask's extent (transform "
                f"{tuple(image.transform)[:6]}; the mask's grid at this size is "
                f"{tuple(expected)[:6]}); a synthetic tile on another grid must be its "
                "mask's grid scaled (same bounds)"
            )
    elif abs(image.width * mask.height - image.height * mask.width) > max(mask.width, mask.height):
        raise DataError(
            f"{what}: width and height are not scaled alike, so the image cannot cover "
            "the mask's extent"
        )


def invalid_pixels(
    image: np.ndarray, nodata: Sequence[float | None] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of a (C, H, W) image that hold no usable value.

    Returns:
        ``(nonfinite, nodata)`` boolean (H, W) maps: a NaN or infinite value in any band;
        the raster's nodata value in every band that declares one (GDAL's dataset mask:
        a pixel is nodata when all its bands are).
    """
    shape = image.shape[1:]
    if np.issubdtype(image.dtype, np.floating):
        nonfinite = ~np.isfinite(image).all(axis=0)
    else:
        nonfinite = np.zeros(shape, dtype=bool)
    declared = [(b, v) for b, v in enumerate(nodata) if v is not None and b < image.shape[0]]
    if not declared:
        return nonfinite, np.zeros(shape, dtype=bool)
    missing = np.ones(shape, dtype=bool)
    for band, value in declared:
        if np.isnan(value):
            missing &= np.isnan(image[band])
        else:
            missing &= image[band] == image.dtype.type(value)
    return nonfinite, missing & ~nonfinite


def fill_invalid(image: np.ndarray, invalid: np.ndarray) -> np.ndarray:
    """``image`` with the ``invalid`` pixels set to each band's mean of the valid ones.

    The fill keeps every value finite (0 after normalisation when the image is
    close to the data's mean); those pixels are unlabelled, so nothing learns from them.
    """
    if not invalid.any():
        return image
    out = np.array(image, copy=True)
    valid = ~invalid
    for band in range(out.shape[0]):
        values = out[band][valid]
        fill = float(values.astype(np.float64).mean()) if values.size else 0.0
        if np.issubdtype(out.dtype, np.integer):
            info = np.iinfo(out.dtype)
            fill = float(np.clip(np.rint(fill), info.min, info.max))
        out[band][invalid] = fill
    return out


def check_mask_values(
    mask: np.ndarray, num_classes: int, ignore_index: int | None, where: str
) -> None:
    """All mask values are class indices 0..num_classes-1 or the ignore index (whole
    numbers: a float mask of 2.5 is refused, not truncated)."""
    check_whole_values(mask, where)
    values = np.unique(mask)
    allowed = set(range(num_classes)) | ({ignore_index} if ignore_index is not None else set())
    bad = [int(v) for v in values if int(v) not in allowed]
    if bad:
        raise DataError(
            f"{where}: mask holds value(s) {bad[:10]} outside the class list 0..{num_classes - 1}"
            f"{f' and ignore index {ignore_index}' if ignore_index is not None else ''}; "
            "fix the mask or map them with data.source.label_map"
        )
