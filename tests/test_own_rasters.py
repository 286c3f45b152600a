"""Bring your own rasters (issue 14): ``data=rasters data.source.root=DIR`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import compose_job, write_geotiff
from rasterio.transform import from_origin

from synthsat.jobs.train_segmentation import train

RAW_CODES = {5: 0, 11: 1, 22: 2}  # raw mask code -> class (background, water, field)


def _write(path: Path, data: np.ndarray, x0: float) -> None:
    write_geotiff(path, data, "EPSG:32633", from_origin(x0, 5_000_000, 0.5, 0.5))


def _own_rasters(root: Path) -> dict[str, np.ndarray]:
    """Four 64 px 3-band uint16 / raw-code mask pairs, a splits.json testing on area_a."""
    rng = np.random.default_rng(0)
    masks = {}
    for i, name in enumerate(("area_a", "area_b", "area_c", "area_d")):
        raw = np.full((64, 64), 5, np.uint8)
        raw[:, : 16 + 8 * i] = 11  # water on the left, wider in each area
        raw[40:, 40:] = 22  # a field in the lower right
        raw[:2, :] = 255  # unlabelled
        spectra = {5: (900, 1200, 800), 11: (300, 400, 500), 22: (1500, 2500, 1000), 255: (0, 0, 0)}
        image = np.zeros((3, 64, 64), np.uint16)
        for code, values in spectra.items():
            image[:, raw == code] = np.asarray(values, np.uint16)[:, None]
        image += rng.integers(0, 50, image.shape, dtype=np.uint16)
        _write(root / "images" / f"{name}.tif", image, 400_000 + 1000 * i)
        _write(root / "masks" / f"{name}.tif", raw[None], 400_000 + 1000 * i)
        masks[name] = raw
    splits = {"train": ["area_c", "area_d"], "val": ["area_b"], "test": ["area_a"]}
    (root / "splits.json").write_text(json.dumps(splits))
    return masks


def test_train_segmentation_on_own_rasters(tmp_path: Path) -> None:
    """The README's route: conf/data/rasters.yaml with root, bands, classes and a label
    map; splits.json picked up from the folder (without it, area_d would be the test tile).

    The test confusion matrix's rows are the test tile's class counts after the label map
    (raw codes 5 / 11 / 22 -> 0 / 1 / 2, 255 ignored). Before rasters.yaml the only
    route (toyworld.yaml with another _target_) failed: unexpected keyword 'tiles'.
    """
    root = tmp_path / "mydata"
    masks = _own_rasters(root)
    cfg = compose_job(
        "train_segmentation",
        [
            "data=rasters",
            f"data.source.root={root}",
            "data.bands=3",
            "data.classes=[background,water,field]",
            "data.source.label_map={5:0,11:1,22:2}",
            "data.num_workers=0",
            "data.patch_size=32",
            "data.batch_size=4",
            "data.patches_per_epoch=8",
            "data.eval_chip_size=64",
            "segmentation=tiny",
            "logger=none",
            "trainer.max_steps=2",
            f"paths.root={tmp_path}",
            f"paths.output_dir={tmp_path / 'run'}",
        ],
    )
    metrics = train(cfg)
    assert metrics["steps"] == 2
    assert metrics["classes"] == ["background", "water", "field"]
    assert metrics["scored_classes"] == [0, 1, 2]
    assert metrics["data_root"] == str(root)
    test = masks["area_a"]
    expected = [int((test == code).sum()) for code in RAW_CODES]
    assert expected == [2400, 992, 576]  # area_d's would be [912, 2480, 576]
    assert [sum(row) for row in metrics["confusion_matrix"]] == expected
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 2
