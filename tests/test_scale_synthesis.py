"""``data.scale`` for the generator: trained, synthesised and mixed at the scaled grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from conftest import tiny_generator_overrides, toy_datamodule
from hydra import compose, initialize_config_dir
from rasterio.transform import Affine

from synthsat.data import DataError, LandCoverDataModule
from synthsat.data.cache import TileCache, rescale, scaled_shape
from synthsat.data.raster_io import read_raster
from synthsat.data.tiles import TilePair
from synthsat.train_generator import train

CONF = Path(__file__).resolve().parents[1] / "conf"


def _generator_cfg(toy_root: Path, tmp_path: Path, *extra: str) -> Any:
    overrides = [
        *tiny_generator_overrides(toy_root, tmp_path, "gen"),
        f"paths.cache_dir={tmp_path / 'cache'}",
        "generator.nef=4",
        "generator.num_D=1",
        "trainer.max_steps=1",
        *extra,
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train_generator", overrides=overrides)


def _dihedral(mask: np.ndarray) -> list[np.ndarray]:
    """The 8 flips and 90-degree rotations of ``mask``."""
    turns = [np.rot90(mask, k) for k in range(4)]
    return turns + [np.fliplr(t) for t in turns]


def test_generator_trains_on_the_scaled_cache(
    toy_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``train_generator data.scale=0.25``: its patches are cut from 32 px tiles (the
    128 px toy tiles area-averaged, masks by the nearest centre) and the checkpoint's
    data metadata records the scale, which synthesis reads."""
    datasets: list[Any] = []
    original = LandCoverDataModule.train_dataset

    def recorded(self: LandCoverDataModule) -> Any:
        datasets.append(original(self))
        return datasets[-1]

    monkeypatch.setattr(LandCoverDataModule, "train_dataset", recorded)
    metrics = train(_generator_cfg(toy_root, tmp_path, "data.scale=0.25"))
    # 32 px patches of 32 px tiles: each training patch is a whole scaled training tile
    scaled = [
        rescale(
            np.zeros((1, 128, 128), np.uint8), read_raster(toy_root / "masks" / f"{n}.tif")[0], 0.25
        )[1]
        for n in ("tile_000", "tile_001")
    ]
    for i in range(4):
        patch = datasets[0][i]["mask"].numpy()
        assert any(np.array_equal(patch, v) for m in scaled for v in _dihedral(m))
    state = torch.load(metrics["checkpoint"], map_location="cpu", weights_only=False)
    assert state["hyper_parameters"]["data"]["scale"] == 0.25
    masks = {p.parent.name.rsplit("-", 1)[0]: p for p in (tmp_path / "cache").glob("*/mask.npy")}
    assert sorted(masks) == ["tile_000", "tile_001", "tile_002", "tile_003"]
    for name, path in masks.items():
        image = read_raster(toy_root / "images" / f"{name}.tif")
        mask = read_raster(toy_root / "masks" / f"{name}.tif")[0].astype(np.uint8)
        if name == "tile_003":  # the test tile: native, as for segmentation
            assert np.array_equal(np.load(path), mask)
            continue
        small, small_mask = rescale(image, mask, 0.25)  # train (000, 001) and val (002)
        assert np.load(path).shape == scaled_shape(128, 128, 0.25) == (32, 32)
        assert np.array_equal(np.load(path), small_mask)
        assert np.array_equal(np.load(path.parent / "image.npy"), small)


# -- mixing: a synthetic source on any grid -----------------------------------------------


def _write(path: Path, values: np.ndarray, like: Path | None = None, **profile: Any) -> Path:
    """``values`` (C, H, W) as a GeoTIFF: the CRS of ``like`` (if given) and ``profile``."""
    meta: dict[str, Any] = {"driver": "GTiff", "count": values.shape[0], "dtype": values.dtype}
    meta.update(height=values.shape[1], width=values.shape[2])
    if like is not None:
        with rasterio.open(like) as src:
            meta["crs"] = src.crs
    meta.update(profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **meta) as dst:
        dst.write(values)
    return path


def _quarter_grid(toy_root: Path, out: Path, tiles: list[str], seed: int = 0) -> dict[str, Path]:
    """Random 4-band synthetic tiles on the 1/4 grid of the toy masks (32 px, same bounds)."""
    rng = np.random.default_rng(seed)
    paths = {}
    for name in tiles:
        mask = toy_root / "masks" / f"{name}.tif"
        with rasterio.open(mask) as src:
            transform = src.transform @ Affine.scale(4, 4)
        values = rng.integers(0, 256, (4, 32, 32), dtype=np.uint8)
        paths[name] = _write(out / f"{name}_s0.tif", values, mask, transform=transform)
    return paths


def _mixed(toy_root: Path, tmp_path: Path, source: Path, scale: float) -> Any:
    dm = toy_datamodule(
        toy_root,
        tmp_path / "cache",
        patch_size=16,
        scale=scale,
        mix={"ratio": 1.0, "source": str(source)},
    )
    return dm, dm.train_dataset()


def test_a_quarter_grid_source_is_read_at_any_training_scale(
    toy_root: Path, tmp_path: Path
) -> None:
    """Written at 1/4 the size, a synthetic tile is used as it is at ``scale=0.25`` and
    enlarged (bilinear) to the native grid at ``scale=1``; its mask is the real tile's
    on the training grid either way."""
    paths = _quarter_grid(toy_root, tmp_path / "synthetic", ["tile_000", "tile_001"])
    dm, dataset = _mixed(toy_root, tmp_path, tmp_path / "synthetic", 0.25)
    for real, (synthetic,) in zip(dm.tiles["train"], dataset.synthetic, strict=True):
        assert np.array_equal(synthetic.image, read_raster(paths[real.name]))  # as written
        assert np.array_equal(synthetic.mask, real.mask) and real.shape == (32, 32)
    dm, dataset = _mixed(toy_root, tmp_path, tmp_path / "synthetic", 1.0)
    for real, (synthetic,) in zip(dm.tiles["train"], dataset.synthetic, strict=True):
        written = torch.from_numpy(read_raster(paths[real.name]).astype(np.float32))[None]
        big = F.interpolate(written, size=(128, 128), mode="bilinear", align_corners=False)
        expected = np.clip(np.rint(big[0].numpy()), 0, 255).astype(np.uint8)
        assert synthetic.image.shape == (4, 128, 128) and synthetic.image.dtype == np.uint8
        assert np.array_equal(synthetic.image, expected)
        assert np.array_equal(synthetic.mask, real.mask) and real.shape == (128, 128)


def test_a_source_on_the_masks_grid_is_cached_as_before(toy_root: Path, tmp_path: Path) -> None:
    """Same grid: ``load_synthetic`` builds the same cache entry, byte for byte, as ``load``."""
    cache_a = TileCache(tmp_path / "a", 4, 7, 0, scale=0.5)
    cache_b = TileCache(tmp_path / "b", 4, 7, 0, scale=0.5)
    pair = TilePair(
        "tile_000_s0", toy_root / "images" / "tile_000.tif", toy_root / "masks" / "tile_000.tif"
    )
    a, b = cache_a.load(pair), cache_b.load_synthetic(pair)
    entry_a, entry_b = (Path(t.image.filename).parent for t in (a, b))
    assert entry_a.name == entry_b.name
    for name in ("image.npy", "mask.npy", "meta.json"):
        assert (entry_a / name).read_bytes() == (entry_b / name).read_bytes()


def test_grids_that_do_not_cover_the_mask_are_refused(toy_root: Path, tmp_path: Path) -> None:
    mask = toy_root / "masks" / "tile_000.tif"
    with rasterio.open(mask) as src:
        transform = src.transform
    values = np.zeros((4, 32, 32), np.uint8)
    cache = TileCache(tmp_path / "cache", 4, 7, 0, scale=0.25)
    # 32 px at the mask's own pixel size: a quarter of its extent
    small = _write(tmp_path / "small.tif", values, mask, transform=transform)
    with pytest.raises(DataError) as err:
        cache.load_synthetic(TilePair("small", small, mask))
    message = str(err.value)
    assert str(small) in message and str(mask) in message
    assert "32x32 px" in message and "128x128 px" in message
    assert "does not cover the mask's extent" in message
    # shifted by one coarse pixel: same size and pixel size, other bounds
    shifted = _write(
        tmp_path / "shifted.tif",
        values,
        mask,
        transform=transform @ Affine.translation(4, 0) @ Affine.scale(4, 4),
    )
    with pytest.raises(DataError, match="does not cover the mask's extent"):
        cache.load_synthetic(TilePair("shifted", shifted, mask))
    # real pairs still share one grid, even when the extents agree
    quarter = _quarter_grid(toy_root, tmp_path / "q", ["tile_000"])["tile_000"]
    with pytest.raises(DataError, match="they must share one pixel grid"):
        cache.load(TilePair("tile_000", quarter, mask))


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_ungeoreferenced_sources_go_by_their_size(tmp_path: Path) -> None:
    """Without a CRS, the size says the scale; a nodata pixel of the coarse grid leaves
    out every training pixel it reaches."""
    mask = _write(tmp_path / "mask.tif", np.ones((1, 8, 8), np.uint8))
    image = np.arange(16, dtype=np.uint8).reshape(1, 4, 4) + 10
    coarse = _write(tmp_path / "coarse.tif", image)
    half = TileCache(tmp_path / "half", 1, 2, 0, scale=0.5).load_synthetic(
        TilePair("c", coarse, mask)
    )
    assert np.array_equal(half.image, image) and half.mask.tolist() == [[1] * 4] * 4
    holed = _write(tmp_path / "holed.tif", image, nodata=10)  # pixel (0, 0)
    full = TileCache(tmp_path / "full", 1, 2, 0, scale=1.0).load_synthetic(
        TilePair("h", holed, mask)
    )
    assert full.shape == (8, 8)
    # bilinear: coarse pixel 0 weighs on fine pixels 0..2 of each axis (centres < 1.0)
    assert np.argwhere(np.asarray(full.mask) == 0).tolist() == [
        [r, c] for r in range(3) for c in range(3)
    ]
    assert full.count == 64 - 9
    skewed = _write(tmp_path / "skewed.tif", np.zeros((1, 4, 2), np.uint8))
    with pytest.raises(DataError, match="not scaled alike"):
        TileCache(tmp_path / "s", 1, 2, 0).load_synthetic(TilePair("s", skewed, mask))
