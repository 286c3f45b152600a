"""The class-colour control (:mod:`synthsat.synthesis.classcolour`): class statistics
measured on known pixels, masks painted with them, and ``synthesize method=classcolour``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import compose_synthesize
from test_classtexture import _write_mask

from synthsat.jobs.synthesize import run
from synthsat.synthesis import ClassTextureSynthesizer, make_requests
from synthsat.synthesis.classcolour import ClassColours, colour_rows


def _known_tiles() -> list[tuple[np.ndarray, np.ndarray]]:
    """Class 0: band 0 values 10, 20 (mean 15, std 5); class 1: 100, 100, 130 (mean 110,
    std sqrt(200)); class 2: no pixels; ignore (9): 250, never counted. Band 1 = 2 * band 0."""
    mask = np.array([[0, 0, 1], [1, 1, 9]], dtype=np.uint8)
    band = np.array([[10, 20, 100], [100, 130, 250]], dtype=np.float32)
    return [(np.stack([band, 2 * band]), mask)]


def test_class_statistics_of_known_pixels() -> None:
    colours = ClassColours.measure(_known_tiles(), num_classes=3, ignore_index=9)
    np.testing.assert_allclose(colours.mean[:2, 0], [15.0, 110.0])
    np.testing.assert_allclose(colours.std[:2, 0], [5.0, np.sqrt(200.0)], rtol=1e-6)
    np.testing.assert_allclose(colours.mean[:, 1], 2 * colours.mean[:, 0])
    # all labelled pixels: 10, 20, 100, 100, 130 -> mean 72, std sqrt(2296)
    # (squared deviations 3844, 2704, 784, 784, 3364; their mean 2296)
    np.testing.assert_allclose(colours.mean[3, 0], 72.0)
    np.testing.assert_allclose(colours.std[3, 0], np.sqrt(2296.0), rtol=1e-6)
    # a class without pixels takes those of all labelled pixels
    np.testing.assert_allclose(colours.mean[2], colours.mean[3])
    np.testing.assert_allclose(colours.std[2], colours.std[3])
    assert (colours.num_classes, colours.bands, colours.dtype) == (3, 2, "float32")
    with pytest.raises(ValueError, match="no labelled pixel"):
        ClassColours.measure([(np.zeros((1, 2, 2)), np.full((2, 2), 9))], 3, 9)


def test_painting_follows_the_classes_and_the_seed() -> None:
    colours = ClassColours(
        mean=np.array([[10.0, 0.0], [200.0, 50.0], [100.0, 100.0]], np.float32),
        std=np.array([[2.0, 0.0], [0.0, 5.0], [1.0, 1.0]], np.float32),
        ignore_index=7,
    )
    mask = np.zeros((300, 200), np.uint8)  # taller than one band of rows
    mask[:, 100:] = 1
    mask[:10, :10] = 7

    def paint(seed: int) -> np.ndarray:
        read = lambda r, h: mask[r : r + h]  # noqa: E731
        return np.concatenate(list(colour_rows(read, 300, 200, colours, seed, 7)), axis=1)

    out = paint(4)
    assert out.shape == (2, 300, 200) and out.dtype == np.float32
    zero = out[:, 10:, :100]
    assert zero[0].mean() == pytest.approx(10.0, abs=0.05) and zero[0].std() == pytest.approx(
        2.0, rel=0.02
    )
    assert (zero[1] == 0).all()  # std 0: the mean exactly
    one = out[:, :, 100:]
    assert (one[0] == 200).all() and one[1].std() == pytest.approx(5.0, rel=0.02)
    ignored = out[:, :10, :10]  # the last row: all labelled pixels' statistics
    assert ignored[0].mean() == pytest.approx(100.0, abs=1.0)
    assert np.array_equal(out, paint(4)) and not np.array_equal(out, paint(5))


def test_the_synthesizer_writes_painted_tiles(tmp_path: Path) -> None:
    colours = ClassColours(
        mean=np.array([[0, 0, 0], [40, 80, 120], [200, 100, 50], [9, 9, 9]], np.float32),
        std=np.zeros((4, 3), np.float32),
    )
    mask = np.zeros((40, 30), np.uint8)
    mask[:, 15:] = 2
    mask[:20, :15] = 1
    path = _write_mask(tmp_path / "m.tif", mask)
    (request,) = make_requests([("m", path, None)], tmp_path / "out", 1, seed=2)
    synth = ClassTextureSynthesizer(colours, 3, 0, dtype="uint8")
    record = synth.run(request)
    assert record is not None and record["generator"] == "classcolour"
    assert (record["chip_size"], record["overlap"]) == (None, None)
    with rasterio.open(request.output) as dst:
        image = dst.read()
    assert (image[:, :20, :15] == np.array([40, 80, 120])[:, None, None]).all()
    assert (image[:, :, 15:] == np.array([200, 100, 50])[:, None, None]).all()


def test_command_with_class_colours(toy_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "colour"
    cfg = compose_synthesize(toy_root, tmp_path, "method=classcolour", f"out={out}", "seed=1")
    result = run(cfg)  # type: ignore[arg-type]
    assert (result["tiles_written"], result["tiles_skipped"]) == (2, 0)
    manifest = json.loads((out / "manifest.json").read_text())["outputs"]
    assert {(m["generator"], m["lambda_div"], m["checkpoint"]) for m in manifest} == {
        ("classcolour", None, None)
    }
    assert manifest[0]["colour"] == {"splits": ["train"]}
    # each class of the synthetic tile has about the real training tiles' class mean
    tiles = []
    for name in ("tile_000", "tile_001"):
        image, mask = (toy_root / kind / f"{name}.tif" for kind in ("images", "masks"))
        with rasterio.open(image) as img, rasterio.open(mask) as msk:
            tiles.append((img.read(), msk.read(1)))
    with rasterio.open(out / "tile_000_s0.tif") as dst:
        synthetic = dst.read().astype(np.float64)
    mask = tiles[0][1]
    real = ClassColours.measure(tiles, 7, 0)
    for k in np.unique(mask):
        if k == 0 or (mask == k).sum() < 500:
            continue
        got = synthetic[:, mask == k].mean(axis=1)
        np.testing.assert_allclose(got, real.mean[k], atol=2.5)
