"""Data sources: where image / mask tile pairs come from.

Every source resolves to :class:`~synthsat.data.tiles.TilePair` lists per split;
the :class:`~synthsat.data.datamodule.LandCoverDataModule` turns those into
samples of one format, whatever the source.

* :class:`PairedRasterSource` — georeferenced image and mask GeoTIFFs (file globs),
  also usable as torchgeo ``RasterDataset`` s intersected (:meth:`geo_dataset`).
* :class:`ToyWorldSource` — the embedded default: a generated toy world.
* :class:`ChesapeakeSource` — Chesapeake Land Cover via ``torchgeo.datasets.ChesapeakeCVPR``.
* :class:`ImageFolderSource` — non-georeferenced ``images/`` and ``masks/`` folders.
* :class:`~synthsat.data.torchgeo_source.TorchGeoSource` — any torchgeo dataset of
  imagery and masks (``image & mask``, a ``NonGeoDataset``), exported to GeoTIFF pairs.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from synthsat.data.colours import Colour, parse_colour_map
from synthsat.data.errors import DataError
from synthsat.data.tiles import TilePair, default_splits, pair_by_stem, select_split
from synthsat.data.toyworld import complete_world, generate, is_toyworld

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


def _load_splits(
    splits: Mapping[str, Sequence[str]] | str | Path | None, root: Path
) -> dict[str, list[str]] | None:
    """Splits given inline, as a JSON file (absolute or relative to ``root``), or None."""
    if splits is None:
        return None
    if isinstance(splits, str | Path):
        path = Path(splits) if Path(splits).is_absolute() else root / splits
        if not path.exists():
            raise DataError(f"{path}: split file does not exist")
        try:
            splits = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: split file is not valid JSON ({err})") from err
    return {s: list(splits[s]) for s in SPLITS if s in splits}


class TileSource(ABC):
    """A set of image / mask tile pairs, divided into train / val / test."""

    #: Optional mapping of raw mask values to class indices (applied when reading masks).
    label_map: dict[int, int] | None = None
    #: Optional mapping of RGB mask colours to class indices (for colour masks).
    colour_map: dict[Colour, int] | None = None

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """Download or generate the data, if this source can (called once, on rank 0)."""

    @abstractmethod
    def all_pairs(self) -> list[TilePair]:
        """Every tile pair of the source."""

    @abstractmethod
    def split_names(self) -> dict[str, list[str]]:
        """Split name -> tile names (stems, or stem prefixes followed by ``_``)."""

    def describe(self) -> str:
        """Where the data lives, for messages."""
        return str(getattr(self, "root", type(self).__name__))

    def pairs(self, split: str) -> list[TilePair]:
        """Tile pairs of ``split`` ("train", "val" or "test")."""
        if split not in SPLITS:
            raise ValueError(f"unknown split '{split}', expected one of {SPLITS}")
        names = self.split_names().get(split)
        all_pairs = self.all_pairs()
        if names is None:
            raise DataError(f"{self.describe()}: no '{split}' split is defined")
        return select_split(all_pairs, names, split, self.describe())


class FolderSource(TileSource):
    """Tile pairs from files under one directory, with optional splits and mask maps.

    The shared part of :class:`PairedRasterSource` and :class:`ImageFolderSource`.

    Args:
        root: data directory.
        splits: split name -> tile names (stems or stem prefixes), or a JSON file with
            ``train``/``val``/``test`` lists; ``None`` reads ``<root>/splits.json`` when
            it exists, else takes the last tile(s) for test and one for validation.
        label_map: raw mask value -> class index, applied when masks are read.
        colour_map: RGB colour -> class index for masks of colours (3-band RGB, or
            palette masks whose colours are the classes); keys ``'#rrggbb'``,
            ``'r,g,b'`` or ``(r, g, b)``. See :mod:`synthsat.data.masks`.
    """

    def __init__(
        self,
        root: str | Path,
        splits: Mapping[str, Sequence[str]] | str | None = None,
        label_map: Mapping[int, int] | None = None,
        colour_map: Mapping[Any, int] | None = None,
    ) -> None:
        self.root = Path(root)
        self._splits = splits
        self.label_map = {int(k): int(v) for k, v in label_map.items()} if label_map else None
        self.colour_map = parse_colour_map(colour_map)

    def layout(self) -> str:
        """What the data directory should hold, for messages."""
        return "image and mask files"

    def _check_root(self) -> None:
        """A missing data directory is named as such (before its split file or folders)."""
        if not self.root.is_dir():
            raise DataError(
                f"{self.root}: data directory does not exist (expected {self.layout()})"
            )

    def split_names(self) -> dict[str, list[str]]:
        self._check_root()
        given = self._splits
        if given is None and (self.root / "splits.json").is_file():
            given = "splits.json"  # optional: used when the data folder has one
        splits = _load_splits(given, self.root)
        return splits if splits is not None else default_splits([p.name for p in self.all_pairs()])


class PairedRasterSource(FolderSource):
    """Georeferenced image and mask rasters matched by file stem.

    Args:
        root: data directory.
        image_glob: glob of image rasters relative to ``root``.
        mask_glob: glob of mask rasters relative to ``root``.
        **rules: ``splits``, ``label_map``, ``colour_map`` of :class:`FolderSource`.
    """

    def __init__(
        self,
        root: str | Path,
        image_glob: str = "images/*.tif",
        mask_glob: str = "masks/*.tif",
        **rules: Any,
    ) -> None:
        super().__init__(root, **rules)
        self.image_glob = image_glob
        self.mask_glob = mask_glob

    def layout(self) -> str:
        return f"'{self.image_glob}' and '{self.mask_glob}' under it"

    def all_pairs(self) -> list[TilePair]:
        self._check_root()
        images = sorted(self.root.glob(self.image_glob))
        masks = sorted(self.root.glob(self.mask_glob))
        if not images:
            raise DataError(f"{self.root}: no image files match '{self.image_glob}'")
        if not masks:
            raise DataError(f"{self.root}: no mask files match '{self.mask_glob}'")
        return pair_by_stem(images, masks, str(self.root))

    def geo_dataset(self, split: str) -> Any:
        """The split as torchgeo ``RasterDataset`` s (image & mask) intersected.

        Use it with torchgeo samplers (``RandomGeoSampler``, ``GridGeoSampler``) when you
        want torchgeo's on-the-fly reprojection and mosaicking instead of the cached path.
        """
        from torchgeo.datasets import RasterDataset

        class _Images(RasterDataset):
            is_image = True
            filename_glob = "*"

        class _Masks(RasterDataset):
            is_image = False
            filename_glob = "*"

        pairs = self.pairs(split)
        images = _Images(paths=[str(p.image) for p in pairs])
        masks = _Masks(paths=[str(p.mask) for p in pairs])
        return images & masks


class ToyWorldSource(PairedRasterSource):
    """The embedded default: a toy world generated on first use (see ``toyworld``).

    Args:
        root: directory of the toy world; generated there if missing (or its
            generation was interrupted). A complete toy world of other parameters there
            is never regenerated, and a folder holding anything else (your own data)
            never written to: both are a :class:`DataError`.
        tiles: number of tiles.
        size: tile size in pixels.
        seed: generator seed.
    """

    def __init__(self, root: str | Path, tiles: int = 8, size: int = 1024, seed: int = 0) -> None:
        super().__init__(root, "images/*.tif", "masks/*.tif", splits="splits.json")
        self.tiles, self.size, self.seed = tiles, size, seed

    def _is_current(self) -> bool:
        meta = self.root / "splits.json"
        if not meta.exists() or not is_toyworld(self.root):
            return False
        m = json.loads(meta.read_text())
        n = sum(len(m.get(s, [])) for s in ("train", "val", "test"))
        return (
            m.get("seed") == self.seed
            and m.get("size") == self.size
            and (n == self.tiles or (self.tiles < 3 and n >= self.tiles))
        )

    def prepare(self) -> None:
        """Generate the toy world unless it is there.

        Raises:
            DataError: ``root`` holds a complete toy world of other parameters (naming
                both, and the overrides that use it), or files of its own.
        """
        if self._is_current():
            return
        found = complete_world(self.root)
        if found is not None:
            raise DataError(self._other_world(found))
        generate(self.root, self.tiles, self.size, self.seed)

    def _other_world(self, found: dict[str, int]) -> str:
        """Why the complete toy world ``found`` in ``root`` is neither used nor replaced."""
        use = f"data.source.tiles={found['tiles']} data.source.size={found['size']}"
        if found["seed"] != self.seed:
            use += f" data.source.seed={found['seed']}"
        return (
            f"data.source.root={self.root} holds a toy world of {found['tiles']} tiles of "
            f"{found['size']} px (seed {found['seed']}), not the {self.tiles} tiles of "
            f"{self.size} px (seed {self.seed}) asked for; it is not regenerated. To use "
            f"it, set {use}; for the other, give another data.source.root (a new or empty "
            "folder)"
        )

    def all_pairs(self) -> list[TilePair]:
        self.prepare()
        return super().all_pairs()

    def split_names(self) -> dict[str, list[str]]:
        self.prepare()
        return super().split_names()


class ChesapeakeSource(TileSource):
    """Chesapeake Land Cover (Robinson et al. 2019), the paper's data, via torchgeo.

    Imagery is 4-band NAIP (``naip-new``); labels are the ``lc`` layer, whose value
    15 (no data) is mapped to class 0.

    Args:
        root: directory holding the extracted ``cvpr_chesapeake_landcover`` data
            (``spatial_index.geojson`` and ``*_tiles/`` folders).
        state: state prefix of the splits, ``md`` (Maryland) in the paper.
        download: download the archive (about 150 GB unpacked) when missing.
        checksum: verify the archive's MD5 after download.
    """

    label_map = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 15: 0}

    def __init__(
        self, root: str | Path, state: str = "md", download: bool = False, checksum: bool = False
    ) -> None:
        self.root = Path(root)
        self.state = state
        self.download = download
        self.checksum = checksum
        self._index: Any = None

    def _dataset(self) -> Any:
        from torchgeo.datasets import ChesapeakeCVPR, DatasetNotFoundError

        try:
            return ChesapeakeCVPR(
                root=str(self.root),
                splits=[f"{self.state}-{s}" for s in SPLITS],
                layers=["naip-new", "lc"],
                download=self.download,
                checksum=self.checksum,
            )
        except DatasetNotFoundError as err:
            raise DataError(
                f"{self.root}: Chesapeake Land Cover not found. Expected the extracted "
                "'cvpr_chesapeake_landcover.zip' there: spatial_index.geojson and folders "
                f"such as {self.state}_1m_2013_extended-debuffered-train_tiles/ holding "
                "m_*_naip-new.tif and m_*_lc.tif. Get it from the LILA Chesapeake Land "
                "Cover page (https://lila.science/datasets/chesapeakelandcover), or set "
                "data.source.download=true to let torchgeo fetch it."
            ) from err

    def prepare(self) -> None:
        self._index = self._dataset().index

    def _rows(self) -> Any:
        if self._index is None:
            self.prepare()
        return self._index

    def all_pairs(self) -> list[TilePair]:
        rows = self._rows()
        return [
            TilePair(
                Path(r["lc"]).stem.removesuffix("_lc"),
                self.root / r["naip-new"],
                self.root / r["lc"],
            )
            for _, r in rows.iterrows()
        ]

    def split_names(self) -> dict[str, list[str]]:
        rows = self._rows()
        out: dict[str, list[str]] = {}
        for s in SPLITS:
            sel = rows[rows["split"] == f"{self.state}-{s}"]
            out[s] = [Path(f).stem.removesuffix("_lc") for f in sel["lc"]]
        return out


class ImageFolderSource(FolderSource):
    """Non-georeferenced ``images/`` and ``masks/`` folders with matching stems.

    PNG, JPEG or TIFF, any band count. Example: ``../shared/data/dubai``. Masks hold
    class indices (1 band; a palette PNG is read as its palette indices) or, with
    ``colour_map``, RGB colours.

    Args:
        root: dataset directory.
        images: image sub-folder.
        masks: mask sub-folder.
        **rules: ``splits``, ``label_map``, ``colour_map`` of :class:`FolderSource`.
    """

    def __init__(
        self, root: str | Path, images: str = "images", masks: str = "masks", **rules: Any
    ) -> None:
        super().__init__(root, **rules)
        self.images, self.masks = images, masks

    def layout(self) -> str:
        return f"{self.images}/ and {self.masks}/ under it, with matching stems"

    def _files(self, sub: str) -> list[Path]:
        self._check_root()
        folder = self.root / sub
        if not folder.is_dir():
            raise DataError(
                f"{folder}: folder does not exist (expected {self.root}/"
                f"{self.images}/ and {self.root}/{self.masks}/ with matching stems)"
            )
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{folder}: folder holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        return files

    def all_pairs(self) -> list[TilePair]:
        return pair_by_stem(self._files(self.images), self._files(self.masks), str(self.root))
