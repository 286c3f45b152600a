"""Data layer: sources of image / mask tiles, checks, caching, datasets and the datamodule.

The names below are imported on first use (PEP 562), so that importing one light module
of the package (e.g. ``synthsat.data.synthetic_tiles`` in an entry point) does not load
Lightning and torch before Hydra has composed, and checked, the job's config.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from synthsat.data.datamodule import LandCoverDataModule
    from synthsat.data.datasets import Normalizer
    from synthsat.data.errors import DataError
    from synthsat.data.sources import (
        ChesapeakeSource,
        ImageFolderSource,
        PairedRasterSource,
        TileSource,
        ToyWorldSource,
    )
    from synthsat.data.tiles import TilePair

#: Each exported name and the module that defines it.
_HOMES = {
    "ChesapeakeSource": "synthsat.data.sources",
    "DataError": "synthsat.data.errors",
    "ImageFolderSource": "synthsat.data.sources",
    "LandCoverDataModule": "synthsat.data.datamodule",
    "Normalizer": "synthsat.data.datasets",
    "PairedRasterSource": "synthsat.data.sources",
    "TilePair": "synthsat.data.tiles",
    "TileSource": "synthsat.data.sources",
    "ToyWorldSource": "synthsat.data.sources",
}

__all__ = [
    "ChesapeakeSource",
    "DataError",
    "ImageFolderSource",
    "LandCoverDataModule",
    "Normalizer",
    "PairedRasterSource",
    "TilePair",
    "TileSource",
    "ToyWorldSource",
]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'synthsat.data' has no attribute {name!r}")
