"""Fault injection (issue 16): bad inputs and failures never give silent wrong results,
never write into the user's data, and print one clear line.

One test (or a few) per case of the issue's table; toy data, CI-sized.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synthsat.data import DataError, ToyWorldSource, toyworld


def _listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# -- data=toyworld data.source.root=<a user's folder> -------------------------------------
def test_toyworld_never_writes_into_a_users_folder(tmp_path: Path) -> None:
    user = tmp_path / "mydata"
    (user / "images").mkdir(parents=True)
    (user / "images" / "area_01.tif").write_bytes(b"not touched")
    (user / "splits.json").write_text('{"train": ["area_01"]}')
    before = _listing(user)
    with pytest.raises(DataError, match=r"mydata.*PairedRasterSource.*data\.source\.root"):
        ToyWorldSource(user, tiles=3, size=64).pairs("train")
    assert _listing(user) == before


def test_toyworld_regenerates_only_its_own_folder(tmp_path: Path) -> None:
    root = toyworld.generate(tmp_path / "tw", tiles=4, size=64, seed=0)
    assert (root / toyworld.MARKER).is_file()
    # Other parameters: the toy world it made is replaced (stale tiles removed).
    src = ToyWorldSource(root, tiles=3, size=64, seed=1)
    assert [p.name for p in src.all_pairs()] == ["tile_000", "tile_001", "tile_002"]
    assert json.loads((root / "splits.json").read_text())["seed"] == 1
    # An empty folder is fine too.
    (tmp_path / "empty").mkdir()
    toyworld.generate(tmp_path / "empty", tiles=1, size=64)


def test_toyworld_command_refuses_a_users_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as exit_info:
        toyworld.main(["--out", str(tmp_path), "--tiles", "1", "--size", "64"])
    assert exit_info.value.code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
