"""Atomic, streaming GeoTIFF output of synthetic tiles.

A tile is written to a temporary file next to its final path, strip by strip, and
renamed onto the final path only when every row is written — a file with the final
name is always complete (:mod:`synthsat.atomic`). Each output carries its provenance
(source mask, checkpoint, seed, style, ...) in the
:data:`~synthsat.data.synthetic_tiles.PROVENANCE_TAG` GeoTIFF tag, from which
:func:`~synthsat.data.synthetic_tiles.write_manifest` rebuilds the manifest.

The files read as GIS tools expect: photometric RGB for three bands in R, G, B order,
MINISBLACK otherwise (never an alpha band: a fourth band such as NIR is data), the
data config's band names as band descriptions, the ``rgb_bands`` tagged red, green and
blue, and an internal per-dataset mask (GDAL's nodata mask) that hides the pixels whose
mask is the ignore index. A mask rather than a nodata value: 8-bit outputs use all 256
values, so any nodata value would collide with real pixels (and the tile cache treats a
declared nodata value as unlabelled), while the mask leaves every pixel value as
synthesised. ``cog=True`` rewrites the finished tile as a Cloud-Optimised GeoTIFF
(GDAL's COG driver: internal tiles, overviews, mask overviews). Files get the usual
permissions (``0o666`` less the umask).
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import ColorInterp
from rasterio.transform import Affine
from rasterio.windows import Window

from synthsat.atomic import atomic_path, publish, remove_abandoned
from synthsat.data.raster_io import open_raster
from synthsat.data.synthetic_tiles import PROVENANCE_TAG
from synthsat.data.synthetic_tiles import read_provenance as read_provenance  # old import path
from synthsat.locks import is_this_host, owner_state, tag_owner

#: GDAL block cache for writing, in MiB: bounds memory whatever the tile size.
GDAL_CACHE_MB = 64


def is_rgb_order(count: int, rgb_bands: Sequence[int] | None) -> bool:
    """Three bands in red, green, blue order: written with photometric RGB."""
    return count == 3 and (rgb_bands is None or list(rgb_bands) == [0, 1, 2])


def colour_interpretation(count: int, rgb_bands: Sequence[int] | None = None) -> list[ColorInterp]:
    """Band colour interpretations: ``rgb_bands`` red, green, blue; the others undefined.

    Without ``rgb_bands`` the first band is gray (as TIFF's MINISBLACK says), unless the
    file has three bands (red, green, blue). Never alpha.
    """
    if rgb_bands is None:
        if count == 3:
            return [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
        return [ColorInterp.gray] + [ColorInterp.undefined] * (count - 1)
    interp = [ColorInterp.undefined] * count
    for band, colour in zip(rgb_bands, (ColorInterp.red, ColorInterp.green, ColorInterp.blue)):
        if 0 <= band < count:
            interp[band] = colour
    return interp


def output_profile(
    mask_path: str | Path,
    count: int,
    dtype: str,
    block_size: int = 256,
    compress: str = "deflate",
    rgb_bands: Sequence[int] | None = None,
    scale: float = 1.0,
) -> dict[str, Any]:
    """GeoTIFF profile of a synthetic tile on the pixel grid of ``mask_path``.

    CRS, transform, width and height are the mask's; the file is internally tiled
    and compressed (with a predictor suited to ``dtype``). Photometric RGB for three
    bands in R, G, B order (:func:`is_rgb_order`), else MINISBLACK (no alpha band).

    At a ``scale`` below 1 the grid is the mask's resampled as the tile cache does it:
    :func:`~synthsat.data.cache.scaled_shape` pixels, and for a georeferenced mask its
    transform scaled to that size (``transform @ Affine.scale(W / w, H / h)``: the same
    bounds, larger pixels); without a CRS the size alone says the scale.
    """
    with open_raster(mask_path) as src:
        crs, transform, width, height = src.crs, src.transform, src.width, src.height
    if scale != 1:
        from synthsat.data.cache import scaled_shape

        native_w, native_h = width, height
        height, width = scaled_shape(native_h, native_w, scale)
        if crs is not None:
            transform = transform @ Affine.scale(native_w / width, native_h / height)
    if block_size % 16:
        raise ValueError(f"GeoTIFF block size must be a multiple of 16, got {block_size}")
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": dtype,
        "crs": crs,
        "transform": transform,
        "tiled": True,
        "blockxsize": block_size,
        "blockysize": block_size,
        "interleave": "pixel",
        "photometric": "RGB" if is_rgb_order(count, rgb_bands) else "MINISBLACK",
        "BIGTIFF": "IF_SAFER",
    }
    if compress and compress.lower() != "none":
        profile["compress"] = compress
        if compress.lower() in ("deflate", "lzw", "zstd"):
            profile["predictor"] = 3 if np.dtype(dtype).kind == "f" else 2
    return profile


def to_raw(image: np.ndarray, mean: np.ndarray, std: np.ndarray, dtype: str) -> np.ndarray:
    """Normalised ``(C, H, W)`` float values -> raw values of ``dtype`` (rounded, clipped)."""
    raw = image * std[:, None, None] + mean[:, None, None]
    kind = np.dtype(dtype).kind
    if kind in "iu":
        info = np.iinfo(dtype)
        raw = np.clip(np.rint(raw), info.min, info.max)
    elif kind == "b":
        raw = raw > 0.5
    return raw.astype(dtype)


class AtomicTileWriter:
    """Write a tile in row order to a temporary GeoTIFF, rename it when complete.

    Rows arrive as normalised float strips of any height; they are denormalised,
    cast to the output dtype and buffered into strips of whole GeoTIFF blocks, so
    each block is written once and memory is bounded by one block row. Rows may come
    with their validity (``write(rows, valid)``, every call or none): invalid pixels
    are hidden by the file's per-dataset mask, their values are kept.

    Use as a context manager: on a clean exit the tile must be complete and is
    renamed onto ``path``; on an exception the temporary file is removed.

    Args:
        path: final output path.
        profile: rasterio profile (see :func:`output_profile`).
        mean: per-band mean of raw values (denormalisation).
        std: per-band standard deviation of raw values.
        provenance: JSON-able record stored in the file's :data:`PROVENANCE_TAG`.
        band_names: band descriptions (None: none).
        rgb_bands: the bands tagged red, green and blue (see
            :func:`colour_interpretation`).
        cog: rewrite the finished tile as a Cloud-Optimised GeoTIFF (with overviews).
    """

    def __init__(
        self,
        path: str | Path,
        profile: Mapping[str, Any],
        mean: Sequence[float],
        std: Sequence[float],
        provenance: Mapping[str, Any] | None = None,
        band_names: Sequence[str] | None = None,
        rgb_bands: Sequence[int] | None = None,
        cog: bool = False,
    ) -> None:
        self.path = Path(path)
        self.profile = dict(profile)
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        if len(self.mean) != self.profile["count"] or len(self.std) != self.profile["count"]:
            raise ValueError(
                f"{self.path}: {self.profile['count']} output bands but "
                f"{len(self.mean)} means and {len(self.std)} stds"
            )
        if band_names is not None and len(band_names) != self.profile["count"]:
            raise ValueError(
                f"{self.path}: {self.profile['count']} output bands but "
                f"{len(band_names)} band names {list(band_names)}"
            )
        self.provenance = dict(provenance or {})
        self.band_names = None if band_names is None else [str(n) for n in band_names]
        self.colorinterp = colour_interpretation(int(self.profile["count"]), rgb_bands)
        self.cog = cog
        self.height, self.width = int(self.profile["height"]), int(self.profile["width"])
        self.strip = int(self.profile.get("blockysize", 256))
        self._buffer = np.empty(
            (self.profile["count"], self.strip, self.width), dtype=self.profile["dtype"]
        )
        self._valid: np.ndarray | None = None  # validity rows, once write() is given them
        self._buffered = 0  # rows in the buffer
        self._written = 0  # rows written to the file
        self._tmp: Path | None = None
        self._env: rasterio.Env | None = None
        self._ds: Any = None

    @property
    def rows_done(self) -> int:
        """Rows received so far."""
        return self._written + self._buffered

    def __enter__(self) -> AtomicTileWriter:
        self._tmp = atomic_path(self.path)
        self._env = rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB, GDAL_TIFF_INTERNAL_MASK=True)
        self._env.__enter__()
        try:
            self._ds = rasterio.open(self._tmp, "w", **self.profile)
            self._ds.colorinterp = self.colorinterp
            for band, name in enumerate(self.band_names or [], start=1):
                self._ds.set_band_description(band, name)
        except BaseException:
            self._abort()
            raise
        return self

    def write(self, rows: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Append normalised float rows ``(C, h, width)`` below those written so far.

        Args:
            rows: the rows' normalised values.
            valid: ``(h, width)`` booleans, False where the pixel has no meaning (its
                mask is the ignore index); given with every call or with none.
        """
        if self._ds is None:
            raise RuntimeError(f"{self.path}: write() outside the writer's context")
        c, h, w = rows.shape
        if c != self.profile["count"] or w != self.width:
            raise ValueError(
                f"{self.path}: rows of shape {rows.shape} do not fit a "
                f"{self.profile['count']}-band tile of width {self.width}"
            )
        if self.rows_done + h > self.height:
            raise ValueError(
                f"{self.path}: {self.rows_done + h} rows written to a tile of height {self.height}"
            )
        if valid is not None and self._valid is None and self.rows_done == 0:
            self._valid = np.empty((self.strip, self.width), dtype=np.uint8)
        if (valid is None) != (self._valid is None) or (
            valid is not None and valid.shape != (h, w)
        ):
            raise ValueError(
                f"{self.path}: validity rows must come with every write() or with none, "
                f"shaped (rows, width) = {(h, w)}"
            )
        raw = to_raw(rows, self.mean, self.std, self.profile["dtype"])
        start = 0
        while start < h:
            take = min(self.strip - self._buffered, h - start)
            self._buffer[:, self._buffered : self._buffered + take] = raw[:, start : start + take]
            if self._valid is not None:
                assert valid is not None
                self._valid[self._buffered : self._buffered + take] = np.where(
                    valid[start : start + take], 255, 0
                )
            self._buffered += take
            start += take
            if self._buffered == self.strip:
                self._flush()

    def _flush(self) -> None:
        if self._buffered:
            window = Window(0, self._written, self.width, self._buffered)
            self._ds.write(self._buffer[:, : self._buffered], window=window)
            if self._valid is not None:
                self._ds.write_mask(self._valid[: self._buffered], window=window)
            self._written += self._buffered
            self._buffered = 0

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self._abort()
            return
        try:
            self._flush()
            if self._written != self.height:
                raise RuntimeError(
                    f"{self.path}: only {self._written} of {self.height} rows "
                    "were written; the tile is incomplete"
                )
            self._ds.update_tags(**{PROVENANCE_TAG: json.dumps(self.provenance)})
            self._ds.close()
            self._ds = None
            assert self._tmp is not None
            if self.cog:
                self._to_cog()
            publish(self._tmp, self.path)
            self._tmp = None
        finally:
            self._abort()

    def _to_cog(self) -> None:
        """Rewrite the finished temporary file as a Cloud-Optimised GeoTIFF (COG driver).

        Same pixels, mask, tags, band descriptions and colour interpretations; internal
        tiles of ``blockxsize``, overviews (and mask overviews) by averaging down to
        one block.
        """
        assert self._tmp is not None
        cog = atomic_path(self.path)
        options: dict[str, Any] = {
            "BLOCKSIZE": int(self.profile.get("blockxsize", 256)),
            "COMPRESS": str(self.profile.get("compress", "NONE")).upper(),
            "OVERVIEW_RESAMPLING": "AVERAGE",
            "BIGTIFF": "IF_SAFER",
        }
        if "predictor" in self.profile:
            options["PREDICTOR"] = "YES"
        try:
            rasterio.shutil.copy(self._tmp, cog, driver="COG", **options)
        except BaseException:
            cog.unlink(missing_ok=True)
            raise
        self._tmp.unlink(missing_ok=True)
        self._tmp = cog

    def _abort(self) -> None:
        """Close and remove the temporary file (no-op once renamed)."""
        if self._ds is not None:
            self._ds.close()
            self._ds = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None
        if self._env is not None:
            self._env.__exit__(None, None, None)
            self._env = None


def remove_stale_temps(out_dir: str | Path) -> list[Path]:
    """Delete temporary files left in ``out_dir`` by killed writers; returns them.

    Only files named by this project's writer (:func:`synthsat.atomic.atomic_path`:
    ``.<name>.pid<PID>@<host>.<random><suffix>.part``) whose writer is gone are removed
    (:func:`synthsat.atomic.remove_abandoned`): a live writer's — another synthesis on
    the same ``out``, or any writer on another host — is kept, and so is every other
    file (a user's ``.thesis.part``).
    """
    return remove_abandoned(out_dir)


def busy_owner(final: str | Path) -> tuple[int, str] | None:
    """``(pid, host tag)`` of another live process writing ``final`` right now (its
    temporary file of it; another host's counts as live); None if nobody."""
    final = Path(final)
    pattern = f".{glob.escape(final.stem)}.pid*{glob.escape(final.suffix)}.part"
    for path in sorted(final.parent.glob(pattern)):
        owner = tag_owner(path.name[len(final.stem) + 1 :])
        if owner is None or owner[0] == os.getpid() and is_this_host(owner[1]):
            continue
        if owner_state(*owner) != "dead":
            return owner
    return None


def busy_writer(final: str | Path) -> str | None:
    """Who else writes ``final`` right now: ``pid 4242 on box`` (:func:`busy_owner`);
    None if nobody."""
    owner = busy_owner(final)
    return None if owner is None else f"pid {owner[0]} on {owner[1]}"
