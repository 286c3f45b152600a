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
from rasterio.errors import NotGeoreferencedWarning

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


Raw = dict[str, tuple[np.ndarray, np.ndarray]]  # tile name -> (image C x H x W, mask H x W)


def read_raw(root: Path, names: list[str] | None = None) -> Raw:
    """The image and mask files under ``root`` as written, read without synthsat's readers
    (PIL for PNG / JPEG, so band order is checked against an independent decoder)."""
    raw: Raw = {}
    for image_path in sorted((root / "images").iterdir()):
        name = image_path.stem
        if names is not None and name not in names:
            continue
        mask_path = next((root / "masks").glob(f"{name}.*"))
        if image_path.suffix == ".tif":
            with rasterio.open(image_path) as src:
                image = src.read()
        else:
            image = np.asarray(Image.open(image_path))
            image = image.transpose(2, 0, 1) if image.ndim == 3 else image[None]
        if mask_path.suffix == ".tif":
            with rasterio.open(mask_path) as src:
                mask = src.read(1)
        else:
            mask = np.asarray(Image.open(mask_path))
        raw[name] = (image, mask)
    return raw


def labelled_band_stats(raw: Raw, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and (population) std of the labelled pixels of ``raw``, in float64."""
    pixels = np.concatenate(
        [img[:, mask != ignore_index].astype(np.float64) for img, mask in raw.values()], axis=1
    )
    return pixels.mean(1), pixels.std(1)


def _dihedral(a: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    """Quarter turns then a left-right flip of the last two axes."""
    a = np.rot90(a, turns, axes=(-2, -1))
    return a[..., ::-1] if flip else a


def check_batch(
    batch: dict,
    bands: int,
    size: int | None = None,
    *,
    raw: Raw,
    mean: np.ndarray,
    std: np.ndarray,
    ignore_index: int,
    augmented: bool = False,
) -> None:
    """Format, and values: each sample is ``(raw - mean) / std`` of the tile window at its
    ``row`` / ``col`` (zero-padded image, ignore-padded mask), band for band, up to one of the
    8 flips / quarter turns (the same for image and mask) when ``augmented``."""
    assert batch["image"].dtype == torch.float32 and batch["image"].ndim == 4
    assert batch["image"].shape[1] == bands
    assert batch["mask"].dtype == torch.int64 and batch["mask"].ndim == 3
    assert batch["image"].shape[-2:] == batch["mask"].shape[-2:]
    if size:
        assert batch["image"].shape[-1] == size
    h, w = batch["mask"].shape[-2:]
    transforms = [(t, f) for t in range(4) for f in (False, True)] if augmented else [(0, False)]
    for i, name in enumerate(batch["tile"]):
        tile_image, tile_mask = raw[name]
        r, c = int(batch["row"][i]), int(batch["col"][i])
        window = tile_image[:, r : r + h, c : c + w].astype(np.float64)
        image = np.zeros((bands, h, w))
        image[:, : window.shape[1], : window.shape[2]] = window
        mask = np.full((h, w), ignore_index, np.int64)
        mask[: window.shape[1], : window.shape[2]] = tile_mask[r : r + h, c : c + w]
        expected = (image - mean[:, None, None]) / std[:, None, None]
        got_image, got_mask = batch["image"][i].double().numpy(), batch["mask"][i].numpy()
        assert any(
            np.array_equal(_dihedral(mask, t, f), got_mask)
            and np.allclose(_dihedral(expected, t, f), got_image, rtol=1e-5, atol=1e-4)
            for t, f in transforms
        ), f"sample {i} ({name} at row {r}, col {c}) differs from the file's values"


def check_stats(dm: LandCoverDataModule, raw: Raw, train: list[str]) -> tuple[np.ndarray, ...]:
    """The normaliser holds the labelled-pixel band statistics of the training tiles."""
    mean, std = labelled_band_stats({n: raw[n] for n in train}, dm.ignore_index)
    assert dm.normalizer is not None
    np.testing.assert_allclose(dm.normalizer.mean, mean, rtol=1e-5)
    np.testing.assert_allclose(dm.normalizer.std, std, rtol=1e-4)
    return dm.normalizer.mean.astype(np.float64), dm.normalizer.std.astype(np.float64)


def test_toyworld_source_samples(toy_root: Path, tmp_path: Path) -> None:
    dm = toy_datamodule(toy_root, tmp_path / "cache", eval_chip_size=64, eval_batch_size=4)
    raw = read_raw(toy_root)
    train = json.loads((toy_root / "splits.json").read_text())["train"]
    mean, std = check_stats(dm, raw, train)
    values = dict(raw=raw, mean=mean, std=std, ignore_index=0)
    check_batch(next(iter(dm.train_dataloader())), 4, 64, augmented=True, **values)
    val = next(iter(dm.val_dataloader()))
    check_batch(val, 4, 64, **values)
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


def test_paired_raster_default_splits(toy_root: Path, tmp_path: Path) -> None:
    import shutil

    for sub in ("images", "masks"):
        shutil.copytree(toy_root / sub, tmp_path / sub)
    src = PairedRasterSource(tmp_path)  # no split file: last tile test, one before it val
    assert [p.name for p in src.pairs("val")] == ["tile_002"]
    assert [p.name for p in src.pairs("test")] == ["tile_003"]
    # a splits.json in the folder is used without being named
    (tmp_path / "splits.json").write_text('{"train": ["tile_001"], "test": ["tile_000"]}')
    assert [p.name for p in PairedRasterSource(tmp_path).pairs("test")] == ["tile_000"]


def test_image_folder_source(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "folder")
    dm = folder_dm(root, tmp_path)
    dm.setup()
    assert [t.name for t in dm.tiles["train"]] == ["grp0_000", "grp0_002"]
    raw = read_raw(root)
    mean, std = check_stats(dm, raw, ["grp0_000", "grp0_002"])
    values = dict(raw=raw, mean=mean, std=std, ignore_index=255)
    batch = next(iter(dm.train_dataloader()))
    check_batch(batch, 3, 32, augmented=True, **values)
    test = next(iter(dm.test_dataloader()))
    check_batch(test, 3, **values)
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
    rng = np.random.default_rng(3)
    written = {}
    for i in range(3):
        # uint16 values far above 255, each band in its own range (band b: 10000 b + ...)
        image = (
            np.arange(6, dtype=np.uint16)[:, None, None] * 10000
            + rng.integers(0, 9000, (6, 40, 40), dtype=np.uint16)
            + 300 * i
        ).astype(np.uint16)
        mask = rng.integers(0, 3, (40, 40), dtype=np.uint8)
        mask[:5] = 255  # unlabelled: left out of the band statistics
        # a plain TIFF, no georeference: rasterio says so when writing it
        with (
            pytest.warns(NotGeoreferencedWarning),
            rasterio.open(
                root / "images" / f"t{i}.tif",
                "w",
                driver="GTiff",
                width=40,
                height=40,
                count=6,
                dtype="uint16",
            ) as dst,
        ):
            dst.write(image)
        Image.fromarray(mask).save(root / "masks" / f"t{i}.png")
        written[f"t{i}"] = (image, mask)
    dm = LandCoverDataModule(
        ImageFolderSource(root),
        classes=["a", "b", "c"],
        bands=6,
        patch_size=32,
        batch_size=2,
        cache_dir=tmp_path / "c",
    )
    dm.setup()
    assert [t.name for t in dm.tiles["train"]] == ["t0"]  # default splits: t1 val, t2 test
    cached = dm.tiles["train"][0].image
    assert cached.dtype == np.uint16
    np.testing.assert_array_equal(cached, written["t0"][0])
    mean, std = check_stats(dm, written, ["t0"])
    assert 0 < mean[0] < 10000 < mean[1] < 20000 < 50000 < mean[5]  # band order kept
    values = dict(raw=written, mean=mean, std=std, ignore_index=255)
    check_batch(next(iter(dm.train_dataloader())), 6, 32, augmented=True, **values)
    test = next(iter(dm.test_dataloader()))
    assert list(test["tile"]) == ["t2"]
    check_batch(test, 6, 64, **values)  # the whole 40 px tile, padded to 64
