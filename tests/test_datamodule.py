"""Datamodule behaviour: augmentation alignment, normalisation, statistics cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import toy_datamodule

from synthsat.data import LandCoverDataModule, Normalizer
from synthsat.data.augment import dihedral
from synthsat.data.cache import CachedTile
from synthsat.data.datasets import GridChipDataset, RandomPatchDataset
from synthsat.data.tiles import TilePair
from synthsat.data.toyworld import CLASSES
from synthsat.metrics.segmentation import SegmentationScores, evaluate_model


@pytest.fixture()
def dm(toy_root: Path, tmp_path: Path) -> LandCoverDataModule:
    return toy_datamodule(toy_root, tmp_path / "cache")


def test_dihedral_group_keeps_image_and_mask_aligned() -> None:
    mask = np.arange(12, dtype=np.int64).reshape(3, 4)
    image = np.stack([mask * 10, mask * 100]).astype(np.float32)
    seen = set()
    for k in range(8):
        im, m = dihedral(image, mask, k)
        assert np.array_equal(im[0], m * 10) and np.array_equal(im[1], m * 100)
        seen.add(m.tobytes() + bytes(m.shape))
    assert len(seen) == 8  # all eight transforms differ


def test_augmented_patches_match_their_source(dm: LandCoverDataModule) -> None:
    ds = dm.train_dataset()
    tiles = {t.name: t for t in dm.tiles["train"]}
    for i in range(8):
        s = ds[i]
        tile = tiles[s["tile"]]
        raw = dm.normalizer.denormalize(s["image"]).round().numpy()  # type: ignore[union-attr]
        r, c = int(s["row"]), int(s["col"])
        src_img = np.asarray(tile.image[:, r : r + 64, c : c + 64], np.float32)
        src_mask = np.asarray(tile.mask[r : r + 64, c : c + 64])
        found = False
        for k in range(8):
            im, m = dihedral(src_img, src_mask, k)
            if np.array_equal(m, s["mask"].numpy()) and np.allclose(im, raw, atol=0.01):
                found = True
        assert found, "patch is not a dihedral transform of its source window"


def test_normalisation_uses_training_statistics(dm: LandCoverDataModule) -> None:
    pixels = np.concatenate(
        [np.asarray(t.image)[:, np.asarray(t.mask) != 0] for t in dm.tiles["train"]], axis=1
    ).astype(np.float64)
    assert dm.normalizer is not None
    np.testing.assert_allclose(dm.normalizer.mean, pixels.mean(1), rtol=1e-4)
    np.testing.assert_allclose(dm.normalizer.std, pixels.std(1), rtol=1e-3)
    batch = next(iter(dm.train_dataloader()))
    labelled = batch["image"].permute(1, 0, 2, 3)[:, batch["mask"] != 0]
    assert labelled.mean().abs() < 0.6 and 0.5 < labelled.std() < 1.6


def test_configured_normalisation(toy_root: Path, tmp_path: Path) -> None:
    dm = toy_datamodule(toy_root, tmp_path / "c", mean=[10, 20, 30, 40], std=[2, 2, 2, 2])
    tile = dm.tiles["test"][0]
    sample = dm.eval_dataset("test")[0]
    expected = (np.asarray(tile.image[1, :5, :5], np.float32) - 20) / 2
    np.testing.assert_allclose(sample["image"][1, :5, :5].numpy(), expected)
    with pytest.raises(ValueError, match="one per band"):
        LandCoverDataModule(dm.source, classes=CLASSES, bands=4, mean=[1, 2], std=[1, 2])


def test_normaliser_round_trip() -> None:
    norm = Normalizer(np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    x = np.random.default_rng(0).uniform(0, 255, (2, 5, 5)).astype(np.float32)
    back = norm.denormalize(torch.from_numpy(norm(x))).numpy()
    np.testing.assert_allclose(back, x, rtol=1e-5)


def test_cache_is_reused_and_invalidated(dm: LandCoverDataModule, tmp_path: Path) -> None:
    pair = dm.tiles["train"][0].pair
    entry = dm.cache._entry(pair)
    assert (entry / "meta.json").exists()
    before = (entry / "image.npy").stat().st_mtime_ns
    dm.cache.load(pair)
    assert (entry / "image.npy").stat().st_mtime_ns == before
    import os

    st = pair.mask.stat()
    os.utime(pair.mask, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert dm.cache._entry(pair) != entry


def test_val_patches_mode_is_fixed(toy_root: Path, tmp_path: Path) -> None:
    dm = toy_datamodule(toy_root, tmp_path / "c", patch_size=32, val_mode="patches", val_patches=5)
    a = [dm.eval_dataset("val")[i]["image"] for i in range(5)]
    b = [dm.eval_dataset("val")[i]["image"] for i in range(5)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert a[0].shape == (4, 32, 32)


def test_metadata(dm: LandCoverDataModule) -> None:
    meta = dm.metadata()
    assert meta["classes"] == list(CLASSES) and meta["bands"] == 4
    assert len(meta["mean"]) == 4 and meta["ignore_index"] == 0
    assert "train" in dm.summary()


# -- whole-tile evaluation chips and their padding ------------------------------------------
def _tile(h: int, w: int, bands: int = 2, seed: int = 0) -> CachedTile:
    """A tile whose pixels are all different, labels 0..2 (0 is a real class here)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(1, 1000, (bands, h, w)).astype(np.uint16)
    mask = rng.integers(0, 3, (h, w)).astype(np.uint8)
    pair = TilePair(f"t{h}x{w}", Path("image.tif"), Path("mask.tif"))
    return CachedTile(pair.name, pair, image, mask, np.zeros(bands), np.zeros(bands), 0)


def test_grid_chips_cover_every_pixel_once_and_pad_with_ignore() -> None:
    tile, ignore = _tile(40, 70), 9
    norm = Normalizer(np.array([10.0, 20.0]), np.array([2.0, 4.0]))
    ds = GridChipDataset([tile], chip_size=32, normalize=norm, ignore_index=ignore, pad_multiple=16)
    # 2 rows (32, 8 px) x 3 columns (32, 32, 6 px); each chip padded to a multiple of 16
    assert [(s["row"], s["col"]) for s in ds] == [(r, c) for r in (0, 32) for c in (0, 32, 64)]
    assert [tuple(s["mask"].shape) for s in ds][3:] == [(16, 32), (16, 32), (16, 16)]
    seen = np.zeros((40, 70), int)
    rebuilt = np.full((2, 40, 70), np.nan, np.float32)
    for s in ds:
        r, c = s["row"], s["col"]
        h, w = min(32, 40 - r), min(32, 70 - c)
        seen[r : r + h, c : c + w] += 1
        rebuilt[:, r : r + h, c : c + w] = s["image"][:, :h, :w].numpy()
        np.testing.assert_array_equal(s["mask"][:h, :w].numpy(), tile.mask[r : r + h, c : c + w])
        pad = np.ones(s["mask"].shape, bool)
        pad[:h, :w] = False
        assert (s["mask"].numpy()[pad] == ignore).all()  # padding is never a class
        # padded imagery is raw 0, i.e. -mean/std after normalisation
        np.testing.assert_allclose(s["image"].numpy()[0][pad], -5.0)
        np.testing.assert_allclose(s["image"].numpy()[1][pad], -5.0)
    assert (seen == 1).all()
    np.testing.assert_allclose(rebuilt, norm(tile.image))
    assert ds.chip_size == 32 and ds.pad_multiple == 16


def test_padded_pixels_are_never_scored() -> None:
    """Whole-tile scores over padded chips equal the scores of the unpadded tile."""
    tile, ignore = _tile(40, 70), 3  # ignore index outside the 3 classes
    norm = Normalizer(np.zeros(2), np.ones(2))
    ds = GridChipDataset([tile], chip_size=32, normalize=norm, ignore_index=ignore, pad_multiple=32)

    class Band0Parity(torch.nn.Module):
        """Predicts class (value of band 0) mod 3: a fixed, image-dependent answer."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(x[:, 0].long() % 3, 3).permute(0, 3, 1, 2).float()

    batches = [{"image": s["image"][None], "mask": s["mask"][None]} for s in ds]
    chipped = evaluate_model(Band0Parity(), batches, 3, [0, 1, 2], ignore)
    whole = SegmentationScores(3, [0, 1, 2], ignore)
    whole.update(
        torch.from_numpy(tile.image[0].astype(np.int64) % 3)[None],
        torch.from_numpy(tile.mask.astype(np.int64))[None],
    )
    expected = whole.compute()
    assert chipped["scored_pixels"] == 40 * 70
    assert chipped["confusion_matrix"] == expected["confusion_matrix"]
    assert chipped["miou"] == pytest.approx(expected["miou"])


# -- random training patches -----------------------------------------------------------------
def test_normalizer_values_and_inverse() -> None:
    norm = Normalizer(np.array([100.0, 1000.0]), np.array([10.0, 500.0]))
    raw = np.array([[[100, 120]], [[0, 2000]]], dtype=np.uint16)
    out = norm(raw)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[[0.0, 2.0]], [[-2.0, 2.0]]])
    assert raw[1, 0, 1] == 2000  # the input is not modified
    back = norm.denormalize(torch.from_numpy(out))
    assert back.dtype == torch.float32 and norm.mean.dtype == norm.std.dtype == np.float32
    # the statistics follow the image to its device (meta here: no GPU needed)
    assert norm.denormalize(torch.empty(2, 1, 3, device="meta")).device.type == "meta"
    np.testing.assert_allclose(back.numpy(), raw.astype(np.float32))
    # tensors in (..., C, H, W): the same values as the arrays, batched
    batch = torch.from_numpy(raw.astype(np.float32)).expand(3, 2, 1, 2)
    np.testing.assert_allclose(norm.normalize(batch).numpy(), np.broadcast_to(out, (3, 2, 1, 2)))


def test_random_patches_are_cut_where_they_say_and_weighted_by_area() -> None:
    small, large = _tile(20, 20, seed=1), _tile(20, 60, seed=2)
    norm = Normalizer(np.array([5.0, 7.0]), np.array([2.0, 3.0]))
    ds = RandomPatchDataset(
        [small, large], 16, 400, norm, ignore_index=9, augment=False, fixed=True, seed=3
    )
    np.testing.assert_allclose(ds.weights, [0.25, 0.75])
    assert len(ds) == 400
    counts = {small.name: 0, large.name: 0}
    rows, cols = set(), set()
    for i in range(400):
        s = ds[i]
        tile = small if s["tile"] == small.name else large
        counts[tile.name] += 1
        r, c = s["row"], s["col"]
        if tile is large:
            rows.add(r)
            cols.add(c)
        np.testing.assert_allclose(s["image"].numpy(), norm(tile.image[:, r : r + 16, c : c + 16]))
        np.testing.assert_array_equal(s["mask"].numpy(), tile.mask[r : r + 16, c : c + 16])
        assert s["synthetic"] is False
    assert 70 <= counts[small.name] <= 130  # 100 expected
    assert min(rows) == 0 and max(rows) == 4  # every start from 0 to h - p
    assert min(cols) == 0 and max(cols) == 44
    # fixed patches are a function of (seed, index); another seed gives others
    assert [(ds[5]["row"], ds[5]["col"])] * 2 == [(ds[5]["row"], ds[5]["col"]) for _ in range(2)]
    other = RandomPatchDataset([small, large], 16, 400, norm, 9, augment=False, fixed=True, seed=4)
    assert [(ds[i]["tile"], ds[i]["row"], ds[i]["col"]) for i in range(20)] != [
        (other[i]["tile"], other[i]["row"], other[i]["col"]) for i in range(20)
    ]


def test_random_patches_follow_the_torch_seed_and_pad_small_tiles() -> None:
    tile = _tile(10, 12)
    norm = Normalizer(np.zeros(2), np.ones(2))
    ds = RandomPatchDataset([tile], 16, 8, norm, ignore_index=9, augment=True)
    torch.manual_seed(0)
    first = [ds[i] for i in range(8)]
    torch.manual_seed(0)
    again = [ds[i] for i in range(8)]
    for a, b in zip(first, again):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert all(s["row"] == 0 and s["col"] == 0 for s in first)  # the only start
    # augmented (flipped / transposed) patches are still contiguous tensors
    assert all(s["image"].is_contiguous() and s["mask"].is_contiguous() for s in first)
    s = first[0]
    assert s["mask"].shape == (16, 16)
    assert int((s["mask"] == 9).sum()) == 16 * 16 - 10 * 12  # padding is ignored
    assert sorted(np.unique(s["mask"][s["mask"] != 9]).tolist()) == [0, 1, 2]
    with pytest.raises(ValueError, match="^RandomPatchDataset needs at least one tile$"):
        RandomPatchDataset([], 16, 8, norm, 9)
    defaults = RandomPatchDataset([tile], 16, 8, norm, 9)
    assert (defaults.augment, defaults.fixed, defaults.seed) == (True, False, 0)


def test_unfixed_patches_come_from_many_seeds() -> None:
    """Each unfixed patch draws a fresh 62-bit seed: far more distinct patches than 124."""
    tile = _tile(200, 200)
    ds = RandomPatchDataset([tile], 8, 400, Normalizer(np.zeros(2), np.ones(2)), 9, augment=False)
    torch.manual_seed(0)
    assert len({(ds[i]["row"], ds[i]["col"]) for i in range(400)}) > 300
