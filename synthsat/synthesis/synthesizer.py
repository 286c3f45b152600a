"""What every tile synthesiser shares: the protocol, checks, writing, records and runs.

A synthesiser turns a :class:`~synthsat.synthesis.requests.TileRequest` into rows of
image values (:meth:`Synthesizer.stream`); everything around that is the same for
every method and lives here, in :class:`SynthesizerBase`:

* :meth:`~SynthesizerBase.check` — the request's mask header and every mask value
  (and, through a hook, what the method needs of the real image);
* :meth:`~SynthesizerBase.write` — the rows, atomically, to ``request.output`` with
  :func:`write_tile` (nodata mask from the ignore index, provenance tag);
* :meth:`~SynthesizerBase.record` — the provenance: the request, the method's
  settings, then the run's extra fields;
* :meth:`~SynthesizerBase.run` — check, stream and write one request (skipping one
  whose output exists).

The GAN path (:class:`~synthsat.synthesis.gan_synthesizer.TileSynthesizer`) and the
class-texture control
(:class:`~synthsat.synthesis.classtexture.ClassTextureSynthesizer`) are the two.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from rasterio.windows import Window

from synthsat.data.checks import check_mask_values
from synthsat.data.errors import DataError
from synthsat.data.masks import MaskReader, mask_kind
from synthsat.data.raster_io import raster_info
from synthsat.synthesis.requests import TileRequest
from synthsat.synthesis.writer import AtomicTileWriter, output_profile


@runtime_checkable
class Synthesizer(Protocol):
    """What the Lightning synthesis path needs from a tile synthesiser.

    :class:`~synthsat.synthesis.gan_synthesizer.TileSynthesizer` (a generator) and
    :class:`~synthsat.synthesis.classtexture.ClassTextureSynthesizer` (real class
    textures) are two; both write through :func:`write_tile`.
    """

    def check(self, request: TileRequest) -> None:
        """Check a request's inputs before any work (raises ``DataError``)."""
        ...

    def stream(
        self, request: TileRequest, device: torch.device | str = "cpu"
    ) -> Iterator[np.ndarray]:
        """The request's rows, top to bottom, as float strips ``(bands, h, width)``."""
        ...

    def write(self, request: TileRequest, rows: Iterable[np.ndarray]) -> dict[str, Any]:
        """Write the rows atomically to ``request.output``; returns the provenance."""
        ...

    def record(self, request: TileRequest) -> dict[str, Any]:
        """Provenance of the output of ``request``."""
        ...


def resolve_dtype(request: TileRequest, dtype: str | None) -> str:
    """The dtype of a synthetic tile: ``dtype``, else the request's real image's.

    Raises:
        DataError: ``dtype`` is None and the request has no real image.
    """
    if dtype is not None:
        return dtype
    if request.image is None:
        raise DataError(f"{request.mask}: no real image to take the output dtype from; set dtype")
    return raster_info(request.image).dtype


def write_tile(
    request: TileRequest,
    rows: Iterable[np.ndarray],
    masks: MaskReader,
    ignore_index: int | None,
    profile: Mapping[str, Any],
    mean: Sequence[float],
    std: Sequence[float],
    record: Mapping[str, Any],
    band_names: Sequence[str] | None = None,
    rgb_bands: Sequence[int] | None = None,
    cog: bool = False,
) -> None:
    """Write the rows of ``request`` atomically to ``request.output``.

    Pixels whose mask is the ignore index are left out by the file's nodata mask
    (their values are kept as synthesised).

    Args:
        request: the tile.
        rows: its float strips ``(bands, h, width)``, top to bottom, normalised by
            ``mean`` and ``std`` (mean 0, std 1: raw values).
        masks: reads the request's mask as class indices.
        ignore_index: mask value of unlabelled pixels.
        profile: the output's profile (:func:`~synthsat.synthesis.writer.output_profile`).
        mean: per-band mean of raw values (denormalisation).
        std: per-band standard deviation of raw values.
        record: provenance stored in the file.
        band_names: band descriptions.
        rgb_bands: the bands tagged red, green and blue.
        cog: write a Cloud-Optimised GeoTIFF.
    """
    with (
        masks.open(request.mask) as mask_src,
        AtomicTileWriter(
            request.output,
            profile,
            mean,
            std,
            record,
            band_names=band_names,
            rgb_bands=rgb_bands,
            cog=cog,
        ) as writer,
    ):
        for strip in rows:
            row, h = writer.rows_done, strip.shape[1]
            labels = mask_src.read(Window(0, row, mask_src.width, h))
            writer.write(strip, labels != ignore_index)


class SynthesizerBase(ABC):
    """Checks, writing, provenance and runs shared by the tile synthesisers.

    A subclass (a dataclass) has the attributes below, builds ``_masks`` (a
    :class:`~synthsat.data.masks.MaskReader`) and provides :meth:`stream`,
    :attr:`output_bands`, :attr:`mask_classes`, :meth:`denormalisation`,
    :meth:`settings_record` and :meth:`check_image`.

    Attributes:
        ignore_index: mask value of unlabelled pixels.
        dtype: output dtype; None takes the real image's dtype.
        block_size: GeoTIFF block side in pixels.
        compress: GeoTIFF compression (``none`` for none).
        provenance: extra fields recorded with every output.
        band_names: band descriptions of the outputs.
        rgb_bands: the output bands tagged red, green and blue.
        cog: write Cloud-Optimised GeoTIFFs.
        scale: the grid of the outputs: the mask's resampled by this factor (see
            :mod:`~synthsat.synthesis.scaled`; ``_masks`` then reads masks on it); 1, the
            mask's own grid, unless a method sets it.
    """

    scale: float = 1.0
    ignore_index: int | None
    dtype: str | None
    block_size: int
    compress: str
    provenance: dict[str, Any]
    band_names: Sequence[str] | None
    rgb_bands: Sequence[int] | None
    cog: bool
    _masks: MaskReader

    # -- what a method provides ----------------------------------------------------------
    @property
    @abstractmethod
    def output_bands(self) -> int:
        """Bands of the synthetic tiles."""

    @property
    @abstractmethod
    def mask_classes(self) -> int:
        """Classes of the masks (values below it, or the ignore index, are valid)."""

    @abstractmethod
    def denormalisation(self) -> tuple[Sequence[float], Sequence[float]]:
        """Per-band ``(mean, std)`` that turn streamed values into raw values."""

    @abstractmethod
    def settings_record(self) -> dict[str, Any]:
        """The method's settings in the provenance, after the request's fields."""

    @abstractmethod
    def check_image(self, request: TileRequest) -> None:
        """Check what the method needs of the request's real image (raises ``DataError``)."""

    @abstractmethod
    def stream(
        self, request: TileRequest, device: torch.device | str = "cpu"
    ) -> Iterator[np.ndarray]:
        """The request's rows, top to bottom, as float strips ``(bands, h, width)``."""

    # -- shared ------------------------------------------------------------------------
    def check(self, request: TileRequest) -> None:
        """Check a request's inputs before any work: headers and every mask value.

        Raises:
            DataError: naming the file and the problem.
        """
        mask_kind(raster_info(request.mask), self._masks.colour_map)
        self.check_image(request)
        values = self._masks.values(request.mask)  # class indices, read strip by strip
        check_mask_values(values, self.mask_classes, self.ignore_index, str(request.mask))

    def output_dtype(self, request: TileRequest) -> str:
        """The dtype of the synthetic tile: ``dtype``, else the real image's."""
        return resolve_dtype(request, self.dtype)

    def record(self, request: TileRequest) -> dict[str, Any]:
        """Provenance of the output of ``request``."""
        return {
            "tile": request.tile,
            "sample": request.sample,
            "source_mask": str(request.mask),
            "source_image": None if request.image is None else str(request.image),
            "seed": request.seed,
            "tile_seed": request.tile_seed,
            **({"scale": self.scale} if self.scale != 1 else {}),  # absent: the mask's grid
            **self.settings_record(),
            **self.provenance,
        }

    def write(self, request: TileRequest, rows: Iterable[np.ndarray]) -> dict[str, Any]:
        """Write the rows of ``request`` atomically to ``request.output``.

        Pixels whose mask is the ignore index are left out by the file's nodata mask
        (their values are kept as synthesised).

        Returns:
            the output's provenance record (also stored in the file).
        """
        record = self.record(request)
        profile = output_profile(
            request.mask,
            self.output_bands,
            self.output_dtype(request),
            self.block_size,
            self.compress,
            self.rgb_bands,
            scale=self.scale,
        )
        mean, std = self.denormalisation()
        write_tile(
            request,
            rows,
            self._masks,
            self.ignore_index,
            profile,
            mean,
            std,
            record,
            band_names=self.band_names,
            rgb_bands=self.rgb_bands,
            cog=self.cog,
        )
        return record

    def run(
        self, request: TileRequest, device: torch.device | str = "cpu"
    ) -> dict[str, Any] | None:
        """Check, synthesise and write one request; None if its output already exists."""
        if request.output.exists():
            return None
        self.check(request)
        return self.write(request, self.stream(request, device))
