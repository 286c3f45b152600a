"""Synthesis requests: which synthetic tiles to make, and the seed of each.

A :class:`TileRequest` is one output: sample ``k`` of one mask tile, written to
``<out>/<tile>_s<k>.tif`` (:func:`~synthsat.data.synthetic_tiles.output_name`). Every
(tile, sample) gets its own seed derived from the global seed, the tile name and the
sample index (:func:`derive_seed`), so results do not depend on the order in which
tiles are processed or on which process handles them.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthsat.data.errors import DataError
from synthsat.data.synthetic_tiles import output_name


def derive_seed(seed: int, tile: str, sample: int) -> int:
    """A 63-bit seed for one (tile, sample), from the global ``seed``."""
    seq = np.random.SeedSequence([int(seed), zlib.crc32(tile.encode()), int(sample)])
    return int(seq.generate_state(1, np.uint64)[0] >> np.uint64(1))


@dataclass(frozen=True)
class TileRequest:
    """One synthetic tile to make: sample ``sample`` of mask tile ``tile``.

    Attributes:
        tile: tile name (the mask's stem).
        mask: path of the mask raster.
        image: path of the co-located real image (needed for ``style=encoder`` and,
            when no output dtype is given, for the dtype).
        sample: sample index.
        seed: the job's global seed.
        output: path of the synthetic GeoTIFF.
    """

    tile: str
    mask: Path
    image: Path | None
    sample: int
    seed: int
    output: Path

    @property
    def tile_seed(self) -> int:
        """The seed of this (tile, sample)."""
        return derive_seed(self.seed, self.tile, self.sample)


def make_requests(
    tiles: Iterable[tuple[str, Path, Path | None]], out_dir: str | Path, samples: int, seed: int
) -> list[TileRequest]:
    """Requests for ``samples`` samples of each ``(name, mask, image)`` tile.

    Raises:
        ValueError: ``samples`` is below 1.
        DataError: two tiles share a name (their outputs would clash).
    """
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    out = Path(out_dir)
    requests = []
    seen: set[str] = set()
    for name, mask, image in tiles:
        if name in seen:
            raise DataError(f"{mask}: tile name '{name}' occurs twice; output names would clash")
        seen.add(name)
        requests.extend(
            TileRequest(
                name,
                Path(mask),
                None if image is None else Path(image),
                k,
                seed,
                out / output_name(name, k),
            )
            for k in range(samples)
        )
    return requests
