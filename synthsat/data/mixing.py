"""Real / synthetic mixing of training patches.

Synthetic imagery comes from a directory (``mix.source``, one per generator, e.g.
one per diversity weight lambda) laid out as the synthesis job writes it::

    <source>/<tile stem>_s<k>.tif     k = 0..K-1 samples per tile (GeoTIFF)
    <source>/<tile stem>.tif          also accepted: a single sample
    <source>/manifest.json            optional, unless mix.lambda_div picks the folder

(:mod:`synthsat.data.synthetic_tiles` owns these names.) With ``mix.lambda_div``,
``mix.source`` may instead be a folder *containing* tile folders (e.g. a study's
``results/<experiment>/synthesis``): :func:`resolve_mix` picks the one whose manifest
records that lambda (:func:`~synthsat.data.synthetic_tiles.tile_folder`).

A synthetic image is drawn for the *mask* of its tile, so it covers the mask's extent
and has the data's band count; every training tile needs one. It lies on the mask's
pixel grid (same width and height and, for georeferenced data, same CRS and transform)
or, written by a synthesis at another scale, on that grid scaled (the mask's transform
scaled to the image's size; without a CRS, the size alone says it). Synthetic tiles are
checked and cached like real ones (a synthetic tile is a
``TilePair(name, image=<synthetic file>, mask=<real mask>)`` loaded by the caller's
tile loader, e.g. :meth:`~synthsat.data.cache.TileCache.load_synthetic`, which
resamples an image on another grid to the training grid, ``data.scale``, directly from
its own grid), so patches are memory-map slices and 1 m and 4 m sources both work.

Modes (``N`` = ``data.patches_per_epoch``, ``r`` = ``mix.ratio``, ``k`` = ``mix.copies``):

``replace`` (the paper's semantics)
    ``N`` patches per epoch at the usual random positions; each patch is cut from the
    co-located synthetic image instead of the real one with probability ``r`` (same
    mask), choosing one of the tile's ``K`` samples uniformly. ``r = 0`` is real-only
    (no synthetic source needed), ``r = 1`` synthetic-only with ``N`` patches.

``add``
    The pool of images is the real tiles plus ``k`` synthetic versions of each (samples
    ``s0 .. s{k-1}``; at least ``k`` must exist). The epoch holds
    ``round((1 - r) * N)`` real patches plus ``k * N`` synthetic ones (``N`` per
    version), drawn in random order. So ``r = 0, copies = k`` is the real data plus
    ``k`` synthetic copies, and ``r = 1, copies = k`` is synthetic-only with ``k``
    versions (the paper's 2.0 and 3.0 runs, which see ``k`` times the data per epoch).

New layouts (``mix.layouts``, a folder written by ``python -m synthsat.layouts``)
    The synthetic patches come from new land-cover masks instead of the training tiles'
    own: ``mix.source`` then holds the layouts rendered by ``synthesize`` (``<layout>_s<k>.tif``
    for each layout of ``<layouts>/layouts.json``) and each synthetic patch is cut from
    such an image *with its layout's mask* (``<layouts>/masks/<layout>.tif``, class
    indices). Real patches are cut as always. Replace mode: a patch is synthetic with
    probability ``r``, from a layout drawn by area and one of its samples drawn
    uniformly; add mode: ``round((1 - r) * N)`` real patches plus ``k * N`` synthetic
    ones from the layouts' samples ``s0 .. s{k-1}``. The layouts must have been made
    for the data's classes (their record says which).

Validation and test data never pass through here: they are always real.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from synthsat.data.cache import CachedTile
from synthsat.data.datasets import Normalizer, PatchSpec, RandomPatchDataset
from synthsat.data.errors import DataError
from synthsat.data.synthetic_tiles import find_synthetic, output_name, tile_folder
from synthsat.data.tiles import TilePair
from synthsat.schemas import MIX_MODES

MODES = MIX_MODES  # one list: the schema checks it when the config is composed
MIX_KEYS = {"ratio", "mode", "source", "copies", "lambda_div", "layouts"}
#: The record of a layouts folder (:mod:`synthsat.layouts.writer`).
LAYOUTS_RECORD = "layouts.json"

#: Loads (checks and caches) a tile pair, e.g. :meth:`~synthsat.data.cache.TileCache.load`.
TileLoader = Callable[[TilePair], CachedTile]


def load_synthetic_tiles(
    real: list[CachedTile], load: TileLoader, source: str | Path, need: int = 1
) -> list[list[CachedTile]]:
    """Check and load the synthetic samples of every real training tile.

    Args:
        real: the real training tiles.
        load: loads a tile pair (the synthetic image with its real mask); it checks the
            sample against its mask's grid (or extent) and the data's band count.
        source: directory of synthetic GeoTIFFs (see the module docstring).
        need: samples each tile must have.

    Returns:
        per real tile (in order), its loaded samples.

    Raises:
        DataError: missing directory or samples, or a sample that does not match its
            mask's grid or the data's band count.
    """
    root = Path(source).expanduser()
    if not root.is_dir():
        raise DataError(f"mix.source {root}: synthetic image directory does not exist")
    result: list[list[CachedTile]] = []
    for tile in real:
        paths = find_synthetic(root, tile.name)
        if len(paths) < need:
            have = f"only {len(paths)} ({', '.join(p.name for p in paths)})" if paths else "none"
            last = f" .. _s{need - 1}.tif" if need > 1 else ""
            raise DataError(
                f"mix.source {root}: training tile '{tile.name}' needs {need} synthetic "
                f"sample(s) but has {have}; expected {root / output_name(tile.name, 0)}{last}"
            )
        result.append([load(TilePair(p.stem, p, tile.pair.mask)) for p in paths])
    return result


def layout_masks(layouts: str | Path, classes: Sequence[str] | None = None) -> list[TilePair]:
    """The layouts of a layouts folder, in its record's order, as ``TilePair(name,
    image=<placeholder image>, mask=<layout mask>)``.

    Args:
        layouts: a folder written by ``python -m synthsat.layouts`` (``mix.layouts``).
        classes: the data's classes, which the layouts must have been made for (None:
            not checked).

    Raises:
        DataError: no such folder, no (or a bad) ``layouts.json`` there, layouts made for
            other classes, or a layout's mask missing.
    """
    root = Path(layouts).expanduser()
    record_path = root / LAYOUTS_RECORD
    if not root.is_dir():
        raise DataError(f"mix.layouts {root}: layouts folder does not exist")
    if not record_path.is_file():
        raise DataError(
            f"mix.layouts {root}: not a layouts folder (no {LAYOUTS_RECORD}); make one with "
            "python -m synthsat.layouts method=recombine|learned out=DIR"
        )
    try:
        record = json.loads(record_path.read_text())
        names = [str(entry["name"]) for entry in record["layouts"]]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(f"{record_path}: not a layouts record ({err!r})") from err
    if not names:
        raise DataError(f"{record_path}: records no layout")
    made_for = record.get("classes")
    if classes is not None and made_for is not None and list(made_for) != list(classes):
        raise DataError(
            f"mix.layouts {root}: its layouts were made for the classes {list(made_for)}, "
            f"but the data has {list(classes)}"
        )
    pairs = []
    for name in names:
        mask = root / "masks" / f"{name}.tif"
        if not mask.is_file():
            raise DataError(f"mix.layouts {root}: layout '{name}' has no mask {mask}")
        pairs.append(TilePair(name, root / "images" / f"{name}.tif", mask))
    return pairs


def load_layout_tiles(
    layouts: list[TilePair], load: TileLoader, source: str | Path, need: int = 1
) -> list[list[CachedTile]]:
    """Check and load the rendered samples of every layout, each with its layout's mask.

    Args:
        layouts: the layouts (:func:`layout_masks`).
        load: loads a tile pair (a rendered image with its layout mask, class indices);
            it checks the sample against its mask's grid (or extent) and the bands.
        source: directory of the rendered layouts, ``<layout>_s<k>.tif``.
        need: samples each layout must have.

    Returns:
        per layout (in order), its loaded samples.

    Raises:
        DataError: missing directory or samples, or a sample that does not match its
            layout's grid or the data's band count.
    """
    root = Path(source).expanduser()
    if not root.is_dir():
        raise DataError(f"mix.source {root}: synthetic image directory does not exist")
    result: list[list[CachedTile]] = []
    for layout in layouts:
        paths = find_synthetic(root, layout.name)
        if len(paths) < need:
            have = f"only {len(paths)}" if paths else "none"
            raise DataError(
                f"mix.source {root}: layout '{layout.name}' of mix.layouts "
                f"{layout.mask.parent.parent} needs {need} rendered sample(s) but has {have}; "
                f"expected {root / output_name(layout.name, 0)} (render the layouts with "
                "synthesize data=rasters data.source.root=<layouts folder>, as their "
                f"{LAYOUTS_RECORD} says)"
            )
        result.append([load(TilePair(p.stem, p, layout.mask)) for p in paths])
    return result


class _VersionMixDataset(RandomPatchDataset, ABC):
    """Random training patches cut from a real tile with ``real_probability``, else from
    one of ``versions``: what a subclass mixes in (each tile's synthetic versions, or
    each new layout's renderings), kept by :meth:`keep`.

    Args:
        tiles: real training tiles.
        versions: per tile (:attr:`per_tile`) or per layout, its images to mix in (on
            the training grid).
        real_probability: chance that a patch is cut from a real tile.
        patch_size: patch side in pixels.
        length: patches per epoch.
        normalize: band normaliser (the real data's).
        ignore_index: mask fill value for padding.
        augment: random flips and 90-degree rotations.
    """

    #: whether ``versions`` holds one list per real tile.
    per_tile = False
    #: the error of a missing version when ``real_probability`` < 1.
    missing = "every version list needs an image when real_probability < 1"

    def __init__(
        self,
        tiles: list[CachedTile],
        versions: list[list[CachedTile]],
        real_probability: float,
        patch_size: int,
        length: int,
        normalize: Normalizer,
        ignore_index: int,
        augment: bool = True,
    ) -> None:
        super().__init__(tiles, patch_size, length, normalize, ignore_index, augment=augment)
        if self.per_tile and len(versions) != len(tiles):
            raise ValueError(f"{len(versions)} synthetic tile lists for {len(tiles)} tiles")
        if not 0.0 <= real_probability <= 1.0:
            raise ValueError(f"real_probability must be in [0, 1], got {real_probability}")
        if real_probability < 1.0 and (not versions or any(not s for s in versions)):
            raise ValueError(self.missing)
        self.real_probability = real_probability
        self.keep(versions)

    @abstractmethod
    def keep(self, versions: list[list[CachedTile]]) -> None:
        """Keeps the checked ``versions``."""


class MixedPatchDataset(_VersionMixDataset):
    """Random training patches cut from the real image or a synthetic version of it.

    ``versions`` (arguments as :class:`_VersionMixDataset`): per tile, its synthetic
    versions, one chosen uniformly for a synthetic patch.
    """

    per_tile = True
    missing = "every tile needs a synthetic version when real_probability < 1"

    def keep(self, versions: list[list[CachedTile]]) -> None:
        """Keeps each tile's synthetic versions (:attr:`synthetic`)."""
        self.synthetic = versions

    def choose_image(self, tile_index: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
        """The real image with ``real_probability``, else one of the tile's synthetic ones."""
        if rng.random() < self.real_probability:
            return self.tiles[tile_index].image, False
        versions = self.synthetic[tile_index]
        return versions[int(rng.integers(len(versions)))].image, True


class LayoutMixDataset(_VersionMixDataset):
    """Random training patches cut from the real tiles, or from rendered new layouts with
    the layouts' own masks (``mix.layouts``).

    ``versions`` (arguments as :class:`_VersionMixDataset`): per layout, its rendered
    samples (image: the rendering, mask: the layout's); a synthetic patch's layout is
    drawn by area, and one of its samples uniformly.
    """

    missing = "every layout needs a rendered sample when real_probability < 1"

    def keep(self, versions: list[list[CachedTile]]) -> None:
        """Keeps the layouts' samples (:attr:`layouts`) and their draw weights by area."""
        self.layouts = versions
        area = np.array([s[0].shape[0] * s[0].shape[1] for s in versions if s], np.float64)
        self.layout_weights = area / area.sum() if area.size else area

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = self._rng(index)
        if rng.random() < self.real_probability:
            tile = self.tiles[int(rng.choice(len(self.tiles), p=self.weights))]
            row, col = self.position(tile, rng)
            return self.cut(tile, tile.image, row, col, rng, synthetic=False)
        versions = self.layouts[int(rng.choice(len(self.layouts), p=self.layout_weights))]
        sample = versions[int(rng.integers(len(versions)))]
        row, col = self.position(sample, rng)
        return self.cut(sample, sample.image, row, col, rng, synthetic=True)


def resolve_mix(mix_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``mix_cfg`` with ``source`` the synthetic tile folder that ``source`` and
    ``lambda_div`` name (see :func:`~synthsat.data.synthetic_tiles.tile_folder`).

    Without ``lambda_div``, or with ``source`` already the tile folder of that lambda,
    the settings are returned unchanged; a folder found below ``source`` replaces it
    (absolute path).

    Raises:
        DataError: ``lambda_div`` without ``source``, or a ``source`` that names no
            single tile folder of that lambda.
    """
    mix = dict(mix_cfg)
    lam = mix.get("lambda_div")
    if lam is None:
        return mix
    source = mix.get("source")
    if source is None or str(source) == "":
        raise DataError(
            f"mix.lambda_div={lam} needs mix.source: a synthetic tile folder, or a folder "
            "holding them (e.g. results/<experiment>/synthesis)"
        )
    folder = tile_folder(source, lam)
    if folder != Path(source).expanduser():
        mix["source"] = str(folder.resolve())
    return mix


def _mix_settings(mix_cfg: Mapping[str, Any]) -> tuple[float, str, Any, int]:
    unknown = set(mix_cfg) - MIX_KEYS
    if unknown:
        raise ValueError(f"unknown mix setting(s) {sorted(unknown)}; expected {sorted(MIX_KEYS)}")
    ratio = float(mix_cfg.get("ratio") or 0.0)
    mode = str(mix_cfg.get("mode") or "replace")
    copies = int(mix_cfg.get("copies") if mix_cfg.get("copies") is not None else 1)
    if mode not in MODES:
        raise ValueError(f"mix.mode must be one of {MODES}, got '{mode}'")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mix.ratio must be in [0, 1], got {ratio}")
    if mode == "add" and copies < 1:
        raise ValueError(f"mix.copies must be >= 1 in add mode, got {copies}")
    return ratio, mode, mix_cfg.get("source"), copies


def build_mixed_dataset(
    real: list[CachedTile],
    load: TileLoader,
    patches: PatchSpec,
    mix_cfg: Mapping[str, Any],
    load_layout: TileLoader | None = None,
    classes: Sequence[str] | None = None,
) -> Dataset:
    """The training dataset of ``real`` tiles with synthetic imagery mixed in.

    Args:
        real: the real training tiles.
        load: loads a synthetic tile pair (see :func:`load_synthetic_tiles`).
        patches: patch size, patches per epoch (``N``), normalisation, padding and
            augmentation of the training patches.
        mix_cfg: ``ratio`` (0..1), ``mode`` (``replace`` or ``add``), ``source``
            (directory of synthetic GeoTIFFs, as :func:`resolve_mix` returns it),
            ``copies`` (synthetic versions per tile in ``add`` mode) and ``layouts`` (a
            layouts folder whose rendered masks ``source`` holds, or None); see the
            module docstring. ``lambda_div`` is not read here: :func:`resolve_mix` uses it.
        load_layout: loads a rendered layout with its layout mask (class indices, no
            label or colour map); needed with ``layouts``.
        classes: the data's classes, checked against the layouts' (None: not checked).

    Returns:
        a plain :class:`~synthsat.data.datasets.RandomPatchDataset` for real-only
        settings (``replace`` with ratio 0), a :class:`LayoutMixDataset` with
        ``layouts``, else a :class:`MixedPatchDataset`.
    """
    ratio, mode, source, copies = _mix_settings(mix_cfg)
    n = patches.length
    if mode == "replace" and ratio == 0.0:
        return RandomPatchDataset(real, **patches.dataset_kwargs())
    if source is None or str(source) == "":
        raise ValueError(
            f"mix.ratio={ratio} in '{mode}' mode needs mix.source (a directory "
            "of synthetic GeoTIFFs)"
        )
    layouts = mix_cfg.get("layouts")
    dataset: type[_VersionMixDataset] = MixedPatchDataset
    versions = partial(load_synthetic_tiles, real, load, source)
    if layouts is not None and str(layouts) != "":
        pairs = layout_masks(layouts, classes)
        dataset = LayoutMixDataset
        versions = partial(load_layout_tiles, pairs, load_layout or load, source)
    if mode == "replace":
        mixed = versions(need=1)
        real_probability, length = 1.0 - ratio, n
    else:
        mixed = [s[:copies] for s in versions(need=copies)]
        n_real = round((1.0 - ratio) * n)
        length = n_real + copies * n
        real_probability = n_real / length
    kwargs = {**patches.dataset_kwargs(), "length": length}
    return dataset(real, mixed, real_probability, **kwargs)
