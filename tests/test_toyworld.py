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


# -- issue 25: a complete toy world is never regenerated -----------------------------------
def _stamps(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_a_complete_toy_world_of_other_parameters_is_never_replaced(tmp_path: Path) -> None:
    """``python -m synthsat.data.toyworld --out DIR --tiles 3 --size 64``, then a job with
    the config's default world on DIR: one line naming both and the matching overrides
    (the 3-tile world was replaced by the config's 8 tiles of 1024 px)."""
    import pytest

    from synthsat.data import DataError, ToyWorldSource

    root = tmp_path / "tw"
    toyworld.main(["--out", str(root), "--tiles", "3", "--size", "64"])
    before, digest = _stamps(root), _digest(root)
    with pytest.raises(DataError) as info:
        ToyWorldSource(root).pairs("train")  # the config's default: 8 tiles of 1024 px
    assert str(info.value) == (
        f"data.source.root={root} holds a toy world of 3 tiles of 64 px (seed 0), not the "
        "8 tiles of 1024 px (seed 0) asked for; it is not regenerated. To use it, set "
        "data.source.tiles=3 data.source.size=64; for the other, give another "
        "data.source.root (a new or empty folder)"
    )
    with pytest.raises(
        DataError, match=r"set data\.source\.tiles=3 data\.source\.size=64 data\.source\.seed=0;"
    ):
        ToyWorldSource(root, tiles=3, size=64, seed=1).pairs("train")
    assert _stamps(root) == before and _digest(root) == digest
    # the overrides it names use the world as it is
    assert [p.name for p in ToyWorldSource(root, tiles=3, size=64).pairs("train")] == ["tile_000"]
    assert _stamps(root) == before


def test_an_interrupted_toy_world_is_generated_again(tmp_path: Path) -> None:
    """splits.json is written last: without it (or without a tile it lists) the world is
    not complete, and the job generates it."""
    from synthsat.data import ToyWorldSource

    root = toyworld.generate(tmp_path / "tw", tiles=3, size=64)
    assert toyworld.complete_world(root) == {"tiles": 3, "size": 64, "seed": 0}
    (root / "masks" / "tile_001.tif").unlink()
    assert toyworld.complete_world(root) is None
    (root / "splits.json").unlink()
    assert toyworld.complete_world(root) is None
    assert [p.name for p in ToyWorldSource(root, tiles=4, size=64).pairs("test")] == ["tile_003"]
    assert toyworld.complete_world(root) == {"tiles": 4, "size": 64, "seed": 0}
