"""The layouts entry point on the toy world: valid masks that the data readers and
``synthesize`` take unchanged, seeded bytes, metrics, clear errors."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import tiny_checkpoints, toy_data_overrides
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from synthsat import config_dir, schemas
from synthsat.data import PairedRasterSource, toyworld
from synthsat.data.errors import DataError
from synthsat.data.masks import MaskReader
from synthsat.data.raster_io import refuse_placeholder
from synthsat.errors import ConfigError
from synthsat.layouts import job


def _compose(name: str, tmp_path: Path, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(
            config_name=name,
            overrides=[
                f"paths.root={tmp_path}",
                f"paths.output_dir={tmp_path / 'run'}",
                *overrides,
            ],
        )


def _layouts(toy_root: Path, tmp_path: Path, out: Path, *extra: str) -> DictConfig:
    return _compose(
        "layouts", tmp_path, *toy_data_overrides(toy_root), f"out={out}", "n=3", "size=96", *extra
    )


def test_recombine_writes_a_data_folder_synthesize_reads(toy_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "layouts"
    result = job.run(_layouts(toy_root, tmp_path, out))
    assert result["layouts"] == 3
    source = PairedRasterSource(out)
    pairs = source.pairs("train")
    assert [p.name for p in pairs] == ["layout_00000", "layout_00001", "layout_00002"]
    with rasterio.open(toy_root / "masks" / "tile_000.tif") as real:
        crs, res = real.crs, real.res
    reader = MaskReader()
    for pair in pairs:
        values = reader.read(pair.mask)
        assert values.shape == (96, 96) and values.dtype == np.uint8
        assert set(np.unique(values)) <= set(range(len(toyworld.CLASSES)))
        with rasterio.open(pair.mask) as src, rasterio.open(pair.image) as image:
            assert src.crs == crs and src.res == res and image.count == 4
            assert src.bounds.left >= toyworld.ORIGIN[0] + 256 + 128  # east of all 4 tiles
    record = json.loads((out / "layouts.json").read_text())
    assert record["method"] == "recombine" and record["settings"]["road_classes"] == [6]
    assert record["training_tiles"] == ["tile_000", "tile_001"]
    metrics = json.loads((out / job.METRICS).read_text())
    assert 0 <= metrics["share_tv"] <= 1 and len(metrics["nearest"]["distances"]) == 3

    # same seed, same bytes; synthesize renders them through data=rasters, unchanged
    again = tmp_path / "again"
    job.run(_layouts(toy_root, tmp_path, again))
    for name in ("layout_00000", "layout_00002"):
        first = reader.read(out / "masks" / f"{name}.tif")
        np.testing.assert_array_equal(first, reader.read(again / "masks" / f"{name}.tif"))
    from synthsat.jobs.synthesize import run as synthesize

    ckpt = tiny_checkpoints(tmp_path)["generator"]
    words = shlex.split(record["synthesize"])  # the printed command, as a shell splits it
    data = [w for w in words if w.startswith("data.")]
    cfg = _compose(
        "synthesize", tmp_path, "data=rasters", *data, f"ckpt={ckpt}",
        f"out={tmp_path / 'synthetic'}", "trainer=cpu", "logger=none", "data.num_workers=0",
    )  # fmt: skip
    done = synthesize(cfg)
    assert done["tiles_written"] == 3
    with rasterio.open(tmp_path / "synthetic" / "layout_00001_s0.tif") as tile:
        assert (tile.count, tile.width, tile.height, tile.crs) == (4, 96, 96, crs)
    assert "style=random" in words  # the images are placeholders: no style is encoded

    # nothing reads the placeholder images as imagery: no encoder, no control's colours
    image = out / "images" / "layout_00001.tif"
    with pytest.raises(DataError, match="a placeholder image .* style=encoder needs real"):
        refuse_placeholder(image, "style=encoder")
    refuse_placeholder(toy_root / "images" / "tile_000.tif", "style=encoder")  # real: fine
    control = _compose(
        "synthesize", tmp_path, "data=rasters", *data, "method=classcolour",
        f"out={tmp_path / 'colours'}", "trainer=cpu", "logger=none", "data.num_workers=0",
    )  # fmt: skip
    with pytest.raises(DataError, match=r"placeholder image .* method=classcolour"):
        synthesize(control)


def test_learned_writes_valid_masks(toy_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "learned"
    tiny = ["learned.steps=3", "learned.resolution=16", "learned.channels=4", "learned.latent=4"]
    job.run(_layouts(toy_root, tmp_path, out, "method=learned", "n=2", *tiny))
    for pair in PairedRasterSource(out).pairs("train"):
        values = MaskReader().read(pair.mask)
        assert values.shape == (96, 96)
        assert set(np.unique(values)) <= set(range(len(toyworld.CLASSES)))
    record = json.loads((out / "layouts.json").read_text())
    assert record["method"] == "learned" and np.isfinite(record["layouts"][0]["final_loss"])


def test_clear_errors(toy_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="holds the input data folder"):
        job.run(_layouts(toy_root, tmp_path, toy_root.parent))
    with pytest.raises(ConfigError, match=r"size=\[4096, 4096\]"):
        job.run(_layouts(toy_root, tmp_path, tmp_path / "big", "size=4096"))
    with pytest.raises(ConfigError, match="recombine.pastes=-1"):
        job.run(_layouts(toy_root, tmp_path, tmp_path / "bad", "recombine.pastes=-1"))
    (tmp_path / "taken" / "masks").mkdir(parents=True)
    with pytest.raises(Exception, match="not a layouts folder"):
        job.run(_layouts(toy_root, tmp_path, tmp_path / "taken"))
    with pytest.raises(Exception, match="override method=copy"):
        _layouts(toy_root, tmp_path, tmp_path / "x", "method=copy")


def test_methods_match_the_schema_and_presets_compose(tmp_path: Path) -> None:
    assert schemas.LAYOUT_METHODS == job.METHODS
    cfg = _compose("layouts", tmp_path)
    assert cfg.method == "recombine" and cfg.recombine.mosaic == 0.5
    assert cfg.learned.resolution == 64 and cfg.task_name == "layouts"
