"""Class-texture control: fill each mask region with real texture of its class.

A baseline "generator" that needs no training. It tells whether a learned generator
beats simple class-conditional texture augmentation.

* :class:`TextureBank` — per class, random square patches of the real training tiles
  whose pixels are mostly (``purity``) that class, at most ``per_class`` of them,
  seeded. A class without such a patch falls back to ``fallback_purity``, then to a
  constant patch of its mean colour (both logged as warnings). The ignore index is
  never a texture class: pixels of the ignore index in a target mask get the texture
  of the most common class (they are not scored anyway).
* :func:`texture_rows` — synthesis of one mask, streamed row band by row band. The
  tile is covered by the :class:`~synthsat.synthesis.windows.ChipGrid` of the patch
  size with half a patch of overlap (the GAN path's grid); every chip draws, for each
  class, a random bank patch of that class under a random dihedral transform (flips,
  90-degree rotations). The texture field of a class is the overlap-add of its
  chips' patches weighted by the grid's raised-cosine weights, normalised so that
  they sum to one at every pixel — no seams. A pixel takes the field of its mask
  class. Only the fields at the pixels of their class are ever computed (a gather
  per pixel), so the cost is independent of the number of classes.
* :class:`ClassTextureSynthesizer` — the same as a
  :class:`~synthsat.synthesis.tile_job.Synthesizer`, for the Lightning synthesis path
  and its writer: same files, same layout, same manifest.

Everything random follows a seed: the bank the job's, each tile the (tile, sample)
seed of :func:`~synthsat.synthesis.tile_job.derive_seed`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window

from synthsat.data.checks import check_mask_values
from synthsat.data.errors import DataError
from synthsat.data.masks import MaskReader, mask_kind
from synthsat.data.raster_io import raster_info
from synthsat.synthesis.tile_job import TileRequest, resolve_dtype, write_tile
from synthsat.synthesis.windows import ChipGrid
from synthsat.synthesis.writer import output_profile, to_raw

log = logging.getLogger(__name__)

#: Number of dihedral transforms of a square patch (4 rotations x 2 flips).
DIHEDRAL = 8
#: Candidate patch positions are on a grid of at most this many pixels.
MAX_CANDIDATE_STRIDE = 16


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


@dataclass(frozen=True)
class TextureBank:
    """Real texture patches per class.

    Args:
        patches: ``(N, P, P, C)`` patches of all classes, in the imagery's dtype.
        start: ``(num_classes,)`` index of the first patch of each class.
        count: ``(num_classes,)`` patches of each class (at least one; the ignore
            index's entry repeats the fill class's).
        ignore_index: mask value of unlabelled pixels (None: none).
        fill_class: the class whose texture fills ignore-index pixels.
        sources: how each texture class's patches were found (``purity>=0.9``,
            ``purity>=0.5``, ``mean colour``).
    """

    patches: np.ndarray
    start: np.ndarray
    count: np.ndarray
    ignore_index: int | None
    fill_class: int
    sources: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, p, p2, _ = self.patches.shape
        if p != p2 or n < 1:
            raise ValueError(f"patches must be (N >= 1, P, P, C), got {self.patches.shape}")
        if self.start.shape != self.count.shape or self.count.min() < 1:
            raise ValueError("every class needs at least one patch")
        if int((self.start + self.count).max()) > n or self.start.min() < 0:
            raise ValueError("class patch ranges fall outside the bank")

    @property
    def patch_size(self) -> int:
        """Patch side in pixels."""
        return int(self.patches.shape[1])

    @property
    def bands(self) -> int:
        """Image bands."""
        return int(self.patches.shape[3])

    @property
    def dtype(self) -> np.dtype:
        """The imagery's dtype."""
        return self.patches.dtype

    @property
    def num_classes(self) -> int:
        """Classes of the masks (texture classes and, if below it, the ignore index)."""
        return len(self.count)

    def texture_class(self, mask: np.ndarray) -> np.ndarray:
        """Mask values -> the class whose texture they take (ignore index: the fill class).

        Raises:
            DataError: a value that is neither a class nor the ignore index.
        """
        values = np.asarray(mask).astype(np.int64, copy=False)
        out = values
        if self.ignore_index is not None:
            out = np.where(values == self.ignore_index, self.fill_class, values)
        if out.size and (out.min() < 0 or out.max() >= self.num_classes):
            check_mask_values(values, self.num_classes, self.ignore_index, "mask")
        return out

    @classmethod
    def from_patches(
        cls,
        patches: Mapping[int, np.ndarray],
        num_classes: int,
        ignore_index: int | None,
        fill_class: int | None = None,
        sources: Mapping[int, str] | None = None,
    ) -> TextureBank:
        """A bank from given patches per texture class.

        Args:
            patches: class -> ``(n, C, P, P)`` patches (one dtype, one size).
            num_classes: classes of the masks.
            ignore_index: mask value of unlabelled pixels (never a texture class).
            fill_class: texture of ignore-index pixels; None: the class with most patches.
            sources: how each class's patches were found (for the log / provenance).

        Raises:
            ValueError: a texture class without patches, or patches for the ignore index.
        """
        classes = texture_classes(num_classes, ignore_index)
        missing = [k for k in classes if k not in patches or len(patches[k]) == 0]
        if missing or (ignore_index is not None and ignore_index in patches):
            raise ValueError(
                f"need patches for every class {classes} (not the ignore index "
                f"{ignore_index}); missing {missing}"
            )
        start = np.zeros(num_classes, dtype=np.int64)
        count = np.zeros(num_classes, dtype=np.int64)
        stacked = []
        offset = 0
        for k in classes:
            stacked.append(np.asarray(patches[k]).transpose(0, 2, 3, 1))
            start[k], count[k] = offset, len(patches[k])
            offset += len(patches[k])
        if fill_class is None:
            fill_class = max(classes, key=lambda k: int(count[k]))
        if ignore_index is not None and 0 <= ignore_index < num_classes:
            start[ignore_index], count[ignore_index] = start[fill_class], count[fill_class]
        return cls(
            np.ascontiguousarray(np.concatenate(stacked)),
            start,
            count,
            ignore_index,
            int(fill_class),
            dict(sources or {k: "given" for k in classes}),
        )


def texture_classes(num_classes: int, ignore_index: int | None) -> list[int]:
    """The classes that get a texture: all but the ignore index."""
    return [k for k in range(num_classes) if k != ignore_index]


def build_bank(
    tiles: Sequence[tuple[np.ndarray, np.ndarray]],
    num_classes: int,
    ignore_index: int | None,
    patch_size: int = 64,
    purity: float = 0.9,
    fallback_purity: float = 0.5,
    per_class: int = 256,
    seed: int = 0,
) -> TextureBank:
    """Cut a :class:`TextureBank` from real tiles.

    Candidate patches lie on a grid (a stride of ``gcd(patch_size, 16)`` pixels, at a
    random offset per tile); a candidate belongs to class ``k`` when at least
    ``purity`` of its pixels are ``k``. Each class keeps a random ``per_class`` of
    its candidates over all tiles.

    Args:
        tiles: ``(image (C, H, W), mask (H, W))`` pairs; masks hold class indices or
            the ignore index.
        num_classes: classes of the masks.
        ignore_index: mask value of unlabelled pixels (never a texture class).
        patch_size: patch side in pixels.
        purity: least share of a patch's pixels of its class.
        fallback_purity: the share a class with no patch at ``purity`` falls back to;
            a class with none at that either gets a constant patch of its mean colour
            (of all images' mean colour if it has no pixels at all).
        per_class: most patches kept per class.
        seed: seed of the offsets and the choice.

    Raises:
        ValueError: settings out of range or no tiles.
    """
    if patch_size < 1 or per_class < 1:
        raise ValueError(f"patch_size and per_class must be >= 1, got {patch_size}, {per_class}")
    if not (0 < purity <= 1 and 0 < fallback_purity <= 1):
        raise ValueError(f"purities must be in (0, 1], got {purity}, {fallback_purity}")
    if not tiles:
        raise ValueError("no tiles to cut textures from")
    classes = texture_classes(num_classes, ignore_index)
    rng = np.random.default_rng(seed)
    stride = math.gcd(patch_size, MAX_CANDIDATE_STRIDE)
    lowest = min(purity, fallback_purity)
    found: dict[int, list[np.ndarray]] = {k: [] for k in classes}  # rows (tile, y, x, share)
    pixels = np.zeros(num_classes + 1, dtype=np.int64)
    for t, (_, mask) in enumerate(tiles):
        labels = _labels(mask, num_classes, ignore_index)
        pixels += np.bincount(labels.ravel(), minlength=num_classes + 1)
        least = math.ceil(lowest * patch_size * patch_size - 1e-9)
        for k, rows in _candidates(labels, num_classes, patch_size, stride, least, rng).items():
            if k in found and len(rows):
                found[k].append(np.hstack([np.full((len(rows), 1), t), rows]))
    patches: dict[int, np.ndarray] = {}
    sources: dict[int, str] = {}
    area = patch_size * patch_size
    means: np.ndarray | None = None
    dtype = tiles[0][0].dtype
    for k in classes:
        rows = np.concatenate(found[k]) if found[k] else np.empty((0, 4), dtype=np.int64)
        chosen = None
        for level in (purity, fallback_purity):
            ok = rows[rows[:, 3] >= math.ceil(level * area - 1e-9)]
            if len(ok):
                pick = rng.choice(len(ok), size=min(per_class, len(ok)), replace=False)
                chosen, sources[k] = ok[pick], f"purity>={level:g}"
                break
        if chosen is not None:
            if sources[k] != f"purity>={purity:g}":
                log.warning(
                    "class %d: no %d px texture patch is %g %% that class; using %d patch(es) "
                    "of at least %g %%",
                    k,
                    patch_size,
                    100 * purity,
                    len(chosen),
                    100 * fallback_purity,
                )
            patches[k] = np.stack(
                [tiles[t][0][:, y : y + patch_size, x : x + patch_size] for t, y, x, _ in chosen]
            )
            continue
        if means is None:
            means = _class_means(tiles, num_classes, ignore_index)
        colour = means[k] if pixels[k] else means[num_classes]
        log.warning(
            "class %d: no %d px texture patch is even %g %% that class (%d px of it in the "
            "tiles); using its mean colour %s",
            k,
            patch_size,
            100 * fallback_purity,
            int(pixels[k]),
            np.round(colour, 2).tolist(),
        )
        flat = np.broadcast_to(colour[:, None, None], (len(colour), patch_size, patch_size))
        patches[k] = to_raw(flat, np.zeros_like(colour), np.ones_like(colour), str(dtype))[None]
        sources[k] = "mean colour"
    fill = max(classes, key=lambda k: int(pixels[k])) if classes else 0
    return TextureBank.from_patches(patches, num_classes, ignore_index, fill, sources)


def _labels(mask: np.ndarray, num_classes: int, ignore_index: int | None) -> np.ndarray:
    """Class indices, with the ignore index (and anything else) as ``num_classes``."""
    labels = np.asarray(mask).astype(np.int64)
    bad = (labels < 0) | (labels >= num_classes)
    if ignore_index is not None:
        bad |= labels == ignore_index
    labels[bad] = num_classes
    return labels


def _candidates(
    labels: np.ndarray,
    num_classes: int,
    size: int,
    stride: int,
    least: int,
    rng: np.random.Generator,
) -> dict[int, np.ndarray]:
    """Per class, int64 rows ``(y, x, pixels of the class)`` of the candidate patches of
    a tile with at least ``least`` pixels of that class."""
    height, width = labels.shape
    if height < size or width < size:
        return {}
    oy, ox = (int(rng.integers(0, min(stride, n - size + 1))) for n in (height, width))
    hb, wb = (height - oy) // stride, (width - ox) // stride
    bins = num_classes + 1
    blocks = labels[oy : oy + hb * stride, ox : ox + wb * stride]
    blocks = blocks.reshape(hb, stride, wb, stride).transpose(0, 2, 1, 3).reshape(hb * wb, -1)
    ids = blocks + (np.arange(hb * wb, dtype=np.int64) * bins)[:, None]
    counts = np.bincount(ids.ravel(), minlength=hb * wb * bins).reshape(hb, wb, bins)
    total = np.zeros((hb + 1, wb + 1, bins), dtype=np.int64)
    total[1:, 1:] = counts.cumsum(0).cumsum(1)
    b = size // stride
    per_patch = total[b:, b:] - total[:-b, b:] - total[b:, :-b] + total[:-b, :-b]
    out = {}
    for k in range(num_classes):
        ii, jj = np.nonzero(per_patch[..., k] >= max(least, 1))
        out[k] = np.stack([oy + ii * stride, ox + jj * stride, per_patch[ii, jj, k]], axis=1)
    return out


def _class_means(
    tiles: Sequence[tuple[np.ndarray, np.ndarray]], num_classes: int, ignore_index: int | None
) -> np.ndarray:
    """``(num_classes + 1, C)`` mean colour per class; the last row: of all labelled pixels."""
    bands = tiles[0][0].shape[0]
    sums = np.zeros((num_classes + 1, bands))
    counts = np.zeros(num_classes + 1)
    for image, mask in tiles:
        labels = _labels(mask, num_classes, ignore_index).ravel()
        counts += np.bincount(labels, minlength=num_classes + 1)
        for c in range(bands):
            sums[:, c] += np.bincount(
                labels, weights=image[c].ravel().astype(np.float64), minlength=num_classes + 1
            )
    labelled = counts[:num_classes].sum()
    sums[num_classes] = sums[:num_classes].sum(0)
    counts[num_classes] = labelled
    return sums / np.maximum(counts, 1)[:, None]


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
class ClassTextureSynthesizer:
    """Turns mask tiles into image tiles of real class textures (see the module docstring).

    Args:
        bank: the textures.
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

    bank: TextureBank
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

    def check(self, request: TileRequest) -> None:
        """Check a request's inputs before any work: headers and every mask value.

        Raises:
            DataError: naming the file and the problem.
        """
        mask_kind(raster_info(request.mask), self._masks.colour_map)
        if self.dtype is None:
            if request.image is None:
                raise DataError(
                    f"{request.mask}: no real image is paired with this mask to take the "
                    "output dtype from; set dtype"
                )
            raster_info(request.image)
        values = self._masks.values(request.mask)
        check_mask_values(values, self.num_classes, self.ignore_index, str(request.mask))

    def output_dtype(self, request: TileRequest) -> str:
        """The dtype of the synthetic tile: ``dtype``, else the real image's."""
        return resolve_dtype(request, self.dtype)

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
            yield from texture_rows(
                lambda row, h: src.read(Window(0, row, src.width, h)),
                src.height,
                src.width,
                self.bank,
                request.tile_seed,
            )

    def write(self, request: TileRequest, rows: Iterable[np.ndarray]) -> dict[str, Any]:
        """Write the rows of ``request`` atomically to ``request.output``; returns the record."""
        record = self.record(request)
        profile = output_profile(
            request.mask,
            self.bank.bands,
            self.output_dtype(request),
            self.block_size,
            self.compress,
            self.rgb_bands,
        )
        write_tile(
            request,
            rows,
            self._masks,
            self.ignore_index,
            profile,
            self._mean,
            self._std,
            record,
            band_names=self.band_names,
            rgb_bands=self.rgb_bands,
            cog=self.cog,
        )
        return record

    def run(self, request: TileRequest) -> dict[str, Any] | None:
        """Check, synthesise and write one request; None if its output already exists."""
        if request.output.exists():
            return None
        self.check(request)
        return self.write(request, self.stream(request))

    def record(self, request: TileRequest) -> dict[str, Any]:
        """Provenance of the output of ``request``."""
        size = self.bank.patch_size
        return {
            "tile": request.tile,
            "sample": request.sample,
            "source_mask": str(request.mask),
            "source_image": None if request.image is None else str(request.image),
            "seed": request.seed,
            "tile_seed": request.tile_seed,
            "chip_size": size,
            "overlap": size // 2,
            "generator": "classtexture",
            "checkpoint": None,
            "lambda_div": None,
            **self.provenance,
        }
