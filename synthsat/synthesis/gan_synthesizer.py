"""The GAN path: streaming synthesis of a mask tile with a trained chip generator.

The tile is covered by a :class:`~synthsat.synthesis.windows.ChipGrid` of chips of
the generator's patch size. Chip rows are processed top to bottom: for each, the
mask rows it covers are read through a rasterio window (and, for ``style=encoder``,
the co-located real image rows), its chips run through the generator in batches,
and their outputs are added, weighted by the normalised blend window, into an
accumulator that holds only one chip row of pixels. Rows that no later chip touches
are finished and handed to the writer. Memory therefore depends on the tile's width
and the chip size, never on its height, and the GeoTIFF writer streams to disk.

Style (the generator's latent ``z``):

* ``random`` — ``z ~ N(0, I)``, one draw per (tile, sample), shared by all chips so
  the whole tile has one style.
* ``encoder`` with ``style_scope=tile`` (default) — one draw from the tile-pooled
  posterior: the real tile is encoded chip by chip (a chip grid without overlap), the
  chips' means and variances are averaged, and ``z = mu + sigma * eps`` with one
  ``eps ~ N(0, I)`` per (tile, sample) is shared by all chips.
* ``encoder`` with ``style_scope=chip`` — the posterior of the co-located real chip,
  with the shared ``eps``: chips follow the local style of the real image, but
  neighbouring chips get different codes, which shows as blocks once the generator
  uses its code.

Noise: a generator with a spatial noise input (``noise_dim > 0``) gets windows of one
:class:`~synthsat.models.noise.NoiseField` per (tile, sample), so overlapping chips see
the same noise where they overlap and the texture does not restart at chip edges.

Every (tile, sample) has its own seed (:func:`~synthsat.synthesis.requests.derive_seed`);
writing, provenance and runs are :class:`~synthsat.synthesis.synthesizer.SynthesizerBase`'s.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from rasterio.windows import Window
from torch import Tensor

from synthsat.data.checks import check_pair_headers, invalid_pixels
from synthsat.data.errors import DataError
from synthsat.data.masks import MaskFile
from synthsat.data.raster_io import open_raster, raster_info, refuse_placeholder
from synthsat.data.tiles import TilePair
from synthsat.models.noise import NoiseField
from synthsat.models.spade import mask_to_onehot
from synthsat.synthesis.requests import TileRequest
from synthsat.synthesis.scaled import ScaledImage, ScaledMaskReader
from synthsat.synthesis.synthesizer import SynthesizerBase
from synthsat.synthesis.windows import ChipGrid

STYLES = ("random", "encoder", "auto")
STYLE_SCOPES = ("tile", "chip")


@runtime_checkable
class ChipGenerator(Protocol):
    """What the tile job needs from a generator (a trained task, or a test stand-in).

    Attributes:
        num_classes: classes of the one-hot mask input.
        out_bands: image bands produced (and expected from the real imagery).
        chip_size: side of the square chips the generator works on.
        z_dim: size of the latent style vector.

    A generator with a spatial noise input also has ``noise_dim`` (channels) and
    ``noise_cell`` (lattice spacing, px) attributes and takes ``noise`` in
    :meth:`generate`; without them it gets no noise.
    """

    num_classes: int
    out_bands: int
    chip_size: int
    z_dim: int

    def generate(self, onehot: Tensor, z: Tensor) -> Tensor:
        """One-hot masks ``(B, K, S, S)`` and styles ``(B, z_dim)`` (and, with a noise
        input, ``noise=(B, noise_dim, S, S)``) -> normalised images ``(B, out_bands, S, S)``."""
        ...

    def encode(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised real chips ``(B, out_bands, S, S)`` -> ``(mu, logvar)``, each
        ``(B, z_dim)``."""
        ...


@dataclass
class TileSynthesizer(SynthesizerBase):
    """Turns mask tiles into synthetic image tiles with a :class:`ChipGenerator`.

    Args:
        generator: the generator.
        mean: per-band mean of raw values (denormalisation).
        std: per-band standard deviation of raw values.
        ignore_index: mask value of unlabelled pixels (also used to pad small tiles).
        style: ``random``, ``encoder`` (see the module docstring) or ``auto``
            (``encoder`` when the generator has a style encoder, else ``random``).
        style_scope: ``tile`` (one encoder code per tile) or ``chip`` (one per chip).
        overlap: minimum overlap of neighbouring chips in pixels; None: half a chip.
        batch_size: chips per generator call.
        chip_size: chip side in pixels; None takes the generator's ``chip_size`` (its
            training patch size). A fully convolutional generator may run on larger
            chips (fewer, relatively less overlap) at the cost of working off the size
            it was trained on.
        label_map: raw mask value -> class index, applied when masks are read.
        colour_map: RGB colour -> class index for masks of colours (see
            :mod:`synthsat.data.masks`), applied when masks are read.
        dtype: output dtype; None takes the real image's dtype.
        block_size: GeoTIFF block side in pixels.
        compress: GeoTIFF compression (``none`` for none).
        channels_last: run the generator on channels-last tensors.
        autocast: run the generator under bfloat16 autocast (faster on CPUs with bf16
            units and on GPUs; outputs differ by about 1e-2 normalised units).
        provenance: extra fields recorded with every output (checkpoint, lambda, ...).
        band_names: band descriptions of the outputs (the data's ``band_names``).
        rgb_bands: the output bands tagged red, green and blue (the data's ``rgb_bands``).
        cog: write Cloud-Optimised GeoTIFFs (internal tiles and overviews).
        scale: synthesise on the mask's grid resampled by this factor in (0, 1] (the
            ``data.scale`` the generator was trained at): masks are read on that grid by
            the tile cache's nearest-centre rule and the real image for ``style=encoder``
            area-averaged to it (:mod:`~synthsat.synthesis.scaled`); outputs are written
            on it (:func:`~synthsat.synthesis.writer.output_profile`).
    """

    generator: ChipGenerator
    mean: Sequence[float]
    std: Sequence[float]
    ignore_index: int
    style: str = "random"
    style_scope: str = "tile"
    overlap: int | None = None
    batch_size: int = 8
    chip_size: int | None = None
    label_map: Mapping[int, int] | None = None
    colour_map: Mapping[Any, int] | None = None
    dtype: str | None = None
    block_size: int = 256
    compress: str = "deflate"
    channels_last: bool = False
    autocast: bool = False
    provenance: dict[str, Any] = field(default_factory=dict)
    band_names: Sequence[str] | None = None
    rgb_bands: Sequence[int] | None = None
    cog: bool = False
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got '{self.style}'")
        if self.style == "auto":
            has_encoder = getattr(self.generator, "has_encoder", True) is not False
            self.style = "encoder" if has_encoder else "random"
        if self.style_scope not in STYLE_SCOPES:
            raise ValueError(f"style_scope must be one of {STYLE_SCOPES}, got '{self.style_scope}'")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.style == "encoder" and getattr(self.generator, "has_encoder", True) is False:
            raise ValueError(
                "style=encoder needs a style encoder, but the generator has none "
                "(trained with use_vae=false); use style=random"
            )
        bands = self.generator.out_bands
        if len(self.mean) != bands or len(self.std) != bands:
            raise ValueError(
                f"the generator makes {bands} band(s) but the normalisation has "
                f"{len(self.mean)} mean(s) and {len(self.std)} std(s)"
            )
        self.chip = int(self.chip_size or self.generator.chip_size)
        if self.overlap is None:
            self.overlap = self.chip // 2
        self.noise_dim = int(getattr(self.generator, "noise_dim", 0))
        self.noise_cell = int(getattr(self.generator, "noise_cell", 1))
        if self.channels_last and isinstance(self.generator, torch.nn.Module):
            self.generator.to(memory_format=torch.channels_last)
        self._masks = ScaledMaskReader(self.label_map, self.colour_map, self.scale)
        self._masks.check_classes(self.generator.num_classes, self.ignore_index)
        self._mean = np.asarray(self.mean, dtype=np.float32)
        self._std = np.asarray(self.std, dtype=np.float32)

    # -- what the shared base needs ------------------------------------------------------
    @property
    def output_bands(self) -> int:
        """Bands of the synthetic tiles: the generator's."""
        return int(self.generator.out_bands)

    @property
    def mask_classes(self) -> int:
        """Classes of the masks: the generator's."""
        return int(self.generator.num_classes)

    def denormalisation(self) -> tuple[Sequence[float], Sequence[float]]:
        """Per-band ``(mean, std)`` of the data the generator was trained on."""
        return self.mean, self.std

    def settings_record(self) -> dict[str, Any]:
        """Style and chip grid, recorded with every output."""
        return {
            "style": self.style,
            "style_scope": self.style_scope,
            "chip_size": self.chip,
            "overlap": self.overlap,
        }

    def check_image(self, request: TileRequest) -> None:
        """The real image that ``style=encoder`` or ``dtype=null`` needs: present, and
        for ``style=encoder`` on the mask's grid with the generator's bands.

        Raises:
            DataError: naming the file and the problem.
        """
        if self.style == "encoder" or self.dtype is None:
            if request.image is None:
                raise DataError(
                    f"{request.mask}: no real image is paired with this mask, but "
                    f"style={self.style}"
                    + ("" if self.style == "encoder" else " and dtype=null need one")
                )
            if self.style == "encoder":  # the same grid checks as training
                refuse_placeholder(request.image, "style=encoder")
                check_pair_headers(
                    TilePair(request.tile, request.image, request.mask),
                    self.generator.out_bands,
                    "the checkpoint's generator (style=encoder) expects",
                    self._masks.colour_map,
                )
            else:
                raster_info(request.image)  # readable (its dtype is the output's)

    # -- synthesis ---------------------------------------------------------------------
    def stream(
        self,
        request: TileRequest,
        device: torch.device | str = "cpu",
    ) -> Iterator[np.ndarray]:
        """Synthesise ``request`` and yield its rows, top to bottom, as they are finished.

        Yields:
            normalised float32 strips ``(out_bands, h, width)``.
        """
        gen = self.generator
        chip = self.chip
        device = torch.device(device)
        rng = torch.Generator().manual_seed(request.tile_seed)
        eps = torch.randn(1, gen.z_dim, generator=rng)
        assert self.overlap is not None
        with self._masks.open(request.mask) as mask_src:
            height, width = mask_src.height, mask_src.width
            grid = ChipGrid(height, width, chip, self.overlap)
            row_w, col_w = grid.axis_weights(0), grid.axis_weights(1)
            padded_w = grid.padded_width
            field = None
            if self.noise_dim:
                field = NoiseField(
                    self.noise_dim, grid.padded_height, padded_w, self.noise_cell, rng
                )
            image_src = self._open_image(request) if self.style == "encoder" else None
            try:
                style = eps
                if image_src is not None and self.style_scope == "tile":
                    style = self._tile_style(image_src, eps, device)
                    image_src.close()
                    image_src = None
                acc = np.zeros((gen.out_bands, chip, padded_w), dtype=np.float32)
                for i, row in enumerate(grid.rows):
                    masks = self._read_mask(mask_src, row, chip, padded_w)
                    images = (
                        None
                        if image_src is None
                        else self._read_image(image_src, row, chip, padded_w)
                    )
                    for first in range(0, len(grid.cols), self.batch_size):
                        cols = grid.cols[first : first + self.batch_size]
                        noise = (
                            None
                            if field is None
                            else torch.stack([field.crop(row, c, chip, chip) for c in cols])
                        )
                        out = self._generate(masks, images, cols, style, noise, device)
                        weights = (
                            row_w[i][None, None, :, None]
                            * col_w[first : first + len(cols)][:, None, None, :]
                        )
                        out *= weights
                        for b, col in enumerate(cols):
                            acc[:, :, col : col + chip] += out[b]
                    nxt = grid.rows[i + 1] if i + 1 < len(grid.rows) else grid.padded_height
                    done = min(nxt, height) - row
                    if done > 0:
                        yield acc[:, :done, :width].copy()
                    step = nxt - row
                    acc[:, : chip - step] = acc[:, step:]
                    acc[:, chip - step :] = 0.0
            finally:
                if image_src is not None:
                    image_src.close()

    def _open_image(self, request: TileRequest) -> Any:
        """The real image of ``request`` for the encoder, on the grid of :attr:`scale`."""
        assert request.image is not None
        if self.scale == 1:
            return open_raster(request.image)
        return ScaledImage(request.image, self.scale)

    def _read_mask(self, src: MaskFile, row: int, chip: int, padded_w: int) -> Tensor:
        """Mask rows ``[row, row + chip)`` as class indices, padded with the ignore index."""
        h = min(chip, src.height - row)
        band = np.full((chip, padded_w), self.ignore_index, dtype=np.int64)
        band[:h, : src.width] = src.read(Window(0, row, src.width, h))
        return torch.from_numpy(band)

    def _tile_style(self, src: Any, eps: Tensor, device: torch.device) -> Tensor:
        """One code for the whole tile: a draw from the chips' pooled posterior.

        The real tile is encoded on a chip grid without overlap; the pooled posterior
        has the mean of the chips' means and the mean of their variances.
        """
        chip = self.chip
        grid = ChipGrid(src.height, src.width, chip, 0)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        mus, variances = [], []
        for row in grid.rows:
            images = self._read_image(src, row, chip, grid.padded_width)
            for first in range(0, len(grid.cols), self.batch_size):
                cols = grid.cols[first : first + self.batch_size]
                real = torch.stack([images[:, :, c : c + chip] for c in cols]).to(device)
                with torch.inference_mode(), self._autocast(device):
                    mu, logvar = self.generator.encode(real.contiguous(memory_format=fmt))
                mus.append(mu.float())
                variances.append(logvar.float().exp())
        mu = torch.cat(mus).mean(dim=0, keepdim=True)
        var = torch.cat(variances).mean(dim=0, keepdim=True)
        return mu + eps.to(device) * var.sqrt()

    def _autocast(self, device: torch.device) -> Any:
        """bfloat16 autocast when enabled, else a no-op context."""
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.autocast)

    def _read_image(self, src: Any, row: int, chip: int, padded_w: int) -> Tensor:
        """Normalised real image rows ``[row, row + chip)``, padded with zeros (the mean).

        Non-finite and nodata pixels are zeros (the mean) too: the generator never sees NaN.
        """
        h = min(chip, src.height - row)
        raw = src.read(window=Window(0, row, src.width, h)).astype(np.float32)
        nonfinite, nodata = invalid_pixels(raw, src.nodatavals)
        band = np.zeros((raw.shape[0], chip, padded_w), dtype=np.float32)
        normalised = (raw - self._mean[:, None, None]) / self._std[:, None, None]
        normalised[:, nonfinite | nodata] = 0.0
        band[:, :h, : src.width] = normalised
        return torch.from_numpy(band)

    def _generate(
        self,
        masks: Tensor,
        images: Tensor | None,
        cols: list[int],
        style: Tensor,
        noise: Tensor | None,
        device: torch.device,
    ) -> np.ndarray:
        """Run one batch of chips (the chips of a chip row at columns ``cols``).

        ``style`` is the tile's code (1, z_dim), or with per-chip encoder styles
        (``images`` given) the shared ``eps`` of the chips' posteriors.
        """
        gen = self.generator
        chip = self.chip
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        with torch.inference_mode(), self._autocast(device):
            batch = torch.stack([masks[:, c : c + chip] for c in cols]).to(device)
            onehot = mask_to_onehot(batch, gen.num_classes).float().contiguous(memory_format=fmt)
            if images is None:
                z = style.to(device).expand(len(cols), -1)
            else:
                real = torch.stack([images[:, :, c : c + chip] for c in cols]).to(device)
                mu, logvar = gen.encode(real.contiguous(memory_format=fmt))
                z = mu + style.to(device) * torch.exp(0.5 * logvar)
            if noise is None:
                out = gen.generate(onehot, z)
            else:
                noise = noise.to(device).contiguous(memory_format=fmt)
                out = gen.generate(onehot, z, noise=noise)
            return out.float().cpu().numpy()
