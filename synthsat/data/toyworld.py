"""Toy world: the embedded default dataset.

A deterministic, georeferenced land-cover world made from nothing but a seed.
Each tile is a 4-band (R, G, B, NIR) uint8 GeoTIFF and a single-band uint8
land-cover GeoTIFF on the same grid (UTM zone 18N, 1 m pixels, distinct tile
origins). Classes follow the Chesapeake Land Cover scheme used by the paper:

====  ==================
 0    no-data
 1    water
 2    tree canopy
 3    low vegetation
 4    barren
 5    impervious (buildings and other)
 6    impervious road
====  ==================

Masks are spatially coherent landscapes (smooth noise fields for vegetation and
barren land, a river and lakes, a road network, rectangular buildings along the
roads); the imagery follows the masks with class-specific spectra, texture,
illumination and sensor noise, so a segmentation model has to learn spectra and
texture rather than a colour look-up.

Usage::

    python -m synthsat.data.toyworld --out data/toyworld --tiles 8 --size 1024 --seed 0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from scipy import fft as sfft

from synthsat.atomic import write_with
from synthsat.data.errors import DataError
from synthsat.data.tiles import default_splits

#: File that marks a folder as a toy world written by :func:`generate`.
MARKER = ".synthsat-toyworld"

CLASSES: tuple[str, ...] = (
    "no-data",
    "water",
    "tree canopy",
    "low vegetation",
    "barren",
    "impervious",
    "impervious road",
)
NODATA, WATER, TREE, LOWVEG, BARREN, IMPERVIOUS, ROAD = range(7)
BANDS: tuple[str, ...] = ("red", "green", "blue", "nir")
CRS_EPSG = 32618  # WGS 84 / UTM zone 18N (Maryland)
ORIGIN = (350_000.0, 4_320_000.0)  # upper-left corner of tile 0 (easting, northing)

# Mean reflectance per class, as uint8 digital numbers (R, G, B, NIR).
SPECTRA = np.array(
    [
        [0, 0, 0, 0],  # no-data
        [28, 48, 62, 14],  # water: dark, darkest in NIR
        [42, 72, 38, 168],  # tree canopy: dark visible, bright NIR
        [96, 134, 72, 196],  # low vegetation: brighter green, brightest NIR
        [172, 150, 118, 128],  # barren: bright, flat spectrum
        [150, 148, 152, 118],  # impervious: grey roofs and lots
        [88, 88, 94, 70],  # road: dark asphalt
    ],
    dtype=np.float32,
)
# Texture amplitude (DN) and correlation length (px) per class.
TEXTURE = {
    WATER: (3.0, 24.0),
    TREE: (22.0, 2.5),
    LOWVEG: (8.0, 6.0),
    BARREN: (14.0, 4.0),
    IMPERVIOUS: (6.0, 1.5),
    ROAD: (4.0, 1.0),
}


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Gaussian-filtered white noise with correlation length ``scale`` px, standardised."""
    noise = rng.standard_normal(shape).astype(np.float32)
    fy = np.fft.fftfreq(shape[0]).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(shape[1]).astype(np.float32)[None, :]
    kernel = np.exp(-2.0 * (np.pi * scale) ** 2 * (fx**2 + fy**2))
    field = sfft.irfft2(sfft.rfft2(noise, workers=-1) * kernel, s=shape, workers=-1).astype(
        np.float32
    )
    field -= field.mean()
    std = field.std()
    return field / std if std > 0 else field


def _draw_band(mask: np.ndarray, p0: np.ndarray, p1: np.ndarray, width: float, value: int) -> None:
    """Paint a straight band of ``width`` px from p0 to p1 (row, col) into mask."""
    h, w = mask.shape
    lo = np.floor(np.minimum(p0, p1) - width).astype(int).clip(0)
    hi = np.ceil(np.maximum(p0, p1) + width).astype(int) + 1
    hi = np.minimum(hi, [h, w])
    if (hi <= lo).any():
        return
    rr, cc = np.mgrid[lo[0] : hi[0], lo[1] : hi[1]].astype(np.float32)
    d = p1 - p0
    length2 = float((d**2).sum()) or 1.0
    t = np.clip(((rr - p0[0]) * d[0] + (cc - p0[1]) * d[1]) / length2, 0.0, 1.0)
    dist2 = (rr - p0[0] - t * d[0]) ** 2 + (cc - p0[1] - t * d[1]) ** 2
    region = mask[lo[0] : hi[0], lo[1] : hi[1]]
    region[dist2 <= (width / 2) ** 2] = value


def _river(rng: np.random.Generator, mask: np.ndarray, size: int) -> None:
    """A meandering river crossing the tile."""
    horizontal = rng.random() < 0.5
    n = 24
    t = np.linspace(-0.1, 1.1, n) * size
    offset = rng.uniform(0.2, 0.8) * size
    meander = np.cumsum(rng.normal(0, size * 0.03, n))
    meander -= np.linspace(0, meander[-1], n)
    other = offset + meander
    pts = np.stack([other, t], 1) if horizontal else np.stack([t, other], 1)
    width = rng.uniform(0.02, 0.045) * size
    for a, b in zip(pts[:-1], pts[1:]):
        _draw_band(mask, a.astype(np.float32), b.astype(np.float32), width, WATER)


def _roads(rng: np.random.Generator, size: int) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """A loose grid of slightly slanted roads: (start, end, width) in (row, col) px."""
    roads = []
    for horizontal in (True, False):
        count = rng.integers(1, 3 + size // 512)
        for pos in np.sort(rng.uniform(0.08, 0.92, count)) * size:
            tilt = rng.normal(0, 0.06) * size
            a = np.array([pos - tilt / 2, -8.0], dtype=np.float32)
            b = np.array([pos + tilt / 2, size + 8.0], dtype=np.float32)
            if not horizontal:
                a, b = a[::-1].copy(), b[::-1].copy()
            roads.append((a, b, float(rng.uniform(6, 11))))
    return roads


def make_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """A coherent land-cover landscape of ``size`` x ``size`` px."""
    shape = (size, size)
    veg = smooth_noise(rng, shape, size / 16)
    dry = smooth_noise(rng, shape, size / 24) + 0.4 * smooth_noise(rng, shape, size / 80)
    mask = np.full(shape, LOWVEG, dtype=np.uint8)
    mask[veg > 0.35] = TREE
    mask[(dry > 0.9) & (veg < 0.2)] = BARREN
    lakes = smooth_noise(rng, shape, size / 20)
    mask[lakes > 2.1] = WATER
    if rng.random() < 0.8:
        _river(rng, mask, size)
    water = mask == WATER
    roads = _roads(rng, size)
    road_mask = np.zeros(shape, dtype=np.uint8)
    for a, b, width in roads:
        _draw_band(road_mask, a, b, width, 1)
    # Buildings: rectangles set back from the roads, on dry land.
    for a, b, width in roads:
        d = b - a
        length = float(np.hypot(*d))
        unit = d / length
        normal = np.array([-unit[1], unit[0]], dtype=np.float32)
        for s in np.arange(rng.uniform(5, 30), length, rng.uniform(26, 44)):
            for side in (-1.0, 1.0):
                if rng.random() < 0.35:
                    continue
                bh, bw = rng.uniform(10, 24), rng.uniform(10, 26)
                centre = a + unit * s + normal * side * (width / 2 + 5 + bh / 2)
                r0, c0 = int(centre[0] - bh / 2), int(centre[1] - bw / 2)
                r1, c1 = int(centre[0] + bh / 2), int(centre[1] + bw / 2)
                r0, c0, r1, c1 = max(r0, 0), max(c0, 0), min(r1, size), min(c1, size)
                if r1 - r0 < 4 or c1 - c0 < 4 or water[r0:r1, c0:c1].any():
                    continue
                mask[r0:r1, c0:c1] = IMPERVIOUS
    mask[(road_mask == 1) & ~water] = ROAD
    mask[(road_mask == 1) & water] = ROAD  # bridges
    if rng.random() < 0.25:  # a no-data wedge at one corner, as in real mosaics
        rr, cc = np.mgrid[0:size, 0:size]
        mask[rr + cc < rng.uniform(0.05, 0.2) * size] = NODATA
    return mask


def make_image(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """4-band uint8 imagery following ``mask``: spectra, texture, illumination, noise."""
    size = mask.shape[0]
    shape = mask.shape
    image = SPECTRA[mask].transpose(2, 0, 1).copy()  # (4, H, W)
    # Per-building roof colour.
    roof_shift = smooth_noise(rng, shape, 6.0) * 18.0
    for cls, (amp, scale) in TEXTURE.items():
        sel = mask == cls
        if not sel.any():
            continue
        tex = smooth_noise(rng, shape, scale)[sel] * amp
        # Vegetation texture is stronger in NIR; roofs shift all bands together.
        gains = np.array([1.0, 1.0, 1.0, 1.6 if cls in (TREE, LOWVEG) else 1.0], np.float32)
        image[:, sel] += gains[:, None] * tex[None, :]
        if cls == IMPERVIOUS:
            image[:, sel] += roof_shift[sel][None, :]
    # Soft class boundaries (sensor point-spread), then smooth illumination and noise.
    fy = np.fft.fftfreq(size).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(size).astype(np.float32)[None, :]
    psf = np.exp(-2.0 * (np.pi * 0.8) ** 2 * (fx**2 + fy**2))
    image = sfft.irfft2(sfft.rfft2(image, workers=-1) * psf, s=shape, workers=-1).astype(np.float32)
    illumination = 1.0 + 0.08 * smooth_noise(rng, shape, size / 4)
    image *= illumination[None]
    image += rng.normal(0.0, 2.5, image.shape).astype(np.float32)
    image[:, mask == NODATA] = 0.0
    return np.clip(np.rint(image), 0, 255, out=image).astype(np.uint8)


def tile_name(index: int) -> str:
    """File stem of tile ``index``."""
    return f"tile_{index:03d}"


def _write_atomic(path: Path, array: np.ndarray, profile: dict) -> None:
    def write(tmp: Path) -> None:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(array)

    write_with(path, write)


def is_toyworld(root: str | Path) -> bool:
    """Whether ``root`` holds a toy world written by :func:`generate`.

    Recognised by the :data:`MARKER` file, or (toy worlds written before the marker
    existed) by a ``splits.json`` with the toy world's classes and seed, next to nothing
    but ``images/tile_NNN.tif`` and ``masks/tile_NNN.tif``.
    """
    root = Path(root)
    if (root / MARKER).is_file():
        return True
    try:
        meta = json.loads((root / "splits.json").read_text())
    except (OSError, ValueError):
        return False
    toy_classes = {str(i): c for i, c in enumerate(CLASSES)}
    if not isinstance(meta, dict) or meta.get("classes") != toy_classes or "seed" not in meta:
        return False
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.is_dir():
            if str(rel) not in ("images", "masks"):
                return False
        elif str(rel) != "splits.json" and not (
            rel.parent.name in ("images", "masks") and rel.name.startswith("tile_")
        ):
            return False
    return True


def complete_world(root: str | Path) -> dict[str, int] | None:
    """The ``tiles``, ``size`` and ``seed`` of the complete toy world in ``root`` (None:
    none there, or one whose generation did not finish).

    Complete: a toy world (:func:`is_toyworld`) whose ``splits.json`` (written last)
    records its size and seed, with the image and mask of every tile it lists.
    """
    root = Path(root)
    if not is_toyworld(root):
        return None
    try:
        meta = json.loads((root / "splits.json").read_text())
        names = sorted({str(n) for s in ("train", "val", "test") for n in meta.get(s, [])})
        size, seed = int(meta["size"]), int(meta["seed"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    files = [root / sub / f"{name}.tif" for name in names for sub in ("images", "masks")]
    if not names or not all(f.is_file() for f in files):
        return None
    return {"tiles": len(names), "size": size, "seed": seed}


def check_writable(out: str | Path) -> None:
    """Refuse to generate into a folder that is neither empty nor a toy world.

    Raises:
        DataError: ``out`` holds other files (perhaps the user's own data).
    """
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; the toy world needs a folder")
    if not any(out.iterdir()) or is_toyworld(out):
        return
    raise DataError(
        f"{out}: the folder holds files that the toy world did not write (no {MARKER} "
        "marker), so it will not generate there. If this is your own data, point a "
        "source at it instead, e.g. data=rasters (PairedRasterSource, GeoTIFF images/ and "
        f"masks/) data.source.root={out} data.bands=N 'data.classes=[...]', or ImageFolderSource "
        "for PNG / JPEG folders; for the toy world, give an empty or new folder"
    )


def generate(out: str | Path, tiles: int = 8, size: int = 1024, seed: int = 0) -> Path:
    """Write the toy world to ``out`` and return it.

    Layout: ``images/tile_NNN.tif`` (4-band uint8), ``masks/tile_NNN.tif`` (1-band
    uint8), ``splits.json`` and the :data:`MARKER` file. The same arguments always give
    the same bytes. Only an empty (or new) folder, or one holding a toy world, is
    written to.

    Args:
        out: output directory (created).
        tiles: number of tiles.
        size: tile width and height in pixels (>= 64).
        seed: random seed.

    Raises:
        DataError: ``out`` holds anything but a toy world.
    """
    if tiles < 1:
        raise ValueError(f"toyworld: tiles must be >= 1, got {tiles}")
    if size < 64:
        raise ValueError(f"toyworld: size must be >= 64 px, got {size}")
    out = Path(out)
    check_writable(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(
        json.dumps({"tiles": tiles, "size": size, "seed": seed}, sort_keys=True) + "\n"
    )
    names = [tile_name(i) for i in range(tiles)]
    for sub in ("images", "masks"):  # tiles of an earlier, larger toy world
        for stale in sorted((out / sub).glob("tile_*.tif")):
            if stale.stem not in names:
                stale.unlink()
    base = {
        "driver": "GTiff",
        "height": size,
        "width": size,
        "dtype": "uint8",
        "crs": CRS.from_epsg(CRS_EPSG),
        "tiled": True,
        "blockxsize": 256 if size >= 256 else 16 * (size // 16),
        "blockysize": 256 if size >= 256 else 16 * (size // 16),
        "compress": "deflate",
    }
    columns = int(np.ceil(np.sqrt(tiles)))
    for i, name in enumerate(names):
        rng = np.random.default_rng([seed, i])
        mask = make_mask(rng, size)
        image = make_image(rng, mask)
        col, row = i % columns, i // columns
        transform = from_origin(
            ORIGIN[0] + col * (size + 128), ORIGIN[1] - row * (size + 128), 1, 1
        )
        _write_atomic(
            out / "images" / f"{name}.tif",
            image,
            {**base, "count": 4, "transform": transform, "photometric": "minisblack"},
        )
        _write_atomic(
            out / "masks" / f"{name}.tif", mask[None], {**base, "count": 1, "transform": transform}
        )
    meta = {
        **default_splits(names),
        "classes": {str(i): c for i, c in enumerate(CLASSES)},
        "bands": list(BANDS),
        "seed": seed,
        "size": size,
    }
    (out / "splits.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--tiles", type=int, default=8)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        out = generate(args.out, args.tiles, args.size, args.seed)
    except (DataError, ValueError) as err:
        parser.exit(2, f"error: {err}\n")
    print(f"toy world: {args.tiles} tiles of {args.size} px written to {out}")


if __name__ == "__main__":
    main()
