"""Mixing with new layouts (``mix.layouts``): synthetic patches are cut from a rendered
layout *with that layout's mask*, real patches from the real tiles; clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import Affine

from synthsat.data import DataError, LandCoverDataModule, ToyWorldSource
from synthsat.data.mixing import LayoutMixDataset, MixedPatchDataset, layout_masks
from synthsat.data.toyworld import CLASSES

PATCH = 32
SIDE = 64  # layout side in px
LAYOUTS = 3


def _datamodule(root: Path, tmp_path: Path, **kwargs) -> LandCoverDataModule:
    dm = LandCoverDataModule(
        ToyWorldSource(root, tiles=4, size=128),
        classes=list(CLASSES),
        bands=4,
        ignore_index=0,
        patch_size=PATCH,
        batch_size=4,
        cache_dir=tmp_path / "cache",
        num_workers=0,
        eval_chip_size=128,
        augment=False,
        **kwargs,
    )
    dm.setup()
    return dm


def _write(path: Path, array: np.ndarray, transform: Affine) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "height": array.shape[1],
        "width": array.shape[2],
        "count": array.shape[0],
        "dtype": "uint8",
        "crs": "EPSG:32633",
        "transform": transform,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)


def _layout_mask(i: int) -> np.ndarray:
    """Layout ``i``: class ``1 + i`` left of a column that moves with ``i``, class 6 right."""
    mask = np.full((SIDE, SIDE), 6, np.uint8)
    mask[:, : 16 + 8 * i] = 1 + i
    return mask


def _value(i: int, k: int) -> int:
    """The constant pixel value of sample ``k`` of layout ``i``'s rendering."""
    return 20 + 40 * i + k


@pytest.fixture
def layouts(tmp_path: Path) -> tuple[Path, Path]:
    """A layouts folder (masks, record) and its renderings: 2 samples per layout, each
    image constant at :func:`_value` (so a patch's pixels name its layout and sample)."""
    folder, rendered = tmp_path / "layouts", tmp_path / "rendered"
    names = [f"layout_{i:05d}" for i in range(LAYOUTS)]
    for i, name in enumerate(names):
        transform = Affine(1.0, 0, 500_000.0 + 200 * i, 0, -1.0, 4_000_000.0)
        _write(folder / "masks" / f"{name}.tif", _layout_mask(i)[None], transform)
        for k in range(2):
            image = np.full((4, SIDE, SIDE), _value(i, k), np.uint8)
            _write(rendered / f"{name}_s{k}.tif", image, transform)
    record = {"classes": list(CLASSES), "layouts": [{"name": n} for n in names]}
    (folder / "layouts.json").write_text(json.dumps(record))
    return folder, rendered


def _raw(image: torch.Tensor, dm: LandCoverDataModule) -> np.ndarray:
    assert dm.normalizer is not None
    norm = dm.normalizer
    return np.rint(image.numpy() * norm.std[:, None, None] + norm.mean[:, None, None])


def test_synthetic_patches_pair_a_rendering_with_its_layout_mask(
    toy_root: Path, tmp_path: Path, layouts: tuple[Path, Path]
) -> None:
    folder, rendered = layouts
    mix = {"ratio": 0.5, "mode": "replace", "source": str(rendered), "layouts": str(folder)}
    dm = _datamodule(toy_root, tmp_path, patches_per_epoch=200, mix=mix)
    dataset = dm.train_dataset()
    assert isinstance(dataset, LayoutMixDataset) and len(dataset) == 200
    real_names = {t.name: t for t in dm.tiles["train"]}
    torch.manual_seed(0)
    seen: set[tuple[int, int]] = set()
    flags = []
    for index in range(200):
        sample = dataset[index]
        r, c = sample["row"], sample["col"]
        mask = sample["mask"].numpy()
        flags.append(bool(sample["synthetic"]))
        if not sample["synthetic"]:  # a real patch: the real tile's image and mask
            tile = real_names[sample["tile"]]
            np.testing.assert_array_equal(mask, tile.mask[r : r + PATCH, c : c + PATCH])
            raw = _raw(sample["image"], dm)
            np.testing.assert_array_equal(raw, tile.image[:, r : r + PATCH, c : c + PATCH])
            continue
        name, k = sample["tile"].rsplit("_s", 1)
        i = int(name.split("_")[1])
        raw = _raw(sample["image"], dm)
        assert (raw == _value(i, int(k))).all()  # the pixels of that layout's rendering
        np.testing.assert_array_equal(mask, _layout_mask(i)[r : r + PATCH, c : c + PATCH])
        seen.add((i, int(k)))
    assert seen == {(i, k) for i in range(LAYOUTS) for k in range(2)}
    assert 0.35 < np.mean(flags) < 0.65


def test_add_mode_and_ratio_one(toy_root: Path, tmp_path: Path, layouts: tuple[Path, Path]) -> None:
    folder, rendered = layouts
    base = {"source": str(rendered), "layouts": str(folder)}
    dm = _datamodule(toy_root, tmp_path, patches_per_epoch=10)
    from synthsat.data.mixing import build_mixed_dataset

    def mix(**kw) -> LayoutMixDataset:
        return build_mixed_dataset(
            dm.tiles["train"],
            dm.cache.load_synthetic,
            dm.patch_spec(),
            {**base, **kw},
            load_layout=dm.layout_cache.load_synthetic,
            classes=dm.classes,
        )

    added = mix(ratio=0.0, mode="add", copies=1)
    assert len(added) == 20 and added.real_probability == pytest.approx(0.5)
    assert all([s.name for s in v] == [f"layout_{i:05d}_s0"] for i, v in enumerate(added.layouts))
    only = mix(ratio=1.0, mode="replace")
    torch.manual_seed(1)
    assert all(bool(only[i]["synthetic"]) for i in range(10))
    with pytest.raises(DataError, match=r"layout 'layout_00000' .* needs 3 rendered sample"):
        mix(ratio=0.0, mode="add", copies=3)
    real_only = mix(ratio=0.0, mode="replace")  # ratio 0: no synthetic patch, nothing read
    assert not isinstance(real_only, LayoutMixDataset | MixedPatchDataset)


def test_clear_errors(toy_root: Path, tmp_path: Path, layouts: tuple[Path, Path]) -> None:
    folder, rendered = layouts
    dm = _datamodule(toy_root, tmp_path, patches_per_epoch=10)

    def build(**kw) -> None:
        from synthsat.data.mixing import build_mixed_dataset

        cfg = {"ratio": 0.5, "source": str(rendered), "layouts": str(folder), **kw}
        build_mixed_dataset(
            dm.tiles["train"], dm.cache.load_synthetic, dm.patch_spec(), cfg,
            load_layout=dm.layout_cache.load_synthetic, classes=dm.classes,
        )  # fmt: skip

    with pytest.raises(DataError, match="layouts folder does not exist"):
        build(layouts=str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="not a layouts folder .*python -m synthsat.layouts"):
        build(layouts=str(rendered))
    with pytest.raises(ValueError, match="needs mix.source"):
        build(source=None)
    with pytest.raises(DataError, match="made for the classes"):
        layout_masks(folder, ["a", "b"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="layout 'layout_00000' .* has none; expected"):
        build(source=str(empty))
    (folder / "masks" / "layout_00002.tif").unlink()
    with pytest.raises(DataError, match="'layout_00002' has no mask"):
        build()
    with pytest.raises(ValueError, match="unknown mix setting"):
        build(layout="x")
