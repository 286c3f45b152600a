"""Synthetic tiles on disk: one owner for their names, discovery, reading and records.

A synthesis run writes, for each mask tile ``<tile>`` and sample ``k``::

    <dir>/<tile>_s<k>.tif     on the mask's pixel grid, the data's bands and dtype
    <dir>/manifest.json       {"outputs": [{"path": ..., <provenance>}, ...]}

Each GeoTIFF carries its provenance (generator, checkpoint, ``lambda_div``, seed,
style, chip grid, ...) in the :data:`PROVENANCE_TAG` tag; the manifest is rebuilt from
those tags, so it always lists exactly the complete files. A plain ``<tile>.tif``
(imagery made elsewhere) counts as one more sample of ``<tile>``, after the numbered
ones. Mixing, metrics, figures and the report all find and describe synthetic tiles
through this module; :func:`tile_folder` finds, below a study's ``synthesis/`` folder,
the tile folder whose manifest records a given ``lambda_div``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from synthsat.atomic import write_text
from synthsat.data.checks import check_same_extent
from synthsat.data.errors import DataError
from synthsat.data.raster_io import open_raster, raster_info, read_raster

#: Synthetic tile file names: ``<mask stem>_s<sample index>.tif``.
SAMPLE_NAME = re.compile(r"^(?P<tile>.+)_s(?P<k>\d+)$")
#: File suffixes of synthetic tiles.
SUFFIXES = (".tif", ".tiff")
#: GeoTIFF tag holding a synthetic tile's provenance record (JSON).
PROVENANCE_TAG = "SYNTHSAT_PROVENANCE"
#: File name of the manifest in a synthetic tile directory.
MANIFEST = "manifest.json"
#: How many folder levels below a source root :func:`tile_folder` searches for manifests
#: (``results/<experiment>/synthesis/<stage>/tiles`` is 4 below ``results``).
SEARCH_DEPTH = 4


def output_name(tile: str, sample: int) -> str:
    """File name of sample ``sample`` of mask tile ``tile``: ``<tile>_s<sample>.tif``."""
    return f"{tile}_s{sample}.tif"


def _is_tile_file(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES and not path.name.startswith(".") and path.is_file()


def find_synthetic(source: str | Path, tile: str) -> list[Path]:
    """The synthetic samples of ``tile`` in ``source``: ``<tile>_s<k>.tif`` by ``k``,
    then a plain ``<tile>.tif`` if there is one."""
    numbered: list[tuple[int, Path]] = []
    plain: list[Path] = []
    for path in Path(source).iterdir():
        if not _is_tile_file(path):
            continue
        match = SAMPLE_NAME.match(path.stem)
        if match and match["tile"] == tile:
            numbered.append((int(match["k"]), path))
        elif path.stem == tile:
            plain.append(path)
    return [p for _, p in sorted(numbered)] + plain


def find_samples(source: str | Path, tiles: Sequence[str]) -> dict[str, list[Path]]:
    """The samples of each of ``tiles`` that has any (see :func:`find_synthetic`).

    Raises:
        DataError: if ``source`` is not a directory or holds no sample of any tile.
    """
    root = Path(source)
    if not root.is_dir():
        raise DataError(f"{root}: synthetic imagery directory does not exist")
    found = {tile: find_synthetic(root, tile) for tile in tiles}
    found = {tile: paths for tile, paths in found.items() if paths}
    if not found:
        others = sorted(p.name for p in root.iterdir() if _is_tile_file(p))
        raise DataError(
            f"{root}: no synthetic sample of the {len(tiles)} tile(s) asked for (expected "
            f"files named <tile>_s<k>.tif for tiles such as {', '.join(sorted(tiles)[:3])}; "
            f"found {', '.join(others[:5]) or 'no GeoTIFF'})"
        )
    return found


def read_sample(
    path: Path,
    shape: tuple[int, int],
    bands: int,
    real: str | Path,
    mask: str | Path | None = None,
) -> np.ndarray:
    """A synthetic tile (C, H, W) on its own grid, checked against its real tile.

    Args:
        path: the synthetic GeoTIFF.
        shape: (height, width) of the real tile; without ``mask`` the synthetic tile must
            have this size.
        bands: band count of the real imagery.
        real: the real tile's image path (for the message).
        mask: the real tile's mask (its native grid): given, the synthetic tile may lie on
            any grid that covers the mask's extent (a synthesis at another scale; see
            :func:`~synthsat.data.checks.check_same_extent`), as mixing reads it; bring it
            to the real tile's grid with :func:`~synthsat.data.cache.resample_image`.

    Raises:
        DataError: another band count, another size (without ``mask``), or a grid that
            does not cover the mask's extent.
    """
    info = raster_info(path)
    h, w = shape
    sized = (info.height, info.width) == (h, w)
    if info.count != bands or (not sized and mask is None):
        raise DataError(
            f"{path}: synthetic tile is {info.width}x{info.height} px with {info.count} "
            f"band(s), but its real tile {real} is {w}x{h} px with {bands} band(s)"
        )
    if mask is not None:
        native = raster_info(mask)
        if (info.height, info.width) != (native.height, native.width):
            check_same_extent(info, native)
    return read_raster(path)


def read_provenance(path: str | Path) -> dict[str, Any] | None:
    """The provenance record of a synthetic tile, or None if it has none."""
    with open_raster(path) as src:
        tag = src.tags().get(PROVENANCE_TAG)
    return json.loads(tag) if tag else None


def write_manifest(directory: str | Path) -> Path:
    """Rebuild ``<directory>/manifest.json`` from the provenance tags of its GeoTIFFs.

    Lists every complete synthetic tile (temporary files are never listed), sorted by
    file name; the manifest itself is written atomically.
    """
    out = Path(directory)
    entries = []
    for path in sorted(out.glob("*.tif")):
        record = read_provenance(path)
        if record is not None:
            entries.append({"path": path.name, **record})
    return write_text(out / MANIFEST, json.dumps({"outputs": entries}, indent=2))


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """What the manifest says of all outputs alike (e.g. generator, checkpoint,
    ``lambda_div``), with ``outputs``: their count; ``{}`` without a manifest.

    Raises:
        DataError: if the manifest is not one.
    """
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text()).get("outputs", [])
    except (json.JSONDecodeError, AttributeError) as err:
        raise DataError(f"{path}: not a synthesis manifest ({err})") from err
    if not entries:
        return {"outputs": 0}
    common = {
        k: v for k, v in entries[0].items() if k != "path" and all(e.get(k) == v for e in entries)
    }
    return {"outputs": len(entries), **common}


def describe_source(directory: str | Path) -> dict[str, Any]:
    """Which generator made a directory's tiles, from its manifest: ``generator``
    (``gan`` unless recorded otherwise, None without a manifest), ``lambda_div`` and
    ``checkpoint`` (None where unrecorded or not the same for every tile)."""
    manifest = read_manifest(directory)
    if not manifest:
        return {"generator": None, "lambda_div": None, "checkpoint": None}
    return {
        "generator": manifest.get("generator") or "gan",
        "lambda_div": manifest.get("lambda_div"),
        "checkpoint": manifest.get("checkpoint"),
    }


def manifest_folders(root: str | Path, depth: int = SEARCH_DEPTH) -> list[Path]:
    """The folders at most ``depth`` levels below ``root`` that hold a manifest, sorted.

    Hidden folders (``.hydra``, ...) are skipped, and so are the subfolders of a folder
    with a manifest (a tile folder).
    """
    found: list[Path] = []
    children = sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))
    for child in children:
        if (child / MANIFEST).is_file():
            found.append(child)
        elif depth > 1:
            found.extend(manifest_folders(child, depth - 1))
    return found


def manifest_lambda(directory: str | Path) -> float | None:
    """The ``lambda_div`` of the GAN that made a folder's tiles, as its manifest records it.

    None for a folder without a manifest, with tiles of several lambdas, or made by a
    control generator (e.g. ``classtexture``, whose manifest records ``lambda_div: null``
    and its name as ``generator``): such folders never match a lambda.
    """
    source = describe_source(directory)
    if source["generator"] != "gan" or source["lambda_div"] is None:
        return None
    return float(source["lambda_div"])


def _describe_lambda(directory: Path) -> str:
    lam = manifest_lambda(directory)
    if lam is not None:
        return f"lambda_div {lam:g}"
    generator = describe_source(directory)["generator"]
    if generator is None:
        return "no manifest"
    return f"{generator} (no lambda_div)" if generator != "gan" else "no single lambda_div"


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _holds_tiles(directory: Path) -> bool:
    """A tile folder: it holds a manifest or a GeoTIFF itself."""
    return (directory / MANIFEST).is_file() or any(_is_tile_file(p) for p in directory.iterdir())


def tile_folder(source: str | Path, lambda_div: float | None = None) -> Path:
    """The synthetic tile folder that ``mix.source`` and ``mix.lambda_div`` name.

    Without ``lambda_div``, ``source`` itself. With it, ``source`` is either a tile
    folder (it holds a manifest or GeoTIFFs), whose manifest must record that
    ``lambda_div``, or a folder *containing* tile folders (e.g. a study's
    ``results/<experiment>/synthesis``), searched :data:`SEARCH_DEPTH` levels down for
    the one tile folder whose manifest records it (:func:`manifest_lambda`; control
    generators' folders never match).

    Raises:
        DataError: ``source`` is no folder; a tile folder of another (or no recorded)
            lambda; no folder below ``source`` records ``lambda_div`` (the message lists
            the lambdas found and where); several do (the message lists them).
    """
    root = Path(source).expanduser()
    if lambda_div is None:
        return root
    lam = float(lambda_div)
    if not root.is_dir():
        raise DataError(f"mix.source {root}: synthetic image directory does not exist")
    if _holds_tiles(root):
        found = manifest_lambda(root)
        if found is not None and _same(found, lam):
            return root
        what = _describe_lambda(root)
        if what == "no manifest":
            raise DataError(
                f"mix.source {root}: no {MANIFEST} records the lambda_div of its tiles, so "
                f"mix.lambda_div={lam:g} cannot be checked; drop mix.lambda_div"
            )
        raise DataError(
            f"mix.source {root}: its {MANIFEST} records {what}, not mix.lambda_div={lam:g}"
        )
    folders = manifest_folders(root)
    matches = [f for f in folders if (m := manifest_lambda(f)) is not None and _same(m, lam)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        seen = "; ".join(
            f"{_describe_lambda(f)} in {f.relative_to(root).as_posix()}" for f in folders
        )
        raise DataError(
            f"mix.source {root}: no synthetic tile folder within {SEARCH_DEPTH} levels records "
            f"lambda_div {lam:g} in its {MANIFEST}; found " + (seen or f"no {MANIFEST}")
        )
    raise DataError(
        f"mix.source {root}: {len(matches)} synthetic tile folders record lambda_div {lam:g}: "
        f"{', '.join(f.relative_to(root).as_posix() for f in matches)}; set mix.source to "
        "one of them (or to a folder holding only one)"
    )
