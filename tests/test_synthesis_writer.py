"""The GeoTIFF writer's profiles, colour interpretations and rows (synthsat.synthesis.writer)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin

from synthsat.data.synthetic_tiles import PROVENANCE_TAG
from synthsat.locks import host_tag
from synthsat.synthesis.writer import (
    AtomicTileWriter,
    busy_owner,
    busy_writer,
    colour_interpretation,
    is_rgb_order,
    output_profile,
    to_raw,
)

R, G, B, U, GRAY = (
    ColorInterp.red,
    ColorInterp.green,
    ColorInterp.blue,
    ColorInterp.undefined,
    ColorInterp.gray,
)


def _mask(path: Path, h: int = 32, w: int = 48, crs: bool = True) -> Path:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=w,
        height=h,
        count=1,
        dtype="uint8",
        crs=CRS.from_epsg(32618) if crs else None,
        transform=from_origin(100, 1000, 2, 2),
    ) as dst:
        dst.write(np.zeros((1, h, w), np.uint8))
    return path


def test_rgb_order() -> None:
    assert is_rgb_order(3, None) and is_rgb_order(3, [0, 1, 2]) and is_rgb_order(3, (0, 1, 2))
    assert not is_rgb_order(3, [2, 1, 0]) and not is_rgb_order(4, None)
    assert not is_rgb_order(4, [0, 1, 2]) and not is_rgb_order(1, None)


def test_colour_interpretations() -> None:
    assert colour_interpretation(3) == [R, G, B]
    assert colour_interpretation(1) == [GRAY]
    assert colour_interpretation(4) == [GRAY, U, U, U]
    assert colour_interpretation(4, [2, 1, 0]) == [B, G, R, U]
    assert colour_interpretation(3, [0, 1, 2]) == [R, G, B]
    assert colour_interpretation(2, [1, 5, 0]) == [B, R]  # bands outside the file: skipped
    assert colour_interpretation(2, [-1, 0]) == [G, U]


def test_output_profile_on_the_masks_grid(tmp_path: Path) -> None:
    mask = _mask(tmp_path / "m.tif")
    p = output_profile(mask, 3, "uint8")
    assert p == {
        "driver": "GTiff",
        "width": 48,
        "height": 32,
        "count": 3,
        "dtype": "uint8",
        "crs": CRS.from_epsg(32618),
        "transform": from_origin(100, 1000, 2, 2),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "interleave": "pixel",
        "photometric": "RGB",
        "BIGTIFF": "IF_SAFER",
        "compress": "deflate",
        "predictor": 2,
    }
    p = output_profile(mask, 4, "float32", block_size=32, compress="LZW", rgb_bands=[0, 1, 2])
    assert (p["photometric"], p["blockxsize"], p["blockysize"]) == ("MINISBLACK", 32, 32)
    assert (p["compress"], p["predictor"]) == ("LZW", 3)
    p = output_profile(mask, 3, "uint16", compress="zstd", rgb_bands=[2, 1, 0])
    assert (p["photometric"], p["predictor"]) == ("MINISBLACK", 2)
    p = output_profile(mask, 1, "uint8", compress="jpeg")
    assert p["compress"] == "jpeg" and "predictor" not in p
    for off in ("none", "NONE", ""):
        p = output_profile(mask, 1, "uint8", compress=off)
        assert "compress" not in p and "predictor" not in p
    with pytest.raises(ValueError, match="^GeoTIFF block size must be a multiple of 16, got 40$"):
        output_profile(mask, 1, "uint8", block_size=40)


def test_output_profile_at_a_scale(tmp_path: Path) -> None:
    mask = _mask(tmp_path / "m.tif", h=30, w=50)
    p = output_profile(mask, 1, "uint8", scale=0.25)
    assert (p["height"], p["width"]) == (8, 12)  # round(7.5) = 8, round(12.5) = 12
    # the same bounds with larger pixels: 50 / 12 and 30 / 8 metres of the 2 m ones
    assert p["transform"].almost_equals(from_origin(100, 1000, 2 * 50 / 12, 2 * 30 / 8))
    plain = _mask(tmp_path / "plain.tif", h=30, w=50, crs=False)
    p = output_profile(plain, 1, "uint8", scale=0.25)
    assert (p["height"], p["width"]) == (8, 12) and p["crs"] is None
    assert p["transform"] == from_origin(100, 1000, 2, 2)  # without a CRS: the size alone


def test_to_raw_denormalises_rounds_and_clips() -> None:
    image = np.array([[[0.0, 1.0, -3.0, 0.26]], [[0.5, -0.5, 10.0, 0.0]]], np.float32)
    mean, std = np.array([100.0, 10.0], np.float32), np.array([50.0, 4.0], np.float32)
    np.testing.assert_array_equal(
        to_raw(image, mean, std, "uint8"), [[[100, 150, 0, 113]], [[12, 8, 50, 10]]]
    )
    np.testing.assert_array_equal(
        to_raw(image, mean, std, "int16"), [[[100, 150, -50, 113]], [[12, 8, 50, 10]]]
    )
    floats = to_raw(image, mean, std, "float32")
    np.testing.assert_allclose(floats, [[[100, 150, -50, 113]], [[12, 8, 50, 10]]])
    assert floats.dtype == np.float32
    flags = to_raw(np.array([[[0.0, -0.1, 0.1]]]), np.array([0.5]), np.array([1.0]), "bool")
    np.testing.assert_array_equal(flags, [[[False, False, True]]])
    half = to_raw(np.array([[[0.0, 1.0]]]), np.array([2.5]), np.array([1.0]), "uint8")
    np.testing.assert_array_equal(half, [[[2, 4]]])  # 2.5 and 3.5 to the even neighbour


def _writer(path: Path, mask: Path, **kw: object) -> AtomicTileWriter:
    profile = output_profile(mask, 2, "uint8", block_size=16)
    return AtomicTileWriter(path, profile, [100.0, 10.0], [50.0, 4.0], **kw)  # type: ignore[arg-type]


def test_a_tile_written_in_uneven_strips(tmp_path: Path) -> None:
    mask = _mask(tmp_path / "m.tif", h=40, w=32)
    out = tmp_path / "out" / "t.tif"
    rows = np.linspace(-1, 1, 2 * 40 * 32, dtype=np.float32).reshape(2, 40, 32)
    valid = np.ones((40, 32), bool)
    valid[3, 5] = valid[39, 0] = False
    with _writer(out, mask, provenance={"seed": 7}, band_names=["red", "nir"]) as w:
        for start, stop in ((0, 5), (5, 21), (21, 40)):
            w.write(rows[:, start:stop], valid[start:stop])
            assert w.rows_done == stop
        assert not out.exists()  # renamed only when complete
    assert sorted(p.name for p in out.parent.iterdir()) == ["t.tif"]
    with rasterio.open(out) as src:
        np.testing.assert_array_equal(
            src.read(), to_raw(rows, np.array([100.0, 10.0]), np.array([50.0, 4.0]), "uint8")
        )
        np.testing.assert_array_equal(src.dataset_mask(), np.where(valid, 255, 0))
        assert json.loads(src.tags()[PROVENANCE_TAG]) == {"seed": 7}
        assert src.descriptions == ("red", "nir")
        assert src.colorinterp == (GRAY, U)
    assert (out.stat().st_mode & 0o777) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_tile_without_validity_has_no_mask(tmp_path: Path) -> None:
    mask = _mask(tmp_path / "m.tif", h=16, w=16)
    out = tmp_path / "t.tif"
    with _writer(out, mask) as w:
        w.write(np.zeros((2, 16, 16), np.float32))
    with rasterio.open(out) as src:
        assert (src.read(1) == 100).all() and (src.read(2) == 10).all()
        assert (src.dataset_mask() == 255).all()
        assert json.loads(src.tags()[PROVENANCE_TAG]) == {}
        assert src.descriptions == (None, None)


def test_writer_refusals(tmp_path: Path) -> None:
    mask = _mask(tmp_path / "m.tif", h=16, w=16)
    out = tmp_path / "t.tif"
    profile = output_profile(mask, 2, "uint8", block_size=16)
    with pytest.raises(ValueError) as err:
        AtomicTileWriter(out, profile, [1.0], [1.0, 2.0])
    assert str(err.value) == f"{out}: 2 output bands but 1 means and 2 stds"
    with pytest.raises(ValueError) as err:
        AtomicTileWriter(out, profile, [1.0, 2.0], [1.0])
    assert str(err.value) == f"{out}: 2 output bands but 2 means and 1 stds"
    with pytest.raises(ValueError) as err:
        AtomicTileWriter(out, profile, [1.0, 2.0], [1.0, 2.0], band_names=["a"])
    assert str(err.value) == f"{out}: 2 output bands but 1 band names ['a']"
    writer = _writer(out, mask)
    with pytest.raises(RuntimeError, match="write\\(\\) outside the writer's context"):
        writer.write(np.zeros((2, 1, 16), np.float32))
    with _writer(out, mask) as w:
        with pytest.raises(ValueError, match="do not fit a 2-band tile of width 16"):
            w.write(np.zeros((3, 1, 16), np.float32))
        with pytest.raises(ValueError, match="do not fit a 2-band tile of width 16"):
            w.write(np.zeros((2, 1, 15), np.float32))
        with pytest.raises(ValueError, match="^.*: 17 rows written to a tile of height 16$"):
            w.write(np.zeros((2, 17, 16), np.float32))
        w.write(np.zeros((2, 16, 16), np.float32))  # exactly the height: accepted
    assert out.exists()


def test_validity_comes_with_every_write_or_none(tmp_path: Path) -> None:
    mask = _mask(tmp_path / "m.tif", h=16, w=16)
    rows, valid = np.zeros((2, 4, 16), np.float32), np.ones((4, 16), bool)
    for first, second in (((rows, valid), (rows, None)), ((rows, None), (rows, valid))):
        with (
            pytest.raises(ValueError, match="must come with every write\\(\\) or with none"),
            _writer(tmp_path / "t.tif", mask) as w,
        ):
            w.write(*first)
            w.write(*second)
        assert not (tmp_path / "t.tif").exists()
        assert [p.name for p in tmp_path.iterdir()] == ["m.tif"]  # temporary removed
    with (
        pytest.raises(ValueError, match=r"shaped \(rows, width\) = \(4, 16\)"),
        _writer(tmp_path / "t.tif", mask) as w,
    ):
        w.write(rows, np.ones((4, 15), bool))


def test_an_incomplete_tile_is_not_published(tmp_path: Path) -> None:
    mask = _mask(tmp_path / "m.tif", h=32, w=16)
    out = tmp_path / "t.tif"
    with pytest.raises(RuntimeError) as err, _writer(out, mask) as w:
        w.write(np.zeros((2, 20, 16), np.float32))
    assert str(err.value) == f"{out}: only 20 of 32 rows were written; the tile is incomplete"
    assert [p.name for p in tmp_path.iterdir()] == ["m.tif"]


def test_a_cloud_optimised_tile(tmp_path: Path) -> None:
    mask = _mask(tmp_path / "m.tif", h=64, w=64)
    out = tmp_path / "t.tif"
    rows = np.random.default_rng(0).normal(size=(2, 64, 64)).astype(np.float32)
    with _writer(out, mask, cog=True, provenance={"a": 1}) as w:
        w.write(rows)
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["m.tif", "t.tif"]
    with rasterio.open(out) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.profile["compress"] == "deflate" and src.block_shapes[0] == (16, 16)
        assert src.overviews(1) == [2, 4]
        assert json.loads(src.tags()[PROVENANCE_TAG]) == {"a": 1}
        np.testing.assert_array_equal(
            src.read(), to_raw(rows, np.array([100.0, 10.0]), np.array([50.0, 4.0]), "uint8")
        )


def test_busy_owner_names_another_live_writer(tmp_path: Path) -> None:
    final = tmp_path / "tile_1.tif"
    assert busy_owner(final) is None and busy_writer(final) is None
    here = host_tag()
    (tmp_path / f".tile_1.pid{os.getpid()}@{here}.abcd1234.tif.part").touch()  # this process
    (tmp_path / f".tile_1.pid4194302@{here}.abcd1234.tif.part").touch()  # dead
    (tmp_path / ".tile_1.part").touch()  # not one of ours
    (tmp_path / f".tile_10.pid1@{here}.abcd1234.tif.part").touch()  # another tile
    assert busy_owner(final) is None
    (tmp_path / ".tile_1.pid4242@otherbox.abcd1234.tif.part").touch()
    assert busy_owner(final) == (4242, "otherbox")
    assert busy_writer(final) == "pid 4242 on otherbox"
    parent = os.getppid()  # alive
    (tmp_path / ".tile_1.pid4242@otherbox.abcd1234.tif.part").unlink()
    (tmp_path / f".tile_1.pid{parent}@{here}.abcd1234.tif.part").touch()
    assert busy_owner(final) == (parent, here)
