"""The tile cache (synthsat.data.cache), on tiles of a few pixels whose results are known."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from conftest import write_geotiff
from rasterio.crs import CRS
from rasterio.transform import from_origin

from synthsat.data.cache import (
    CACHE_VERSION,
    CachedTile,
    TileCache,
    _as_dtype,
    band_statistics,
    check_finite_statistics,
    nearest_indices,
    resample_image,
    rescale,
    rescale_mask,
    save_npy,
    scaled_shape,
)
from synthsat.data.errors import DataError
from synthsat.data.tiles import TilePair


def _tif(path: Path, array: np.ndarray, pixel: float = 1.0, nodata: float | None = None) -> Path:
    """A GeoTIFF of ``array`` (C, H, W) with ``pixel``-metre pixels from (0, 1000)."""
    transform = from_origin(0, 1000, pixel, pixel)
    return write_geotiff(path, array, CRS.from_epsg(32618), transform, nodata)


def _pair(tmp_path: Path, image: np.ndarray, mask: np.ndarray, **kw: object) -> TilePair:
    return TilePair(
        "t0",
        _tif(tmp_path / "t0_image.tif", image, **kw),  # type: ignore[arg-type]
        _tif(tmp_path / "t0_mask.tif", mask[None]),
    )


IMAGE = np.arange(1, 33, dtype=np.uint16).reshape(2, 4, 4)  # band 0: 1..16, band 1: 17..32
MASK = np.array([[0, 1, 2, 255], [1, 1, 0, 0], [2, 2, 2, 2], [0, 255, 1, 1]], dtype=np.uint8)


def test_scaled_shape() -> None:
    assert scaled_shape(10, 7, 0.5) == (5, 4)  # round(3.5) = 4
    assert scaled_shape(9, 9, 0.25) == (2, 2)  # round(2.25)
    assert scaled_shape(3, 40, 0.1) == (1, 4)  # never below one pixel
    assert scaled_shape(6, 5, 1.0) == (6, 5)


def test_nearest_indices_are_the_source_pixels_nearest_the_centres() -> None:
    rows, cols = nearest_indices(4, 6, 0.5)
    assert rows.tolist() == [1, 3] and cols.tolist() == [1, 3, 5]
    rows, cols = nearest_indices(5, 3, 0.8)  # 4 x 2: centres 0.625, 1.875, 3.125, 4.375
    assert rows.tolist() == [0, 1, 3, 4] and cols.tolist() == [0, 2]  # (3 x 0.8 = 2.4 -> 2)
    rows, cols = nearest_indices(3, 2, 1.0)
    assert rows.tolist() == [0, 1, 2] and cols.tolist() == [0, 1]


def test_rescale_mask_takes_the_nearest_class() -> None:
    mask = np.arange(16, dtype=np.uint8).reshape(4, 4)
    small = rescale_mask(mask, 0.5)
    np.testing.assert_array_equal(small, [[5, 7], [13, 15]])
    assert small.dtype == np.uint8 and small.flags.c_contiguous


def test_rescale_area_averages_and_rounds_integer_images() -> None:
    image = np.array([[[0, 1, 10, 20], [4, 6, 30, 41], [7, 7, 2, 2], [7, 8, 2, 3]]], np.uint8)
    mask = np.arange(16).reshape(4, 4)
    small, small_mask = rescale(image, mask, 0.5)
    # block means 2.75, 25.25, 7.25, 2.25: rounded to the nearest integer
    np.testing.assert_array_equal(small, [[[3, 25], [7, 2]]])
    assert small.dtype == np.uint8
    np.testing.assert_array_equal(small_mask, [[5, 7], [13, 15]])
    floats, _ = rescale(image.astype(np.float32), mask, 0.5)
    np.testing.assert_allclose(floats, [[[2.75, 25.25], [7.25, 2.25]]])
    assert floats.dtype == np.float32


def test_as_dtype_rounds_and_clips_only_integer_types() -> None:
    values = np.array([-1.6, 2.5, 3.5, 254.6, 300.2])
    np.testing.assert_array_equal(_as_dtype(values, np.dtype(np.uint8)), [0, 2, 4, 255, 255])
    np.testing.assert_array_equal(
        _as_dtype(np.array([-40000.0, 40000.0, -2.5]), np.dtype(np.int16)), [-32768, 32767, -2]
    )
    as_float = _as_dtype(np.array([-1.6, 2.5, 300.2]), np.dtype(np.float32))
    np.testing.assert_array_equal(as_float, np.array([-1.6, 2.5, 300.2], np.float32))
    assert as_float.dtype == np.float32


def test_resample_image_rules() -> None:
    same = np.ones((1, 3, 2), np.float32)
    assert resample_image(same, (3, 2)) is same  # already that size: untouched
    grow = resample_image(np.array([[[0.0, 4.0]]], np.float32), (1, 4))
    np.testing.assert_allclose(grow, [[[0.0, 1.0, 3.0, 4.0]]])  # bilinear, half-pixel centres
    shrink = resample_image(np.arange(16, dtype=np.float32).reshape(1, 4, 4), (2, 2))
    np.testing.assert_allclose(shrink, [[[2.5, 4.5], [10.5, 12.5]]])  # area
    tall = np.arange(8, dtype=np.float32).reshape(1, 4, 2)  # height shrinks, width grows
    np.testing.assert_allclose(
        resample_image(tall, (2, 4)), [[[1.0, 1.25, 1.75, 2.0], [5.0, 5.25, 5.75, 6.0]]]
    )
    wide = np.arange(8, dtype=np.float32).reshape(1, 2, 4)  # height grows, width shrinks
    np.testing.assert_allclose(
        resample_image(wide, (4, 2)), [[[0.5, 2.5], [1.5, 3.5], [3.5, 5.5], [4.5, 6.5]]]
    )
    grown = resample_image(np.array([[[0, 1]]], np.uint8), (1, 3))  # 0, 0.5, 1 rounded
    np.testing.assert_array_equal(grown, [[[0, 0, 1]]])
    assert grown.dtype == np.uint8
    grown = resample_image(np.array([[[0], [10]]], np.uint8), (4, 1))  # 0, 2.5, 7.5, 10
    np.testing.assert_array_equal(grown, [[[0], [2], [8], [10]]])


def test_save_npy_writes_a_c_contiguous_copy_and_no_temporary(tmp_path: Path) -> None:
    array = np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3))
    save_npy(tmp_path / "a.npy", array)
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]
    back = np.load(tmp_path / "a.npy")
    np.testing.assert_array_equal(back, array)
    assert back.dtype == np.int16 and back.flags.c_contiguous and not back.flags.f_contiguous


def _tile(band_sum: list[float], band_sumsq: list[float], count: int) -> CachedTile:
    pair = TilePair("t", Path(f"/data/t{count}.tif"), Path("/data/m.tif"))
    return CachedTile(
        "t", pair, np.zeros((1, 1, 1)), np.zeros((1, 1)), np.array(band_sum), np.array(band_sumsq),
        count,
    )  # fmt: skip


def test_band_statistics_pool_the_tiles() -> None:
    # tile 1: band values 1, 3; tile 2: 5, 7 (band 0) -> mean 4, var (1+9+25+49)/4 - 16 = 5
    mean, std = band_statistics(
        [_tile([4.0, 2.0], [10.0, 2.0], 2), _tile([12.0, 2.0], [74.0, 2.0], 2)]
    )
    np.testing.assert_allclose(mean, [4.0, 1.0])
    np.testing.assert_allclose(std, [np.sqrt(5.0), 1e-6])  # a constant band: std floor 1e-6
    assert mean.dtype == np.float32 and std.dtype == np.float32


def test_band_statistics_refusals() -> None:
    with pytest.raises(DataError, match="^cannot compute band statistics: the training tiles"):
        band_statistics([_tile([0.0], [0.0], 0)])
    with pytest.raises(DataError) as err:
        band_statistics([_tile([1e39], [1.0], 1), _tile([1.0], [1.0], 1)])
    assert str(err.value).startswith(
        "band statistics of the training tiles are not finite "
        "(mean [inf], std [9.999999974752427e-07])"  # the variance's floor, 1e-12
    )
    assert "/data/t1.tif, /data/t1.tif; fix the imagery" in str(err.value)


def test_check_finite_statistics_names_the_bands() -> None:
    pixels = np.array([[1.0, -2.0], [3e200, -4e200], [1.0, 1.0]])
    check_finite_statistics("x.tif", np.array([1.0, 2.0]), np.array([1.0, 2.0]), pixels)
    with pytest.raises(DataError) as err:
        check_finite_statistics(
            "x.tif", np.array([1.0, 1.0, np.inf]), np.array([1.0, np.inf, 1.0]), pixels
        )
    assert str(err.value).startswith(
        "x.tif: band statistics are not finite (band(s) [1, 2]; values up to 4e+200 overflow"
    )


def test_cache_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"^data.scale must be in \(0, 1\], got 0$"):
        TileCache("c", 2, 3, 255, scale=0)
    with pytest.raises(ValueError, match=r"^data.scale must be in \(0, 1\], got 1.5$"):
        TileCache("c", 2, 3, 255, scale=1.5)
    TileCache("c", 2, 3, 255, scale=1)
    with pytest.raises(ValueError, match=r"^on_nonfinite must be one of \('error', 'ignore'\)"):
        TileCache("c", 2, 3, 255, on_nonfinite="fill")


def _file_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def test_the_cache_key(tmp_path: Path) -> None:
    """The entry is ``<name>-<sha1 of the settings>``; a native-scale cache's key has no
    scale in it, so entries written before ``data.scale`` existed stay valid."""
    pair = _pair(tmp_path, IMAGE, MASK)
    cache = TileCache(tmp_path / "c", 2, 3, 255, label_map={4: 1, 3: 0})
    key = [CACHE_VERSION, _file_key(pair.image), _file_key(pair.mask), [[3, 0], [4, 1]], []]
    key += [2, 3, 255, "error"]
    digest = hashlib.sha1(json.dumps(key).encode()).hexdigest()[:16]
    assert cache._entry(pair) == tmp_path / "c" / f"t0-{digest}"
    half = TileCache(tmp_path / "c", 2, 3, 255, label_map={4: 1, 3: 0}, scale=0.5)
    digest = hashlib.sha1(json.dumps(key + [0.5]).encode()).hexdigest()[:16]
    assert half._entry(pair) == tmp_path / "c" / f"t0-{digest}"
    coloured = TileCache(tmp_path / "c", 2, 3, 255, colour_map={"#ff0000": 1, (0, 0, 255): 2})
    entries = {
        cache._entry(pair),
        coloured._entry(pair),
        TileCache(tmp_path / "c", 3, 3, 255)._entry(pair),
        TileCache(tmp_path / "c", 2, 4, 255)._entry(pair),
        TileCache(tmp_path / "c", 2, 3, 0)._entry(pair),
        TileCache(tmp_path / "c", 2, 3, 255, on_nonfinite="ignore")._entry(pair),
        TileCache(tmp_path / "c", 2, 3, 255)._entry(pair),
    }
    assert len(entries) == 7


def test_a_cached_tile_and_its_statistics(tmp_path: Path) -> None:
    pair = _pair(tmp_path, IMAGE, MASK)
    tile = TileCache(tmp_path / "c", 2, 3, 255).load(pair)
    assert tile.name == "t0" and tile.pair == pair and tile.shape == (4, 4)
    np.testing.assert_array_equal(tile.image, IMAGE)
    np.testing.assert_array_equal(tile.mask, MASK)
    assert tile.image.dtype == np.uint16 and tile.mask.dtype == np.uint8
    labelled = MASK != 255
    assert tile.count == 14
    np.testing.assert_array_equal(tile.band_sum, [IMAGE[b][labelled].sum() for b in (0, 1)])
    sq = [float((IMAGE[b][labelled].astype(np.float64) ** 2).sum()) for b in (0, 1)]
    np.testing.assert_array_equal(tile.band_sumsq, sq)
    (entry,) = (tmp_path / "c").iterdir()
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["image"] == str(pair.image) and meta["mask"] == str(pair.mask)
    assert meta["count"] == 14 and meta["band_sum"] == tile.band_sum.tolist()
    # loaded again from the cache, not rebuilt
    (entry / "meta.json").write_text(json.dumps({**meta, "count": 99}))
    assert TileCache(tmp_path / "c", 2, 3, 255).load(pair).count == 99
    # without an ignore index every pixel counts
    everything = TileCache(tmp_path / "all", 2, 256, None).load(pair)
    assert everything.count == 16
    np.testing.assert_array_equal(everything.band_sum, IMAGE.reshape(2, -1).sum(1))


def test_mask_dtype_follows_the_largest_class(tmp_path: Path) -> None:
    wide = np.array([[0, 255], [256, 1]], dtype=np.uint16)
    pair = _pair(tmp_path, np.ones((1, 2, 2), np.uint8), wide)
    tile = TileCache(tmp_path / "c", 1, 300, None).load(pair)
    assert tile.mask.dtype == np.uint16
    np.testing.assert_array_equal(tile.mask, wide)
    narrow = np.array([[0, 255], [254, 1]], dtype=np.uint16)
    (tmp_path / "n").mkdir()
    pair = _pair(tmp_path / "n", np.ones((1, 2, 2), np.uint8), narrow)
    assert TileCache(tmp_path / "c", 1, 300, None).load(pair).mask.dtype == np.uint8


def test_a_missing_file(tmp_path: Path) -> None:
    pair = TilePair("t0", tmp_path / "nope.tif", tmp_path / "nope_mask.tif")
    with pytest.raises(DataError, match=f"^{tmp_path / 'nope.tif'}: file does not exist$"):
        TileCache(tmp_path / "c", 2, 3, 255).load(pair)


def test_nonfinite_pixels_are_refused_or_unlabelled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    image = np.arange(1, 33, dtype=np.float32).reshape(2, 4, 4)
    image[1, 0, 0] = np.nan
    image[0, 2, 3] = np.inf
    image[:, 3, 3] = -1.0  # nodata in every band
    pair = _pair(tmp_path, image, MASK, nodata=-1.0)
    with pytest.raises(DataError) as err:
        TileCache(tmp_path / "c", 2, 3, 255).load(pair)
    assert str(err.value).startswith(
        f"{pair.image}: 2 of 16 pixel(s) hold NaN or infinite values; fix the imagery"
    )
    with caplog.at_level(logging.WARNING, logger="synthsat.data.cache"):
        tile = TileCache(tmp_path / "c", 2, 3, 255, on_nonfinite="ignore").load(pair)
    assert (
        f"{pair.image}: 2 non-finite and 1 nodata (-1.0) of 16 pixel(s) left out "
        "(ignore index 255 in the mask, filled in the image)"
    ) in caplog.messages
    expected = MASK.copy()
    expected[0, 0] = expected[2, 3] = expected[3, 3] = 255
    np.testing.assert_array_equal(tile.mask, expected)
    assert tile.count == 11 and np.isfinite(tile.image).all()
    kept = expected != 255
    np.testing.assert_array_equal(tile.band_sum, [image[b][kept].sum() for b in (0, 1)])
    (tmp_path / "all").mkdir()
    pair = _pair(tmp_path / "all", image, np.where(MASK == 255, 0, MASK), nodata=-1.0)
    with pytest.raises(DataError) as err:
        TileCache(tmp_path / "c", 2, 3, None, on_nonfinite="ignore").load(pair)
    assert str(err.value) == (
        f"{pair.image}: 3 pixel(s) are nodata or non-finite, but there is no ignore index "
        "to unlabel them; set data.ignore_index"
    )


def test_only_nodata_is_logged_without_non_finite(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    image = np.ones((1, 2, 2), np.uint8)
    image[0, 0, 1] = 9
    pair = _pair(tmp_path, image, np.zeros((2, 2), np.uint8), nodata=9)
    with caplog.at_level(logging.WARNING, logger="synthsat.data.cache"):
        tile = TileCache(tmp_path / "c", 1, 3, 255).load(pair)
    assert f"{pair.image}: 1 nodata (9.0) of 4 pixel(s) left out" in caplog.messages[0]
    np.testing.assert_array_equal(tile.mask, [[0, 255], [0, 0]])
    assert tile.count == 3 and tile.band_sum.tolist() == [3.0]


def test_a_scaled_cache(tmp_path: Path) -> None:
    pair = _pair(tmp_path, IMAGE, MASK)
    tile = TileCache(tmp_path / "c", 2, 3, 255, scale=0.5).load(pair)
    np.testing.assert_array_equal(tile.mask, [[1, 0], [255, 1]])  # nearest centres
    # block means of band 0: 3.5, 5.5, 11.5, 13.5 -> 4, 6, 12, 14 (to even)
    np.testing.assert_array_equal(tile.image[0], [[4, 6], [12, 14]])
    assert tile.count == 3 and tile.band_sum.tolist() == [4 + 6 + 14, 20 + 22 + 30]


def test_a_synthetic_image_on_another_grid(tmp_path: Path) -> None:
    """A 2 x 2 synthetic image of 2 m pixels over a 4 x 4 mask of 1 m pixels: the image is
    enlarged to the mask's grid; pixels an invalid image pixel reaches are unlabelled."""
    synthetic = np.array([[[0.0, 4.0], [8.0, 12.0]]], np.float32)
    image = _tif(tmp_path / "syn.tif", synthetic, pixel=2.0)
    mask = _tif(tmp_path / "mask.tif", np.zeros((1, 4, 4), np.uint8))
    pair = TilePair("t0", image, mask)
    tile = TileCache(tmp_path / "c", 1, 3, 255).load_synthetic(pair)
    np.testing.assert_allclose(tile.image[0, 0], [0.0, 1.0, 3.0, 4.0])
    np.testing.assert_allclose(tile.image[0, :, 0], [0.0, 2.0, 6.0, 8.0])
    assert tile.count == 16 and (tile.mask == 0).all()
    with pytest.raises(DataError, match="must share one pixel grid"):
        TileCache(tmp_path / "other", 1, 3, 255).load(pair)
    synthetic[0, 0, 0] = np.nan
    bad = TilePair("t1", _tif(tmp_path / "bad.tif", synthetic, pixel=2.0), mask)
    tile = TileCache(tmp_path / "c", 1, 3, 255, on_nonfinite="ignore").load_synthetic(bad)
    # the NaN pixel (filled with the mean, 8) reaches the top-left 3 x 3 output pixels
    expected = np.zeros((4, 4), np.uint8)
    expected[:3, :3] = 255
    np.testing.assert_array_equal(tile.mask, expected)
    assert tile.count == 7 and np.isfinite(tile.image).all()
    half = TileCache(tmp_path / "h", 1, 3, 255, scale=0.5).load_synthetic(pair)
    np.testing.assert_allclose(half.image[0], [[0.0, 4.0], [8.0, 12.0]])  # already 2 x 2
    assert half.mask.shape == (2, 2) and half.mask.dtype == np.uint8
