"""Class-texture control: fill each mask region with real texture of its class.

A baseline "generator" that needs no training. It tells whether a learned generator
beats simple class-conditional texture augmentation.

* :class:`~synthsat.synthesis.texture_bank.TextureBank` — per class, real texture
  patches (:func:`~synthsat.synthesis.texture_bank.build_bank`).
* :func:`texture_rows` — synthesis of one mask, streamed row band by row band. The
  tile is covered by the :class:`~synthsat.synthesis.windows.ChipGrid` of the patch
  size with half a patch of overlap (the GAN path's grid); every chip draws, for each
  class, a random bank patch of that class under a random dihedral transform (flips,
  90-degree rotations). The texture field of a class is the overlap-add of its
  chips' patches weighted by the grid's raised-cosine weights, normalised so that
  they sum to one at every pixel — no seams. A pixel takes the field of its mask
  class. Only the fields at the pixels of their class are ever computed (a gather
  per pixel), so the cost is independent of the number of classes.
* :class:`ClassTextureSynthesizer` — the same (or, given
  :class:`~synthsat.synthesis.classcolour.ClassColours` instead of a bank, the
  class-colour control's painting) as a
  :class:`~synthsat.synthesis.synthesizer.Synthesizer`, for the Lightning synthesis
  path and its writer: same files, same layout, same manifest (writing, provenance
  and runs are :class:`~synthsat.synthesis.synthesizer.SynthesizerBase`'s).

Everything random follows a seed: the bank the job's, each tile the (tile, sample)
seed of :func:`~synthsat.synthesis.requests.derive_seed`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window

from synthsat.data.errors import DataError
from synthsat.data.masks import MaskReader
from synthsat.data.raster_io import raster_info
from synthsat.synthesis.classcolour import ClassColours
from synthsat.synthesis.requests import TileRequest
from synthsat.synthesis.synthesizer import SynthesizerBase
from synthsat.synthesis.texture_bank import TextureBank, build_bank, texture_classes
from synthsat.synthesis.windows import ChipGrid
from synthsat.synthesis.writer import to_raw

__all__ = [
    "DIHEDRAL",
    "ClassTextureSynthesizer",
    "TextureBank",
    "build_bank",
    "dihedral_offsets",
    "synthesize_mask",
    "texture_classes",
    "texture_rows",
]

#: Number of dihedral transforms of a square patch (4 rotations x 2 flips).
DIHEDRAL = 8


def dihedral_offsets(size: int) -> np.ndarray:
    """Source offsets of the 8 dihedral transforms of a ``size x size`` patch.

    Entry ``[t, u, v]`` is the flat offset ``y * size + x`` of the patch pixel that
    transform ``t`` puts at ``(u, v)``: bit 4 of ``t`` transposes, bit 1 flips rows,
    bit 2 flips columns (identity at ``t = 0``).

    Returns:
        int64 array ``(8, size, size)``.
    """
    u, v = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    out = np.empty((DIHEDRAL, size, size), dtype=np.int64)
    for t in range(DIHEDRAL):
        y, x = (v, u) if t & 4 else (u, v)
        if t & 1:
            y = size - 1 - y
        if t & 2:
            x = size - 1 - x
        out[t] = y * size + x
    return out


def texture_rows(
    read: Callable[[int, int], np.ndarray],
    height: int,
    width: int,
    bank: TextureBank,
    seed: int,
) -> Iterator[np.ndarray]:
    """Synthesise a ``height x width`` mask from the bank, row band by row band.

    Args:
        read: ``read(row, h)`` -> mask rows ``[row, row + h)``, ``(h, width)``.
        height: mask height.
        width: mask width.
        bank: the textures.
        seed: seed of the patch choices and transforms (one per tile and sample).

    Yields:
        float32 strips ``(C, h, width)`` of raw image values, top to bottom.
    """
    size = bank.patch_size
    area = size * size
    grid = ChipGrid(height, width, size, size // 2)
    row_w, col_w = grid.axis_weights(0), grid.axis_weights(1)
    cols = np.asarray(grid.cols, dtype=np.int64)
    window_cols = cols[:, None] + np.arange(size)  # (ncols, P)
    chip = np.arange(len(cols))[:, None, None]
    offsets = dihedral_offsets(size).reshape(-1)
    position = np.arange(area).reshape(size, size)
    flat = bank.patches.reshape(-1, bank.bands)
    rng = np.random.default_rng(seed)
    acc = np.zeros((size, grid.padded_width, bank.bands), dtype=np.float32)
    for i, row in enumerate(grid.rows):
        h = min(size, height - row)
        band = np.full((size, grid.padded_width), bank.fill_class, dtype=np.int64)
        band[:h, :width] = bank.texture_class(read(row, h))
        classes = band[:, window_cols].transpose(1, 0, 2)  # (ncols, P, P)
        draw = rng.random((len(cols), bank.num_classes))
        turn = rng.integers(0, DIHEDRAL, (len(cols), bank.num_classes))
        patch = bank.start + (draw * bank.count).astype(np.int64)  # (ncols, classes)
        source = patch[chip, classes] * area + offsets[turn[chip, classes] * area + position]
        values = flat.take(source.ravel(), axis=0).astype(np.float32)
        values = values.reshape(len(cols), size, size, bank.bands)
        values *= (row_w[i][None, :, None] * col_w[:, None, :])[..., None]
        for j, col in enumerate(cols):
            acc[:, col : col + size] += values[j]
        nxt = grid.rows[i + 1] if i + 1 < len(grid.rows) else grid.padded_height
        done = min(nxt, height) - row
        if done > 0:
            yield acc[:done, :width].transpose(2, 0, 1).copy()
        step = nxt - row
        acc[: size - step] = acc[step:]
        acc[size - step :] = 0.0


def synthesize_mask(
    mask: np.ndarray, bank: TextureBank, seed: int, dtype: str | None = None
) -> np.ndarray:
    """Synthesise a whole mask in memory: ``(H, W)`` -> image ``(C, H, W)``.

    Args:
        mask: class indices (or the ignore index).
        bank: the textures.
        seed: seed of the patch choices and transforms.
        dtype: output dtype (rounded and clipped to integers); None: the bank's.
    """
    height, width = mask.shape
    rows = np.concatenate(
        list(texture_rows(lambda r, h: mask[r : r + h], height, width, bank, seed)), axis=1
    )
    zeros = np.zeros(bank.bands, dtype=np.float32)
    return to_raw(rows, zeros, zeros + 1, str(dtype or bank.dtype))


@dataclass
class ClassTextureSynthesizer(SynthesizerBase):
    """Turns mask tiles into image tiles of real class textures (see the module docstring),
    or of class colours and noise (the ``classcolour`` control).

    Args:
        bank: the textures, or the class colours to paint with.
        num_classes: classes of the masks.
        ignore_index: mask value of unlabelled pixels.
        label_map: raw mask value -> class index, applied when masks are read.
        colour_map: RGB colour -> class index for masks of colours.
        dtype: output dtype; None takes the real image's dtype.
        block_size: GeoTIFF block side in pixels.
        compress: GeoTIFF compression (``none`` for none).
        provenance: extra fields recorded with every output.
        band_names: band descriptions of the outputs.
        rgb_bands: the output bands tagged red, green and blue.
        cog: write Cloud-Optimised GeoTIFFs.
    """

    bank: TextureBank | ClassColours
    num_classes: int
    ignore_index: int | None
    label_map: Mapping[int, int] | None = None
    colour_map: Mapping[Any, int] | None = None
    dtype: str | None = None
    block_size: int = 256
    compress: str = "deflate"
    provenance: dict[str, Any] = field(default_factory=dict)
    band_names: Sequence[str] | None = None
    rgb_bands: Sequence[int] | None = None
    cog: bool = False

    def __post_init__(self) -> None:
        if self.bank.num_classes != self.num_classes:
            raise ValueError(
                f"the texture bank has {self.bank.num_classes} classes, the data {self.num_classes}"
            )
        self._masks = MaskReader(self.label_map, self.colour_map)
        self._masks.check_classes(self.num_classes, self.ignore_index)
        zeros = np.zeros(self.bank.bands, dtype=np.float32)
        self._mean, self._std = zeros.tolist(), (zeros + 1).tolist()

    # -- what the shared base needs ------------------------------------------------------
    @property
    def output_bands(self) -> int:
        """Bands of the synthetic tiles: the bank's."""
        return self.bank.bands

    @property
    def mask_classes(self) -> int:
        """Classes of the masks."""
        return self.num_classes

    def denormalisation(self) -> tuple[Sequence[float], Sequence[float]]:
        """Mean 0, std 1: the streamed rows are raw values."""
        return self._mean, self._std

    def settings_record(self) -> dict[str, Any]:
        """The chip grid and the method, recorded with every output."""
        if isinstance(self.bank, ClassColours):  # painted pixel by pixel: no chips
            return {
                "chip_size": None,
                "overlap": None,
                "generator": "classcolour",
                "checkpoint": None,
                "lambda_div": None,
            }
        size = self.bank.patch_size
        return {
            "chip_size": size,
            "overlap": size // 2,
            "generator": "classtexture",
            "checkpoint": None,
            "lambda_div": None,
        }

    def check_image(self, request: TileRequest) -> None:
        """The real image that ``dtype=null`` takes the output dtype from: present, readable.

        Raises:
            DataError: naming the mask.
        """
        if self.dtype is None:
            if request.image is None:
                raise DataError(
                    f"{request.mask}: no real image is paired with this mask to take the "
                    "output dtype from; set dtype"
                )
            raster_info(request.image)

    def stream(
        self, request: TileRequest, device: torch.device | str = "cpu"
    ) -> Iterator[np.ndarray]:
        """Synthesise ``request`` and yield its rows (raw values), top to bottom.

        Args:
            request: the tile.
            device: unused (numpy, on the CPU).

        Yields:
            float32 strips ``(bands, h, width)``.
        """
        with self._masks.open(request.mask) as src:

            def read(row: int, h: int) -> np.ndarray:
                return src.read(Window(0, row, src.width, h))

            if isinstance(self.bank, ClassColours):
                yield from self.bank.rows(read, src.height, src.width, request.tile_seed)
            else:
                yield from texture_rows(read, src.height, src.width, self.bank, request.tile_seed)
