"""Data layer: sources of image / mask tiles, checks, caching, datasets and the datamodule."""

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
