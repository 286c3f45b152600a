"""TorchGeoSource: torchgeo RasterDataset pairs and NonGeoDatasets through the tile cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from conftest import compose_job, make_datamodule, toy_datamodule
from hydra.utils import instantiate
from rasterio.transform import from_origin
from torchgeo.datasets import NonGeoDataset, RasterDataset

from synthsat.data import DataError, LandCoverDataModule
from synthsat.data.raster_io import raster_info
from synthsat.data.torchgeo_source import MaskRasters, TorchGeoSource, compact

CRS = "EPSG:32618"
#: tile name -> (height, width, west, north): distinct, far-apart origins on a 2 m grid
TILES = {"a": (20, 24, 300000.0, 4300000.0), "b": (18, 16, 310000.0, 4300000.0)}
TILES |= {"c": (16, 16, 320000.0, 4300000.0)}


class Images(RasterDataset):
    """The test's imagery: ``img_*.tif`` (3-band uint16)."""

    filename_glob = "img_*.tif"
    is_image = True


class Masks(RasterDataset):
    """The test's masks: ``mask_*.tif`` (class indices 0..2)."""

    filename_glob = "mask_*.tif"
    is_image = False


def write_tiles(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Tiny georeferenced image / mask GeoTIFF pairs; returns their pixels by name."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pixels = {}
    for name, (h, w, west, north) in TILES.items():
        image = rng.integers(0, 4000, (3, h, w), dtype=np.uint16)  # above uint8: stays uint16
        mask = rng.integers(0, 3, (h, w), dtype=np.uint8)
        profile = dict(driver="GTiff", height=h, width=w, crs=CRS)
        transform = from_origin(west, north, 2.0, 2.0)
        with rasterio.open(
            folder / f"img_{name}.tif", "w", count=3, dtype="uint16", transform=transform, **profile
        ) as dst:
            dst.write(image)
        with rasterio.open(
            folder / f"mask_{name}.tif", "w", count=1, dtype="uint8", transform=transform, **profile
        ) as dst:
            dst.write(mask[None])
        pixels[name] = (image, mask)
    return pixels


def datamodule(source: TorchGeoSource, cache: Path, classes: int = 3) -> LandCoverDataModule:
    names = [f"c{i}" for i in range(classes)]
    return make_datamodule(
        source, cache, classes=names, bands=3, ignore_index=0, patch_size=8, eval_chip_size=32
    )


def raster_source(tmp_path: Path, **kwargs: Any) -> TorchGeoSource:
    """The :func:`write_tiles` pairs in ``tmp_path / "rasters"`` as a RasterDataset pair,
    exported to ``tmp_path / "export"``."""
    rasters = tmp_path / "rasters"
    return TorchGeoSource(
        tmp_path / "export", image=Images(paths=rasters), mask=Masks(paths=rasters), **kwargs
    )


def test_raster_dataset_pair_is_cached_pixel_for_pixel(tmp_path: Path) -> None:
    pixels = write_tiles(tmp_path / "rasters")
    source = raster_source(
        tmp_path, splits={"train": ["img_a"], "val": ["img_b"], "test": ["img_c"]}
    )
    dm = datamodule(source, tmp_path / "cache")
    geo = Images(paths=tmp_path / "rasters") & Masks(paths=tmp_path / "rasters")
    for split, name in (("train", "a"), ("val", "b"), ("test", "c")):
        (tile,) = dm.tiles[split]
        image, mask = pixels[name]
        assert tile.name == f"img_{name}"  # named by the image file's stem
        assert tile.image.dtype == np.uint16  # torchgeo's float32, written back losslessly
        np.testing.assert_array_equal(tile.image, image)
        np.testing.assert_array_equal(tile.mask, mask)
        # ... which are the pixels torchgeo itself gives for the tile's footprint
        h, w, west, north = TILES[name]
        sample = geo[west : west + 2 * w, north - 2 * h : north]
        np.testing.assert_array_equal(tile.image, sample["image"].numpy())
        np.testing.assert_array_equal(tile.mask, sample["mask"].numpy())
        with rasterio.open(tile.pair.image) as src:  # written on the dataset's grid
            assert src.crs == CRS and src.transform == from_origin(west, north, 2.0, 2.0)
    # band statistics over the labelled (mask != 0) training pixels, as for any source
    image, mask = pixels["a"]
    np.testing.assert_allclose(dm.normalizer.mean, image[:, mask != 0].mean(1), rtol=1e-5)


def test_tile_size_cuts_footprints(tmp_path: Path) -> None:
    pixels = write_tiles(tmp_path / "rasters")
    source = raster_source(tmp_path, tile_size=16)
    pairs = {p.name: p for p in source.all_pairs()}
    # a (20 x 24) -> 16 x 16, 16 x 8, 4 x 16, 4 x 8; b (18 x 16) -> 2; c (16 x 16) whole
    assert sorted(pairs) == [f"img_a_{k:03d}" for k in range(4)] + [
        "img_b_000",
        "img_b_001",
        "img_c",
    ]
    image, mask = pixels["a"]
    with rasterio.open(pairs["img_a_003"].image) as src:
        np.testing.assert_array_equal(src.read(), image[:, 16:, 16:])
        assert src.transform == from_origin(300000.0 + 32, 4300000.0 - 32, 2.0, 2.0)
    with rasterio.open(pairs["img_a_001"].mask) as src:
        np.testing.assert_array_equal(src.read(1), mask[:16, 16:])


class TinyTiles(NonGeoDataset):
    """A NonGeoDataset of ``n`` samples: float imagery with fractions and int64 masks."""

    def __init__(self, n: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 3, 12, 10, generator=gen) * 100
        self.masks = torch.randint(0, 4, (n, 12, 10), generator=gen)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.images[index], "mask": self.masks[index]}


def test_non_geo_dataset_per_split_is_cached_pixel_for_pixel(tmp_path: Path) -> None:
    datasets = {"train": TinyTiles(2, 0), "val": TinyTiles(1, 1), "test": TinyTiles(1, 2)}
    source = TorchGeoSource(tmp_path / "export", dataset=datasets)
    dm = datamodule(source, tmp_path / "cache", classes=4)
    assert [t.name for t in dm.tiles["train"]] == ["train_0", "train_1"]
    for split, ds in datasets.items():
        for i, tile in enumerate(dm.tiles[split]):
            assert tile.image.dtype == np.float32  # fractions: kept as they are
            np.testing.assert_array_equal(tile.image, ds[i]["image"].numpy())
            np.testing.assert_array_equal(tile.mask, ds[i]["mask"].numpy())
            info = raster_info(tile.pair.mask)
            assert info.crs is None and info.dtype == "uint8"  # no grid; smallest type


def test_export_is_reused_until_the_data_change(tmp_path: Path) -> None:
    write_tiles(tmp_path / "rasters")

    def source() -> TorchGeoSource:  # each job builds its own
        return TorchGeoSource(
            tmp_path / "export",
            image=lambda: Images(paths=tmp_path / "rasters"),  # as Hydra's _partial_ gives
            mask=lambda: Masks(paths=tmp_path / "rasters"),
        )

    source().prepare()
    exported = tmp_path / "export" / "images" / "img_a.tif"
    first = exported.stat().st_mtime_ns
    source().prepare()
    assert exported.stat().st_mtime_ns == first  # same fingerprint: not rewritten
    with rasterio.open(tmp_path / "rasters" / "mask_a.tif", "r+") as dst:
        dst.write(np.full((1, 20, 24), 2, dtype=np.uint8))
    source().prepare()
    with rasterio.open(tmp_path / "export" / "masks" / "img_a.tif") as src:
        assert (src.read(1) == 2).all()  # the edited mask was exported again


def test_foreign_folders_and_bad_samples_are_refused(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("my data")
    with pytest.raises(DataError, match="not a torchgeo export"):
        TorchGeoSource(tmp_path / "mine", dataset=TinyTiles(1, 0)).prepare()
    assert (tmp_path / "mine" / "notes.txt").exists()

    class ImagesOnly(TinyTiles):
        def __getitem__(self, index: int) -> dict[str, Any]:
            return {"image": self.images[index]}

    with pytest.raises(DataError, match="needs 'image' and 'mask'"):
        TorchGeoSource(tmp_path / "new", dataset=ImagesOnly(1, 0)).prepare()
    missing = TorchGeoSource(
        tmp_path / "new", image=lambda: Images(paths=tmp_path / "nowhere"), mask=lambda: None
    )
    # torchgeo warns of the empty path before it raises: the condition under test
    with (
        pytest.warns(UserWarning, match="Could not find any relevant files"),
        pytest.raises(DataError, match="cannot export the torchgeo dataset.*nowhere"),
    ):
        missing.prepare()
    with pytest.raises(ValueError, match="either `dataset` or both"):
        TorchGeoSource(tmp_path / "x", image=TinyTiles(1, 0))


def test_compact_is_lossless() -> None:
    assert compact(np.array([0.0, 255.0], np.float32)).dtype == np.uint8
    assert compact(np.array([0.0, 256.0], np.float32)).dtype == np.uint16
    assert compact(np.array([-1.0, 2.0], np.float32)).dtype == np.int16
    assert compact(np.array([0.5, 2.0], np.float32)).dtype == np.float32
    assert compact(np.array([np.nan, 2.0], np.float32)).dtype == np.float32
    assert compact(np.array([3, 70000], np.int64)).dtype == np.int32


def test_data_torchgeo_config_reads_the_toy_world(toy_root: Path, tmp_path: Path) -> None:
    """``data=torchgeo`` (the toy world through torchgeo) caches the tiles that
    ``data=toyworld`` does, pixel for pixel, split for split."""
    cfg = compose_job(
        "train_segmentation",
        [
            "data=torchgeo",
            f"paths.root={tmp_path}",
            f"paths.data_dir={toy_root.parent}",
            f"data.source.image.paths={toy_root / 'images'}",
            f"data.source.mask.paths={toy_root / 'masks'}",
            f"data.source.splits={toy_root / 'splits.json'}",
            "data.num_workers=0",
        ],
    )
    dm = instantiate(cfg.data)
    assert isinstance(dm.source, TorchGeoSource)
    dm.setup()
    toy = toy_datamodule(toy_root, tmp_path / "toy_cache")
    for split in ("train", "val", "test"):
        assert [t.name for t in dm.tiles[split]] == [t.name for t in toy.tiles[split]]
        for ours, theirs in zip(dm.tiles[split], toy.tiles[split], strict=True):
            np.testing.assert_array_equal(ours.image, theirs.image)
            np.testing.assert_array_equal(ours.mask, theirs.mask)
    assert MaskRasters.is_image is False
