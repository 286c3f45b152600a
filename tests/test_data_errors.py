"""Every bad input gives a clear DataError naming the file, before training starts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import write_geotiff
from PIL import Image
from rasterio.crs import CRS
from rasterio.transform import from_origin

from synthsat.data import DataError, ImageFolderSource, LandCoverDataModule, PairedRasterSource

CLASSES = ["a", "b", "c"]


def write_tif(path: Path, array: np.ndarray, epsg: int = 32618, x0: float = 0.0) -> None:
    write_geotiff(path, array, CRS.from_epsg(epsg), from_origin(x0, 1000, 1, 1))


def geo_pair(
    root: Path,
    name: str = "t0",
    image_shape: tuple[int, int, int] = (4, 40, 40),
    mask_shape: tuple[int, int] = (40, 40),
    mask_epsg: int = 32618,
    mask_value: int = 1,
) -> None:
    write_tif(root / "images" / f"{name}.tif", np.full(image_shape, 7, np.uint8))
    write_tif(
        root / "masks" / f"{name}.tif",
        np.full((1, *mask_shape), mask_value, np.uint8),
        epsg=mask_epsg,
    )


def setup_dm(root: Path, tmp_path: Path, bands: int = 4, **src: object) -> LandCoverDataModule:
    source = PairedRasterSource(
        root, splits={"train": ["t0"], "val": ["t0"], "test": ["t0"]}, **src
    )  # type: ignore[arg-type]
    dm = LandCoverDataModule(
        source, classes=CLASSES, bands=bands, patch_size=16, cache_dir=tmp_path / "cache"
    )
    dm.setup()
    return dm


@pytest.mark.parametrize(
    ("pair", "match"),
    [
        ({"mask_shape": (40, 39)}, r"t0\.tif.*40x40 px.*39x40"),
        ({"mask_epsg": 32617}, r"t0\.tif.*CRS"),
        ({"mask_value": 9}, r"masks/t0\.tif.*value\(s\) \[9\] outside the class"),
    ],
    ids=["size_mismatch", "crs_mismatch", "mask_values_outside_class_list"],
)
def test_a_bad_pair_is_named(pair: dict[str, Any], match: str, tmp_path: Path) -> None:
    geo_pair(tmp_path / "d", **pair)
    with pytest.raises(DataError, match=match):
        setup_dm(tmp_path / "d", tmp_path)


def test_misaligned_grids(tmp_path: Path) -> None:
    geo_pair(tmp_path / "d")
    write_tif(tmp_path / "d" / "masks" / "t0.tif", np.ones((1, 40, 40), np.uint8), x0=5.0)
    with pytest.raises(DataError, match="not aligned"):
        setup_dm(tmp_path / "d", tmp_path)


def test_ignore_index_is_allowed(tmp_path: Path) -> None:
    geo_pair(tmp_path / "d")
    image = np.full((4, 40, 40), 200, np.uint8)  # unlabelled rows: 200 in every band
    image[:, :10] = np.array([3, 5, 7, 9], np.uint8)[:, None, None]
    image[:, :10, ::2] += 2  # labelled rows: band b alternates 3+2b and 5+2b
    write_tif(tmp_path / "d" / "images" / "t0.tif", image)
    mask = np.full((1, 40, 40), 255, np.uint8)
    mask[0, :10] = 2
    write_tif(tmp_path / "d" / "masks" / "t0.tif", mask)
    dm = setup_dm(tmp_path / "d", tmp_path)
    # The ignore value passes the check and is kept, not mapped to a class.
    np.testing.assert_array_equal(dm.tiles["train"][0].mask, mask[0])
    np.testing.assert_array_equal(dm.tiles["train"][0].image, image)
    assert dm.scored_classes == [0, 1, 2]
    # Band statistics come from the labelled pixels only: mean 4+2b, std 1 (not 200s).
    assert dm.normalizer is not None
    np.testing.assert_allclose(dm.normalizer.mean, [4.0, 6.0, 8.0, 10.0], rtol=1e-6)
    np.testing.assert_allclose(dm.normalizer.std, [1.0, 1.0, 1.0, 1.0], rtol=1e-5)
    # Evaluation chips keep the ignore value where the mask has it (and pad with it).
    chip = dm.eval_dataset("test")[0]
    assert chip["mask"].shape == (64, 64)  # 40 px padded to a multiple of 32
    assert (chip["mask"][:10, :40] == 2).all()
    assert (chip["mask"][10:] == 255).all() and (chip["mask"][:, 40:] == 255).all()


def test_all_unlabelled_training_data(tmp_path: Path) -> None:
    geo_pair(tmp_path / "d", mask_value=255)
    with pytest.raises(DataError, match="no labelled pixels"):
        setup_dm(tmp_path / "d", tmp_path)


def test_band_count_unlike_config(tmp_path: Path) -> None:
    geo_pair(tmp_path / "d", image_shape=(3, 40, 40))
    with pytest.raises(DataError, match=r"images/t0\.tif.*3 band\(s\).*bands=4"):
        setup_dm(tmp_path / "d", tmp_path)


def test_unreadable_file(tmp_path: Path) -> None:
    geo_pair(tmp_path / "d")
    (tmp_path / "d" / "images" / "t0.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(DataError, match=r"images/t0\.tif.*cannot read"):
        setup_dm(tmp_path / "d", tmp_path)


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "d" / "images").mkdir(parents=True)
    (tmp_path / "d" / "masks").mkdir()
    with pytest.raises(DataError, match=r"d/images: folder holds no image files"):
        ImageFolderSource(tmp_path / "d").pairs("train")
    with pytest.raises(DataError, match="no image files match"):
        PairedRasterSource(tmp_path / "d").pairs("train")


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        ImageFolderSource(tmp_path / "nope").pairs("train")


def test_split_names_missing_files(tmp_path: Path) -> None:
    geo_pair(tmp_path / "d")
    (tmp_path / "d" / "splits.json").write_text(
        json.dumps({"train": ["t0"], "val": ["tile9"], "test": ["t0"]})
    )
    with pytest.raises(DataError, match="split 'val' names 'tile9'"):
        PairedRasterSource(tmp_path / "d", splits="splits.json").pairs("val")
    with pytest.raises(DataError, match="split file does not exist"):
        PairedRasterSource(tmp_path / "d", splits="other.json").pairs("val")


def test_unpaired_files(tmp_path: Path) -> None:
    geo_pair(tmp_path / "d")
    write_tif(tmp_path / "d" / "images" / "lonely.tif", np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(DataError, match="no mask for image.*lonely.tif"):
        PairedRasterSource(tmp_path / "d").pairs("train")


def test_folder_mask_values(tmp_path: Path) -> None:
    root = tmp_path / "f"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "images" / "x.jpg")
    Image.fromarray(np.full((20, 20), 4, np.uint8)).save(root / "masks" / "x.png")
    src = ImageFolderSource(root, splits={"train": ["x"], "val": ["x"], "test": ["x"]})
    with pytest.raises(DataError, match=r"x\.png.*\[4\]"):
        LandCoverDataModule(src, classes=CLASSES, bands=3, cache_dir=tmp_path / "c").setup()


# -- issue 25: float masks with fractions or NaN, images whose statistics overflow ---------
@pytest.mark.parametrize(("bad", "shown"), [((1.5, 2.5), "1.5, 2.5"), ((np.nan,), "nan")])
def test_float_mask_values_must_be_whole(
    tmp_path: Path, bad: tuple[float, ...], shown: str
) -> None:
    """2.5 is no class (truncated, it trained as class 2); NaN neither (it was a traceback)."""
    from synthsat.data.masks import MaskReader

    geo_pair(tmp_path / "d")
    mask = np.ones((1, 40, 40), np.float32)
    for row, value in enumerate(bad):
        mask[0, row] = value
    path = tmp_path / "d" / "masks" / "t0.tif"
    write_tif(path, mask)
    message = rf"^{path}: mask values must be integers \(class indices\); {40 * len(bad)} "
    with pytest.raises(DataError, match=message + rf"pixel\(s\) hold other values \({shown}\)"):
        setup_dm(tmp_path / "d", tmp_path)
    with pytest.raises(DataError, match=message):  # synthesis reads masks strip by strip
        MaskReader().values(path)


def test_whole_float_mask_values_are_classes(tmp_path: Path) -> None:
    geo_pair(tmp_path / "d")
    mask = np.ones((1, 40, 40), np.float32)
    mask[0, :10] = 2.0
    write_tif(tmp_path / "d" / "masks" / "t0.tif", mask)
    dm = setup_dm(tmp_path / "d", tmp_path)
    assert sorted(np.unique(dm.tiles["train"][0].mask).tolist()) == [1, 2]


def test_image_statistics_that_overflow_are_an_error_naming_the_file(tmp_path: Path) -> None:
    """One finite float64 pixel of 1e200: its square overflows, so the band's mean and
    standard deviation were inf / NaN and training ran on NaN."""
    geo_pair(tmp_path / "d")
    image = np.full((4, 40, 40), 7.0, np.float64)
    image[2, 5, 5] = 1e200
    path = tmp_path / "d" / "images" / "t0.tif"
    write_tif(path, image)
    with pytest.raises(
        DataError,
        match=rf"^{path}: band statistics are not finite \(band\(s\) \[2\]; values up to 1e\+200",
    ):
        setup_dm(tmp_path / "d", tmp_path)
