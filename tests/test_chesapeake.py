"""Chesapeake Land Cover without the 150 GB download: a tiny fake in the real layout.

The fake is what ``cvpr_chesapeake_landcover.zip`` unpacks to, shrunk: a
``spatial_index.geojson`` (EPSG:3857 footprints, one feature per tile and split, with
the layers' paths relative to the root) and ``<state>_1m_<year>_extended-debuffered-
<split>_tiles/`` folders holding ``m_*_naip-new.tif`` (4-band uint8 NAIP) and
``m_*_lc.tif`` (1-band uint8 land cover, 15 = no data) on one UTM grid. torchgeo's
``ChesapeakeCVPR`` checks that every state's folders exist, so they are all created
(empty where no tile of the test lives there).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
from affine import Affine
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from rasterio.crs import CRS

from synthsat.data import ChesapeakeSource, LandCoverDataModule

CONF = Path(__file__).resolve().parents[1] / "conf"
SIZE = 32
NODATA = 15
#: Every folder and file torchgeo's ChesapeakeCVPR checks for before it reads the index.
FOLDERS = [
    f"{state}_1m_{year}_extended-debuffered-{split}_tiles"
    for state, year in (("de", 2013), ("md", 2013), ("ny", 2013), ("pa", 2013))
    + (("va", 2014), ("wv", 2014))
    for split in ("train", "val", "test")
]
WV_FILES = [
    f"wv_1m_2014_extended-debuffered-val_tiles/m_3708035_ne_17_1_{layer}.tif"
    for layer in (
        "buildings",
        "landsat-leaf-off",
        "landsat-leaf-on",
        "lc",
        "naip-new",
        "naip-old",
        "nlcd",
        "prior_from_cooccurrences_101_31_no_osm_no_buildings",
    )
]
#: (split, tile, x origin): three Maryland splits and one Delaware tile (another state).
TILES = [
    ("md-train", "m_3907601_ne_18_1", 400_000.0),
    ("md-train", "m_3907602_nw_18_1", 401_000.0),
    ("md-val", "m_3907603_se_18_1", 402_000.0),
    ("md-test", "m_3907604_sw_18_1", 403_000.0),
    ("de-train", "m_3807504_ne_18_1", 404_000.0),
]
Y_ORIGIN = 4_350_000.0
UTM18N = CRS.from_epsg(26918)


def lc_values(index: int) -> np.ndarray:
    """The ``lc`` raster of tile ``index``: rows 0-3 no data (15), then classes 1..6 in
    column bands, shifted per tile so the tiles differ."""
    cols = np.arange(SIZE)
    lc = np.broadcast_to(1 + (cols // 6 + index) % 6, (SIZE, SIZE)).astype(np.uint8).copy()
    lc[:4] = NODATA
    return lc


def naip_values(lc: np.ndarray) -> np.ndarray:
    """NAIP bands: ``20 * (b + 1) + class`` where labelled, 250 where no data."""
    bands = np.stack([20 * (b + 1) + lc.astype(np.int64) for b in range(4)])
    bands[:, lc == NODATA] = 250
    return bands.astype(np.uint8)


def _write(path: Path, data: np.ndarray, x0: float) -> None:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=SIZE,
        height=SIZE,
        count=data.shape[0],
        dtype=data.dtype,
        crs=UTM18N,
        transform=Affine(1.0, 0.0, x0, 0.0, -1.0, Y_ORIGIN),  # 1 m pixels
    ) as dst:
        dst.write(data)


def _footprint_3857(x0: float) -> list[list[float]]:
    """The tile's outline in EPSG:3857, as in the real spatial index."""
    to_3857 = pyproj.Transformer.from_crs(UTM18N.to_wkt(), "EPSG:3857", always_xy=True)
    corners = [(x0, Y_ORIGIN), (x0 + SIZE, Y_ORIGIN), (x0 + SIZE, Y_ORIGIN - SIZE)]
    corners += [(x0, Y_ORIGIN - SIZE), (x0, Y_ORIGIN)]
    return [list(to_3857.transform(x, y)) for x, y in corners]


def make_fake_chesapeake(root: Path) -> Path:
    """Write the fake ``cvpr_chesapeake_landcover`` directory under ``root``."""
    for folder in FOLDERS:
        (root / folder).mkdir(parents=True, exist_ok=True)
    for name in WV_FILES:
        (root / name).touch()  # only their presence is checked
    features = []
    for index, (split, tile, x0) in enumerate(TILES):
        state, part = split.split("-")
        year = 2014 if state in ("va", "wv") else 2013
        folder = f"{state}_1m_{year}_extended-debuffered-{part}_tiles"
        lc = lc_values(index)
        _write(root / folder / f"{tile}_naip-new.tif", naip_values(lc), x0)
        _write(root / folder / f"{tile}_lc.tif", lc[None], x0)
        layers = ("naip-new", "naip-old", "landsat-leaf-on", "landsat-leaf-off", "lc", "nlcd")
        props = {"split": split, **{k: f"{folder}/{tile}_{k}.tif" for k in layers}}
        props["buildings"] = f"{folder}/{tile}_buildings.tif"
        geometry = {"type": "Polygon", "coordinates": [_footprint_3857(x0)]}
        features.append({"type": "Feature", "properties": props, "geometry": geometry})
    index = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3857"}},
        "features": features,
    }
    (root / "spatial_index.geojson").write_text(json.dumps(index))
    return root


@pytest.fixture()
def chesapeake_root(tmp_path: Path) -> Path:
    return make_fake_chesapeake(tmp_path / "cvpr_chesapeake_landcover")


def test_source_finds_the_states_pairs_and_splits(chesapeake_root: Path) -> None:
    source = ChesapeakeSource(chesapeake_root, state="md")
    pairs = source.all_pairs()
    assert [p.name for p in pairs] == [t for s, t, _ in TILES if s.startswith("md-")]
    first = pairs[0]
    folder = chesapeake_root / "md_1m_2013_extended-debuffered-train_tiles"
    assert first.image == folder / "m_3907601_ne_18_1_naip-new.tif"
    assert first.mask == folder / "m_3907601_ne_18_1_lc.tif"
    assert source.split_names() == {
        "train": ["m_3907601_ne_18_1", "m_3907602_nw_18_1"],
        "val": ["m_3907603_se_18_1"],
        "test": ["m_3907604_sw_18_1"],
    }
    assert [p.name for p in source.pairs("test")] == ["m_3907604_sw_18_1"]
    delaware = ChesapeakeSource(chesapeake_root, state="de")
    assert delaware.split_names() == {"train": ["m_3807504_ne_18_1"], "val": [], "test": []}


def test_label_map_reaches_the_cached_tiles(chesapeake_root: Path, tmp_path: Path) -> None:
    """Through ``conf/data/chesapeake.yaml``, as a study builds it: the no-data value 15
    becomes class 0 (the ignore index), classes 1..6 stay, and the band statistics
    leave the no-data pixels (raw value 250) out."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train_segmentation", overrides=["data=chesapeake"]).data
    cfg.source.root = str(chesapeake_root)
    cfg.cache_dir = str(tmp_path / "cache")
    cfg.num_workers = 0
    cfg.eval_chip_size = SIZE
    dm = instantiate(cfg)
    assert isinstance(dm, LandCoverDataModule) and isinstance(dm.source, ChesapeakeSource)
    dm.setup("fit")
    assert {k: [t.name for t in v] for k, v in dm.tiles.items()} == {
        "train": ["m_3907601_ne_18_1", "m_3907602_nw_18_1"],
        "val": ["m_3907603_se_18_1"],
        "test": ["m_3907604_sw_18_1"],
    }

    mask = np.asarray(dm.tiles["train"][0].mask)
    assert mask.dtype == np.uint8
    assert mask[0, 0] == 0 and mask[3, 31] == 0  # raw 15 (no data)
    assert mask[4, 0] == 1 and mask[4, 6] == 2 and mask[10, 30] == 6  # classes kept
    np.testing.assert_array_equal(np.unique(mask), np.arange(7))
    expected = lc_values(0).astype(np.int64)
    expected[expected == NODATA] = 0
    np.testing.assert_array_equal(mask, expected)

    # Test chips: the mapped mask, and the image normalised with the train statistics.
    chip = dm.eval_dataset("test")[0]
    test_lc = lc_values(3).astype(np.int64)
    assert chip["mask"][0, 0].item() == 0
    assert chip["mask"][4, 0].item() == test_lc[4, 0] == 4
    raw = dm.normalizer.denormalize(chip["image"])
    assert raw[0, 4, 0].item() == pytest.approx(20 + 4, abs=1e-3)

    # Band means over the labelled training pixels only: 20 (b + 1) + mean class.
    labelled = np.concatenate([lc_values(i)[4:].ravel() for i in (0, 1)]).astype(np.float64)
    mean = [20 * (b + 1) + labelled.mean() for b in range(4)]
    np.testing.assert_allclose(dm.normalizer.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(dm.normalizer.std, labelled.std(), rtol=1e-4)
