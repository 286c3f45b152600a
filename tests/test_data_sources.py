"""Each source yields the one sample format; splits and label maps behave."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import toy_datamodule
from PIL import Image

from synthsat.data import (
    ChesapeakeSource,
    DataError,
    ImageFolderSource,
    LandCoverDataModule,
    PairedRasterSource,
    ToyWorldSource,
)


def make_folder_dataset(
    root: Path, n: int = 4, size: tuple[int, int] = (70, 90), bands: int = 3, classes: int = 6
) -> Path:
    """Write a tiny image/mask folder dataset (PNG images, PNG masks) with a split file."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        h, w = size
        mask = rng.integers(0, classes, (h, w), dtype=np.uint8)
        mask[0, 0] = 255
        image = rng.integers(0, 255, (h, w, bands), dtype=np.uint8)
        Image.fromarray(image if bands == 3 else image[..., 0]).save(
            root / "images" / f"grp{i % 2}_{i:03d}.png"
        )
        Image.fromarray(mask).save(root / "masks" / f"grp{i % 2}_{i:03d}.png")
    (root / "splits.json").write_text(
        json.dumps({"train": ["grp0"], "val": ["grp1_001"], "test": ["grp1_003"]})
    )
    return root


def folder_dm(root: Path, tmp_path: Path, **kw: object) -> LandCoverDataModule:
    args = dict(
        source=ImageFolderSource(root, splits="splits.json"),
        classes=list("abcdef"),
        bands=3,
        ignore_index=255,
        patch_size=32,
        batch_size=2,
        cache_dir=tmp_path / "cache",
        eval_chip_size=64,
    )
    args.update(kw)
    return LandCoverDataModule(**args)  # type: ignore[arg-type]


def check_batch(batch: dict, bands: int, size: int | None = None) -> None:
    assert batch["image"].dtype == torch.float32 and batch["image"].ndim == 4
    assert batch["image"].shape[1] == bands
    assert batch["mask"].dtype == torch.int64 and batch["mask"].ndim == 3
    assert batch["image"].shape[-2:] == batch["mask"].shape[-2:]
    if size:
        assert batch["image"].shape[-1] == size


def test_toyworld_source_samples(toy_root: Path, tmp_path: Path) -> None:
    dm = toy_datamodule(
        toy_root,
        tmp_path / "cache",
        ignore_index=0,
        patch_size=64,
        batch_size=4,
        eval_chip_size=64,
        eval_batch_size=4,
    )
    check_batch(next(iter(dm.train_dataloader())), 4, 64)
    val = next(iter(dm.val_dataloader()))
    check_batch(val, 4, 64)
    assert set(val["tile"]) == {"tile_002"}
    assert dm.scored_classes == [1, 2, 3, 4, 5, 6]
    assert len(dm.eval_dataset("test")) == 4  # 128 px tile in 64 px chips


def test_toyworld_source_generates_when_missing(tmp_path: Path) -> None:
    src = ToyWorldSource(tmp_path / "tw", tiles=3, size=64, seed=1)
    assert [p.name for p in src.pairs("train")] == ["tile_000"]
    assert (tmp_path / "tw" / "images" / "tile_002.tif").exists()


def test_paired_raster_source_and_torchgeo_view(toy_root: Path) -> None:
    src = PairedRasterSource(toy_root, splits="splits.json")
    assert [p.name for p in src.pairs("test")] == ["tile_003"]
    from torchgeo.samplers import RandomGeoSampler

    geo = src.geo_dataset("train")
    query = next(iter(RandomGeoSampler(geo, size=32, length=1)))
    sample = geo[query]
    assert sample["image"].shape == (4, 32, 32) and sample["mask"].shape == (32, 32)


def test_paired_raster_default_splits(toy_root: Path) -> None:
    src = PairedRasterSource(toy_root)  # no split file: last tile test, one before it val
    assert [p.name for p in src.pairs("val")] == ["tile_002"]


def test_image_folder_source(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "folder")
    dm = folder_dm(root, tmp_path)
    dm.setup()
    assert [t.name for t in dm.tiles["train"]] == ["grp0_000", "grp0_002"]
    batch = next(iter(dm.train_dataloader()))
    check_batch(batch, 3, 32)
    test = next(iter(dm.test_dataloader()))
    check_batch(test, 3)
    # 70 x 90 tile, one 64 px chip padded to a multiple of 32, ignore-filled.
    assert len(dm.eval_dataset("test")) == 4
    first = dm.eval_dataset("test")[0]
    assert first["mask"][0, 0] == 255


def test_label_map(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "folder", classes=7)
    src = ImageFolderSource(root, splits="splits.json", label_map={6: 255})
    dm = folder_dm(root, tmp_path, source=src)
    dm.setup()
    assert 6 not in np.unique(np.asarray(dm.tiles["train"][0].mask))


def test_chesapeake_missing_root_is_actionable(tmp_path: Path) -> None:
    src = ChesapeakeSource(tmp_path / "nowhere")
    with pytest.raises(DataError, match="spatial_index.geojson.*lila.science"):
        src.pairs("train")


def test_multiband_tiff_folder(tmp_path: Path) -> None:
    root = tmp_path / "ms"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(3):
        with rasterio.open(
            root / "images" / f"t{i}.tif",
            "w",
            driver="GTiff",
            width=40,
            height=40,
            count=6,
            dtype="uint16",
        ) as dst:
            dst.write(np.full((6, 40, 40), 1000 + i, np.uint16))
        Image.fromarray(np.full((40, 40), i, np.uint8)).save(root / "masks" / f"t{i}.png")
    dm = LandCoverDataModule(
        ImageFolderSource(root),
        classes=["a", "b", "c"],
        bands=6,
        patch_size=32,
        batch_size=2,
        cache_dir=tmp_path / "c",
    )
    dm.setup()
    check_batch(next(iter(dm.train_dataloader())), 6, 32)
