"""``data.scale`` for the generator: trained, synthesised and mixed at the scaled grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import tiny_generator_overrides
from hydra import compose, initialize_config_dir

from synthsat.data import LandCoverDataModule
from synthsat.data.cache import rescale, scaled_shape
from synthsat.data.raster_io import read_raster
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
