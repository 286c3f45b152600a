"""Patch datasets over cached tiles: random training patches and grid evaluation chips.

Samples follow one format everywhere::

    {"image": float32 tensor (C, H, W), normalised per band,
     "mask": int64 tensor (H, W) of class indices (ignore index where unlabelled),
     "tile": str, "row": int, "col": int, "synthetic": bool}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from synthsat.data.augment import random_dihedral
from synthsat.data.cache import CachedTile


class Normalizer:
    """Per-band ``(x - mean) / std`` and its inverse: the one owner of normalisation
    (numpy arrays as the datasets read them, tensors as models see them)."""

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self._inv_std = 1.0 / self.std

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Normalise a (C, H, W) array of raw values."""
        out = image.astype(np.float32, order="C")
        out -= self.mean[:, None, None]
        out *= self._inv_std[:, None, None]
        return out

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """Normalised values from a raw (..., C, H, W) tensor (the inverse of
        :meth:`denormalize`)."""
        mean = torch.as_tensor(self.mean, device=image.device).view(-1, 1, 1)
        std = torch.as_tensor(self.std, device=image.device).view(-1, 1, 1)
        return (image - mean) / std

    def denormalize(self, image: torch.Tensor) -> torch.Tensor:
        """Raw values from a normalised (..., C, H, W) tensor."""
        mean = torch.as_tensor(self.mean, device=image.device).view(-1, 1, 1)
        std = torch.as_tensor(self.std, device=image.device).view(-1, 1, 1)
        return image * std + mean


def _pad(
    image: np.ndarray, mask: np.ndarray, height: int, width: int, fill: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pad (C, h, w) / (h, w) at the bottom-right to (height, width); mask with ``fill``."""
    h, w = mask.shape
    if (h, w) == (height, width):
        return image, mask
    image = np.pad(image, ((0, 0), (0, height - h), (0, width - w)))
    mask = np.pad(mask, ((0, height - h), (0, width - w)), constant_values=fill)
    return image, mask


def to_sample(
    image: np.ndarray,
    mask: np.ndarray,
    normalize: Normalizer,
    tile: str,
    row: int,
    col: int,
    synthetic: bool = False,
) -> dict[str, Any]:
    """Arrays -> the sample dict."""
    return {
        "image": torch.from_numpy(normalize(image)),
        "mask": torch.from_numpy(mask.astype(np.int64, order="C")),
        "tile": tile,
        "row": row,
        "col": col,
        "synthetic": synthetic,
    }


@dataclass(frozen=True)
class PatchSpec:
    """How training patches are cut: side, count per epoch, normalisation, padding
    value of the mask, and whether they are augmented."""

    patch_size: int
    length: int
    normalize: Normalizer
    ignore_index: int
    augment: bool = True

    def dataset_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`RandomPatchDataset` (and its subclasses)."""
        return {
            "patch_size": self.patch_size,
            "length": self.length,
            "normalize": self.normalize,
            "ignore_index": self.ignore_index,
            "augment": self.augment,
        }


class RandomPatchDataset(Dataset):
    """Random square patches from a set of tiles, area-weighted, optionally augmented.

    Args:
        tiles: cached tiles.
        patch_size: patch side in pixels (tiles smaller than that are padded).
        length: patches per epoch.
        normalize: band normaliser.
        ignore_index: mask fill value for padding.
        augment: random flips and 90-degree rotations, identical for image and mask.
        fixed: the same patches every epoch (seeded by index; for validation).
        seed: seed for ``fixed`` patches.
    """

    def __init__(
        self,
        tiles: list[CachedTile],
        patch_size: int,
        length: int,
        normalize: Normalizer,
        ignore_index: int,
        augment: bool = True,
        fixed: bool = False,
        seed: int = 0,
    ) -> None:
        if not tiles:
            raise ValueError("RandomPatchDataset needs at least one tile")
        self.tiles = tiles
        self.patch_size = patch_size
        self.length = length
        self.normalize = normalize
        self.ignore_index = ignore_index
        self.augment = augment
        self.fixed = fixed
        self.seed = seed
        area = np.array([t.shape[0] * t.shape[1] for t in tiles], dtype=np.float64)
        self.weights = area / area.sum()

    def __len__(self) -> int:
        return self.length

    def _rng(self, index: int) -> np.random.Generator:
        if self.fixed:
            return np.random.default_rng([self.seed, index])
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))

    def choose_image(self, tile_index: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
        """The image array to cut the patch from and whether it is synthetic (hook for mixing)."""
        return self.tiles[tile_index].image, False

    def position(self, tile: CachedTile, rng: np.random.Generator) -> tuple[int, int]:
        """A random patch corner (row, col) within ``tile`` (0 along a side shorter than
        the patch)."""
        h, w = tile.shape
        p = self.patch_size
        row = int(rng.integers(0, max(h - p, 0) + 1))
        col = int(rng.integers(0, max(w - p, 0) + 1))
        return row, col

    def cut(
        self,
        tile: CachedTile,
        source: np.ndarray,
        row: int,
        col: int,
        rng: np.random.Generator,
        synthetic: bool,
    ) -> dict[str, Any]:
        """The sample of the patch at (row, col): image from ``source``, mask from
        ``tile``, padded and (with ``augment``) flipped / turned."""
        p = self.patch_size
        image = source[:, row : row + p, col : col + p]
        mask = tile.mask[row : row + p, col : col + p]
        image, mask = _pad(image, mask, p, p, self.ignore_index)
        if self.augment:
            image, mask = random_dihedral(image, mask, rng)
        return to_sample(image, mask, self.normalize, tile.name, row, col, synthetic)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = self._rng(index)
        ti = int(rng.choice(len(self.tiles), p=self.weights))
        tile = self.tiles[ti]
        row, col = self.position(tile, rng)
        source, synthetic = self.choose_image(ti, rng)
        return self.cut(tile, source, row, col, rng, synthetic)


class GridChipDataset(Dataset):
    """Non-overlapping chips covering whole tiles, for validation and test.

    Each chip is at most ``chip_size`` square; edge chips are smaller and every chip is
    padded (mask with ``ignore_index``) to a multiple of ``pad_multiple``, so every
    labelled pixel is scored exactly once. ``chip_size`` larger than a tile gives the
    whole tile as one chip.
    """

    def __init__(
        self,
        tiles: list[CachedTile],
        chip_size: int,
        normalize: Normalizer,
        ignore_index: int,
        pad_multiple: int = 32,
    ) -> None:
        self.tiles = tiles
        self.chip_size = chip_size
        self.normalize = normalize
        self.ignore_index = ignore_index
        self.pad_multiple = pad_multiple
        self.index: list[tuple[int, int, int, int, int]] = []  # tile, row, col, h, w
        for ti, tile in enumerate(tiles):
            h, w = tile.shape
            for r in range(0, h, chip_size):
                for c in range(0, w, chip_size):
                    self.index.append((ti, r, c, min(chip_size, h - r), min(chip_size, w - c)))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ti, r, c, h, w = self.index[index]
        tile = self.tiles[ti]
        m = self.pad_multiple
        image, mask = _pad(
            tile.image[:, r : r + h, c : c + w],
            tile.mask[r : r + h, c : c + w],
            math.ceil(h / m) * m,
            math.ceil(w / m) * m,
            self.ignore_index,
        )
        return to_sample(image, mask, self.normalize, tile.name, r, c)
