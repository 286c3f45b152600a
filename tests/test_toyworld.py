"""Toy world: determinism, georeference, classes and image/mask agreement."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import rasterio

from synthsat.data import toyworld


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = toyworld.generate(tmp_path / "a", tiles=2, size=96, seed=3)
    b = toyworld.generate(tmp_path / "b", tiles=2, size=96, seed=3)
    c = toyworld.generate(tmp_path / "c", tiles=2, size=96, seed=4)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_georeference_and_layout(toy_root: Path) -> None:
    origins = set()
    for i in range(4):
        with (
            rasterio.open(toy_root / "images" / f"tile_{i:03d}.tif") as img,
            rasterio.open(toy_root / "masks" / f"tile_{i:03d}.tif") as msk,
        ):
            assert img.count == 4 and msk.count == 1
            assert img.dtypes[0] == "uint8" and msk.dtypes[0] == "uint8"
            assert img.crs.to_epsg() == toyworld.CRS_EPSG and img.crs.is_projected
            assert img.crs == msk.crs and img.transform == msk.transform
            assert (img.res) == (1.0, 1.0)
            assert (img.width, img.height) == (128, 128)
            origins.add((img.transform.c, img.transform.f))
    assert len(origins) == 4
    splits = json.loads((toy_root / "splits.json").read_text())
    assert splits["train"] == ["tile_000", "tile_001"]
    assert splits["val"] == ["tile_002"] and splits["test"] == ["tile_003"]
    assert len(splits["classes"]) == 7


def test_landscape_is_coherent_and_imagery_follows_mask() -> None:
    rng = np.random.default_rng(1)
    mask = toyworld.make_mask(rng, 512)
    image = toyworld.make_image(rng, mask).astype(np.float32)
    present = set(np.unique(mask).tolist())
    assert {toyworld.TREE, toyworld.LOWVEG, toyworld.ROAD, toyworld.IMPERVIOUS} <= present
    # Spatially coherent: most pixels share the class of their right neighbour.
    assert (mask[:, 1:] == mask[:, :-1]).mean() > 0.9
    nir, red = image[3], image[0]
    veg = np.isin(mask, [toyworld.TREE, toyworld.LOWVEG])
    assert nir[veg].mean() > 1.5 * nir[mask == toyworld.ROAD].mean()
    if (mask == toyworld.WATER).any():
        assert nir[mask == toyworld.WATER].mean() < nir[veg].mean() / 3
    # Texture: trees vary more than water within their class.
    assert red[mask == toyworld.TREE].std() > 5
