"""Real / synthetic mixing of training patches; validation and test stay real."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import toy_datamodule
from torch.utils.data import Dataset

from synthsat.data import DataError, LandCoverDataModule
from synthsat.data.mixing import (
    MixedPatchDataset,
    build_mixed_dataset,
    load_synthetic_tiles,
)
from synthsat.data.synthetic_tiles import find_synthetic


def _mix(dm: LandCoverDataModule, mix_cfg: dict) -> Dataset:
    """The mixed training dataset of a set-up datamodule's training tiles."""
    return build_mixed_dataset(dm.tiles["train"], dm.cache.load, dm.patch_spec(), mix_cfg)


SYNTHETIC_VALUE = 200  # synthetic tiles are constant, so synthetic patches are recognisable


def _datamodule(root: Path, tmp_path: Path, **kwargs) -> LandCoverDataModule:
    """A datamodule over the toy world (32 px patches, no augmentation), not set up."""
    return toy_datamodule(root, tmp_path / "cache", False, patch_size=32, augment=False, **kwargs)


def _write_synthetic(
    out: Path, mask: Path, name: str, value: int, bands: int = 4, size: int | None = None
) -> Path:
    """A constant GeoTIFF on the grid of ``mask`` (or ``size`` px if given)."""
    out.mkdir(parents=True, exist_ok=True)
    with rasterio.open(mask) as src:
        profile = src.profile
    profile.update(count=bands, dtype="uint8", nodata=None)
    if size is not None:
        profile.update(width=size, height=size)
    path = out / f"{name}.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.full((bands, profile["height"], profile["width"]), value, np.uint8))
    return path


@pytest.fixture
def synthetic_dir(toy_root: Path, tmp_path: Path) -> Path:
    """Two samples per training tile: values 200 (s0) and 100 (s1)."""
    out = tmp_path / "synthetic"
    dm = _datamodule(toy_root, tmp_path)
    dm.setup()
    for tile in dm.tiles["train"]:
        _write_synthetic(out, tile.pair.mask, f"{tile.name}_s0", SYNTHETIC_VALUE)
        _write_synthetic(out, tile.pair.mask, f"{tile.name}_s1", 100)
    (out / "manifest.json").write_text("{}")
    return out


def _raw(image: torch.Tensor, dm: LandCoverDataModule) -> np.ndarray:
    """Raw pixel values of a normalised sample image (numpy: tiny tensors, no thread pool)."""
    assert dm.normalizer is not None
    norm = dm.normalizer
    return np.rint(image.numpy() * norm.std[:, None, None] + norm.mean[:, None, None])


def _check_flags(
    dataset: torch.utils.data.Dataset, dm: LandCoverDataModule, count: int
) -> list[bool]:
    """The ``synthetic`` flags of the first ``count`` samples, checked against their pixels."""
    flags = []
    for i in range(count):
        sample = dataset[i]
        raw = _raw(sample["image"], dm)
        constant = bool((raw == raw[:, :1, :1]).all())
        assert bool(sample["synthetic"]) == constant
        flags.append(bool(sample["synthetic"]))
    return flags


def _synthetic_share(dataset: MixedPatchDataset, draws: int = 4000) -> float:
    """Share of synthetic choices of the dataset's per-patch image choice."""
    rng = np.random.default_rng(0)
    n = len(dataset.tiles)
    return float(np.mean([dataset.choose_image(i % n, rng)[1] for i in range(draws)]))


@pytest.mark.parametrize(
    ("ratio", "low", "high"), [(0.0, 0.0, 0.0), (0.3, 0.28, 0.32), (1.0, 1.0, 1.0)]
)
def test_replace_ratio_statistics(
    toy_root: Path, tmp_path: Path, synthetic_dir: Path, ratio: float, low: float, high: float
) -> None:
    torch.manual_seed(0)
    dm = _datamodule(
        toy_root,
        tmp_path,
        patches_per_epoch=800,
        mix={"ratio": ratio, "mode": "replace", "source": str(synthetic_dir)},
    )
    dataset = dm.train_dataset()
    assert len(dataset) == 800
    flags = _check_flags(dataset, dm, 200)
    if ratio == 0.0:
        assert not any(flags)
        return
    assert low <= _synthetic_share(dataset) <= high
    assert abs(np.mean(flags) - ratio) < 0.1  # samples follow the same choice


def test_replace_uses_every_sample_with_the_real_mask(
    toy_root: Path, tmp_path: Path, synthetic_dir: Path
) -> None:
    torch.manual_seed(1)
    dm = _datamodule(
        toy_root,
        tmp_path,
        patches_per_epoch=64,
        mix={"ratio": 1.0, "mode": "replace", "source": str(synthetic_dir)},
    )
    dataset = dm.train_dataset()
    values = set()
    for i in range(len(dataset)):
        s = dataset[i]
        values.add(int(_raw(s["image"], dm)[0, 0, 0]))
        tile = next(t for t in dm.tiles["train"] if t.name == s["tile"])
        r, c = s["row"], s["col"]
        np.testing.assert_array_equal(s["mask"].numpy(), tile.mask[r : r + 32, c : c + 32])
    assert values == {SYNTHETIC_VALUE, 100}


def test_ratio_zero_needs_no_source(toy_root: Path, tmp_path: Path) -> None:
    dm = _datamodule(
        toy_root,
        tmp_path,
        patches_per_epoch=8,
        mix={"ratio": 0.0, "mode": "replace", "source": None},
    )
    dataset = dm.train_dataset()
    assert not isinstance(dataset, MixedPatchDataset)
    assert not any(bool(dataset[i]["synthetic"]) for i in range(8))


def test_add_mode_lengths_and_shares(toy_root: Path, tmp_path: Path, synthetic_dir: Path) -> None:
    dm = _datamodule(toy_root, tmp_path, patches_per_epoch=100)
    dm.setup()
    real_plus_two = _mix(
        dm, {"ratio": 0.0, "mode": "add", "copies": 2, "source": str(synthetic_dir)}
    )
    assert len(real_plus_two) == 300
    assert real_plus_two.real_probability == pytest.approx(1 / 3)
    synthetic_only = _mix(
        dm, {"ratio": 1.0, "mode": "add", "copies": 2, "source": str(synthetic_dir)}
    )
    assert len(synthetic_only) == 200 and synthetic_only.real_probability == 0.0
    torch.manual_seed(2)
    assert all(_check_flags(synthetic_only, dm, 16))
    assert _synthetic_share(real_plus_two) == pytest.approx(2 / 3, abs=0.02)
    one_copy = _mix(dm, {"ratio": 1.0, "mode": "add", "copies": 1, "source": str(synthetic_dir)})
    assert all(len(v) == 1 and v[0].name.endswith("_s0") for v in one_copy.synthetic)
    with pytest.raises(DataError, match="needs 3 synthetic sample"):
        _mix(dm, {"ratio": 1.0, "mode": "add", "copies": 3, "source": str(synthetic_dir)})


def test_validation_and_test_are_never_synthetic(
    toy_root: Path, tmp_path: Path, synthetic_dir: Path
) -> None:
    dm = _datamodule(toy_root, tmp_path, mix={"ratio": 1.0, "source": str(synthetic_dir)})
    dm.setup()
    for loader, split in ((dm.val_dataloader(), "val"), (dm.test_dataloader(), "test")):
        for batch in loader:
            assert not batch["synthetic"].any()
            for image, name in zip(batch["image"], batch["tile"], strict=True):
                tile = next(t for t in dm.tiles[split] if t.name == name)
                raw = _raw(image, dm)
                np.testing.assert_array_equal(raw, np.asarray(tile.image, np.float32))
    assert next(iter(dm.train_dataloader()))["synthetic"].all()


def test_missing_or_mismatched_synthetic_tiles(toy_root: Path, tmp_path: Path) -> None:
    dm = _datamodule(toy_root, tmp_path)
    dm.setup()
    out = tmp_path / "partial"
    first, second = dm.tiles["train"]
    _write_synthetic(out, first.pair.mask, f"{first.name}_s0", 10)
    with pytest.raises(DataError, match=rf"'{second.name}'.*{second.name}_s0\.tif"):
        _mix(dm, {"ratio": 0.5, "source": str(out)})
    _write_synthetic(out, second.pair.mask, f"{second.name}_s0", 10, size=96)
    with pytest.raises(DataError, match="96x96"):
        _mix(dm, {"ratio": 0.5, "source": str(out)})
    _write_synthetic(out, second.pair.mask, f"{second.name}_s0", 10, bands=3)
    with pytest.raises(DataError, match="3 band"):
        _mix(dm, {"ratio": 0.5, "source": str(out)})
    with pytest.raises(DataError, match="does not exist"):
        _mix(dm, {"ratio": 0.5, "source": str(tmp_path / "nowhere")})
    with pytest.raises(ValueError, match="needs mix.source"):
        _mix(dm, {"ratio": 0.5, "source": None})
    with pytest.raises(ValueError, match="mix.mode"):
        _mix(dm, {"ratio": 0.5, "mode": "blend", "source": str(out)})
    with pytest.raises(ValueError, match="mix.ratio"):
        _mix(dm, {"ratio": 1.5, "source": str(out)})


def test_find_synthetic_orders_samples(tmp_path: Path) -> None:
    for name in ("t_1_s10", "t_1_s2", "t_1", "t_1_s0", "t_10_s0", "t_1_s1.png"):
        (tmp_path / f"{name}.tif").touch()
    assert [p.stem for p in find_synthetic(tmp_path, "t_1")] == [
        "t_1_s0",
        "t_1_s2",
        "t_1_s10",
        "t_1",
    ]


def test_find_synthetic_skips_other_files_and_folders(tmp_path: Path) -> None:
    for name in ("t_1_s0.tif", "t_1_s1.TIF", "t_1_s2.tiff", "t_1_s3.png", "t_1_s4.tif.aux.xml"):
        (tmp_path / name).touch()
    (tmp_path / "t_1_s5.tif").mkdir()  # a folder with a tile's name is not a tile
    assert [p.name for p in find_synthetic(tmp_path, "t_1")] == [
        "t_1_s0.tif",
        "t_1_s1.TIF",
        "t_1_s2.tiff",
    ]


def test_synthetic_tile_errors_say_what_is_missing(toy_root: Path, tmp_path: Path) -> None:
    dm = _datamodule(toy_root, tmp_path)
    dm.setup()
    first, second = dm.tiles["train"]
    out = tmp_path / "synthetic"
    with pytest.raises(
        DataError,
        match=rf"'{first.name}' needs 1 synthetic sample\(s\) but has none; "
        rf"expected {out / first.name}_s0\.tif$",
    ):
        out.mkdir()
        load_synthetic_tiles(dm.tiles["train"], dm.cache.load, out)
    for tile in (first, second):
        _write_synthetic(out, tile.pair.mask, f"{tile.name}_s0", 10)
    samples = load_synthetic_tiles(
        dm.tiles["train"], dm.cache.load, out
    )  # one sample each is enough by default
    assert [[s.name for s in t] for t in samples] == [[f"{first.name}_s0"], [f"{second.name}_s0"]]
    with pytest.raises(
        DataError,
        match=rf"needs 3 synthetic sample\(s\) but has only 1 \({first.name}_s0\.tif\); "
        rf"expected .*{first.name}_s0\.tif \.\. _s2\.tif$",
    ):
        load_synthetic_tiles(dm.tiles["train"], dm.cache.load, out, need=3)
    _write_synthetic(out, second.pair.mask, f"{second.name}_s0", 10, size=96)
    with pytest.raises(
        DataError,
        match=rf"{second.name}_s0\.tif: image is 96x96 px but its mask .* is 128x128 px",
    ):
        load_synthetic_tiles(dm.tiles["train"], dm.cache.load, out)


def test_mixed_dataset_arguments(toy_root: Path, tmp_path: Path, synthetic_dir: Path) -> None:
    dm = _datamodule(toy_root, tmp_path)
    dm.setup()
    assert dm.normalizer is not None
    tiles, synthetic = (
        dm.tiles["train"],
        load_synthetic_tiles(dm.tiles["train"], dm.cache.load, synthetic_dir),
    )
    args = (32, 8, dm.normalizer, 9)
    mixed = MixedPatchDataset(tiles, synthetic, 0.5, *args)
    assert mixed.augment is True and mixed.ignore_index == 9
    assert MixedPatchDataset(tiles, [[], []], 1.0, *args).real_probability == 1.0  # real-only
    with pytest.raises(ValueError, match="^1 synthetic tile lists for 2 tiles$"):
        MixedPatchDataset(tiles, synthetic[:1], 0.5, *args)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=rf"^real_probability must be in \[0, 1\], got {bad}$"):
            MixedPatchDataset(tiles, synthetic, bad, *args)
    with pytest.raises(
        ValueError, match="^every tile needs a synthetic version when real_probability < 1$"
    ):
        MixedPatchDataset(tiles, [synthetic[0], []], 0.99, *args)


def test_mix_settings_defaults_and_errors(
    toy_root: Path, tmp_path: Path, synthetic_dir: Path
) -> None:
    dm = _datamodule(toy_root, tmp_path, patches_per_epoch=10)  # no augmentation
    dm.setup()
    real = _mix(dm, {"ratio": 0.0})
    assert (real.ignore_index, real.augment, len(real)) == (0, False, 10)
    one_copy = _mix(dm, {"ratio": 0.0, "mode": "add", "source": str(synthetic_dir)})
    assert len(one_copy) == 20 and one_copy.ignore_index == 0 and one_copy.augment is False
    replace = _mix(dm, {"ratio": 0.5, "copies": 0, "source": str(synthetic_dir)})
    assert len(replace) == 10 and replace.real_probability == 0.5  # copies only matter in add
    with pytest.raises(ValueError, match=r"^mix.copies must be >= 1 in add mode, got 0$"):
        _mix(dm, {"ratio": 0.5, "mode": "add", "copies": 0, "source": "x"})
    with pytest.raises(
        ValueError,
        match=r"^unknown mix setting\(s\) \['rate'\]; "
        r"expected \['copies', 'lambda_div', 'layouts', 'mode', 'ratio', 'source'\]$",
    ):
        _mix(dm, {"rate": 0.5})
    with pytest.raises(
        ValueError,
        match=r"^mix.ratio=0.5 in 'replace' mode needs mix.source "
        r"\(a directory of synthetic GeoTIFFs\)$",
    ):
        _mix(dm, {"ratio": 0.5, "source": ""})


@pytest.mark.parametrize(
    "mix",
    [
        {"ratio": 1.0, "mode": "replace"},
        {"ratio": 0.5, "mode": "replace"},
        {"ratio": 1.0, "mode": "add", "copies": 2},
        {"ratio": 0.0, "mode": "add", "copies": 1},
    ],
    ids=["replace-1", "replace-0.5", "add-x2", "real+add-x1"],
)
def test_every_synthetic_patch_comes_from_its_own_masks_tile(
    toy_root: Path, tmp_path: Path, mix: dict
) -> None:
    """Synthetic tiles whose band 0 encodes their tile (10 x (index + 1)) and band 1 their
    sample (50 + k): every synthetic patch carries the code of the tile its mask was cut
    from, and a sample the mode allows (add mode: the first ``copies``)."""
    dm = _datamodule(toy_root, tmp_path, patches_per_epoch=96)
    dm.setup()
    tiles = dm.tiles["train"]
    assert len(tiles) >= 2  # a mix-up between tiles is visible
    out = tmp_path / "coded"
    for index, tile in enumerate(tiles):
        for k in range(3):
            path = _write_synthetic(out, tile.pair.mask, f"{tile.name}_s{k}", 0)
            with rasterio.open(path, "r+") as dst:
                dst.write(np.full(dst.shape, 10 * (index + 1), np.uint8), 1)
                dst.write(np.full(dst.shape, 50 + k, np.uint8), 2)
    (out / "manifest.json").write_text("{}")
    dataset = _mix(dm, {**mix, "source": str(out)})
    codes = {tile.name: 10 * (index + 1) for index, tile in enumerate(tiles)}
    samples = {50 + k for k in range(mix.get("copies", 3) if mix["mode"] == "add" else 3)}
    seen_tiles, seen_samples, synthetic = set(), set(), 0
    for i in range(len(dataset)):
        s = dataset[i]
        if not bool(s["synthetic"]):
            continue
        synthetic += 1
        raw = _raw(s["image"], dm)
        assert (raw[0] == codes[s["tile"]]).all(), (s["tile"], np.unique(raw[0]))
        assert len(np.unique(raw[1])) == 1 and int(raw[1, 0, 0]) in samples
        seen_tiles.add(s["tile"])
        seen_samples.add(int(raw[1, 0, 0]))
    assert synthetic >= 20 and seen_tiles == set(codes) and seen_samples == samples
