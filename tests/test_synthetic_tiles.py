"""One owner of synthetic tile names, discovery and records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from synthsat.data import DataError
from synthsat.data.synthetic_tiles import (
    MANIFEST,
    PROVENANCE_TAG,
    describe_source,
    find_samples,
    find_synthetic,
    output_name,
    read_manifest,
    read_sample,
    write_manifest,
)

# _tif writes small tiles without a geotransform on purpose (synthetic tiles of
# non-georeferenced data, such as the Dubai images); rasterio warns about that.
pytestmark = pytest.mark.filterwarnings("ignore:Dataset has no geotransform:UserWarning")


def _tif(path: Path, record: dict | None = None, size: int = 4, bands: int = 1) -> Path:
    profile = {"driver": "GTiff", "width": size, "height": size, "count": bands, "dtype": "uint8"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.full((bands, size, size), 7, np.uint8))
        if record is not None:
            dst.update_tags(**{PROVENANCE_TAG: json.dumps(record)})
    return path


def test_names_and_discovery_order(tmp_path: Path) -> None:
    assert output_name("t_1", 12) == "t_1_s12.tif"
    for name in ("t_1_s10.tif", "t_1_s2.tif", "t_1.tif", "t_10_s0.tif", ".t_1_s3.tif.part"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "t_1_s4.tif").mkdir()  # a folder is not a tile
    assert [p.name for p in find_synthetic(tmp_path, "t_1")] == [
        "t_1_s2.tif",
        "t_1_s10.tif",
        "t_1.tif",
    ]
    found = find_samples(tmp_path, ["t_1", "t_10", "t_2"])
    assert {k: [p.name for p in v] for k, v in found.items()} == {
        "t_1": ["t_1_s2.tif", "t_1_s10.tif", "t_1.tif"],
        "t_10": ["t_10_s0.tif"],
    }
    with pytest.raises(DataError, match=r"no synthetic sample of the 1 tile\(s\) asked for"):
        find_samples(tmp_path, ["other"])
    with pytest.raises(DataError, match="directory does not exist"):
        find_samples(tmp_path / "missing", ["t_1"])


def test_read_sample_checks_its_real_tile(tmp_path: Path) -> None:
    path = _tif(tmp_path / "t_s0.tif", size=4, bands=2)
    assert read_sample(path, (4, 4), 2, "real.tif").shape == (2, 4, 4)
    with pytest.raises(DataError, match=r"4x4 px with 2 band\(s\), but its real tile real.tif "):
        read_sample(path, (4, 5), 2, "real.tif")


def test_manifest_from_provenance_tags(tmp_path: Path) -> None:
    _tif(tmp_path / "a_s0.tif", {"generator": "classtexture", "lambda_div": None, "seed": 1})
    _tif(tmp_path / "b_s0.tif", {"generator": "classtexture", "lambda_div": None, "seed": 2})
    _tif(tmp_path / "c.tif")  # no provenance: not listed
    write_manifest(tmp_path)
    entries = json.loads((tmp_path / MANIFEST).read_text())["outputs"]
    assert [e["path"] for e in entries] == ["a_s0.tif", "b_s0.tif"]
    assert read_manifest(tmp_path) == {
        "outputs": 2,
        "generator": "classtexture",
        "lambda_div": None,
    }
    assert describe_source(tmp_path) == {
        "generator": "classtexture",
        "lambda_div": None,
        "checkpoint": None,
    }


def test_describe_a_gan_source_and_a_bare_folder(tmp_path: Path) -> None:
    gan = tmp_path / "gan"
    gan.mkdir()
    _tif(gan / "a_s0.tif", {"lambda_div": 2.0, "checkpoint": "/x/last.ckpt"})
    write_manifest(gan)
    assert describe_source(gan) == {
        "generator": "gan",
        "lambda_div": 2.0,
        "checkpoint": "/x/last.ckpt",
    }
    assert describe_source(tmp_path) == {"generator": None, "lambda_div": None, "checkpoint": None}
    (tmp_path / MANIFEST).write_text("[1, 2]")
    with pytest.raises(DataError, match="not a synthesis manifest"):
        read_manifest(tmp_path)
