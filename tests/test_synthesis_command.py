"""The synthesis command end to end with a (random-init) GeneratorTask checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import TOY_METADATA, assert_on_toy_masks, compose_synthesize, save_task

from synthsat.data import DataError
from synthsat.jobs.synthesize import run
from synthsat.synthesis import load_chip_generator
from synthsat.tasks.generator import GeneratorTask


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-init GeneratorTask for the toy world, saved by a Lightning Trainer."""
    task = GeneratorTask(
        metadata=dict(TOY_METADATA),
        patch_size=32,
        ngf=8,
        z_dim=8,
        start_size=4,
        max_mult=2,
        spade_hidden=8,
        nef=8,
        ndf=8,
        num_D=1,
        n_layers=2,
        lambda_div=2.0,
    )
    return save_task(task, tmp_path_factory.mktemp("ckpt") / "generator.ckpt")


def test_adapter_reads_the_checkpoint(checkpoint: Path) -> None:
    gen = load_chip_generator(checkpoint)
    assert (gen.num_classes, gen.out_bands, gen.chip_size, gen.z_dim) == (7, 4, 32, 8)
    assert gen.lambda_div == 2.0 and gen.has_encoder


def test_command_synthesises_georeferenced_tiles(
    checkpoint: Path, toy_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "synthetic"
    cfg = compose_synthesize(
        toy_root,
        tmp_path,
        f"ckpt={checkpoint}",
        f"out={out}",
        "samples=2",
        "style=encoder",
        "seed=4",
        "splits=[test]",
    )
    result = run(cfg)  # type: ignore[arg-type]
    names = sorted(p.name for p in out.glob("*.tif"))
    assert names == ["tile_003_s0.tif", "tile_003_s1.tif"]
    assert (result["tiles_written"], result["tiles_skipped"]) == (2, 0)
    assert result["out_dir"] == str(out) and result["seconds"] > 0
    assert_on_toy_masks(out, names, toy_root)
    manifest = json.loads((out / "manifest.json").read_text())["outputs"]
    assert [m["path"] for m in manifest] == names
    assert {m["checkpoint"] for m in manifest} == {str(checkpoint.resolve())}
    assert {(m["style"], m["seed"], m["lambda_div"]) for m in manifest} == {("encoder", 4, 2.0)}
    assert (tmp_path / "run" / "config.yaml").exists()

    # a rerun skips everything and leaves the files untouched
    before = {n: (out / n).read_bytes() for n in names}
    again = run(cfg)  # type: ignore[arg-type]
    assert (again["tiles_written"], again["tiles_skipped"]) == (0, 2)
    assert all((out / n).read_bytes() == before[n] for n in names)

    # a fresh run with the same seed reproduces the tiles bit for bit
    out2 = tmp_path / "again"
    run(
        compose_synthesize(
            toy_root,
            tmp_path,
            f"ckpt={checkpoint}",
            f"out={out2}",
            "samples=2",  # type: ignore[arg-type]
            "style=encoder",
            "seed=4",
            "splits=[test]",
        )
    )
    for name in names:
        with rasterio.open(out / name) as a, rasterio.open(out2 / name) as b:
            assert np.array_equal(a.read(), b.read())


def test_command_rejects_bad_input(checkpoint: Path, toy_root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        run(compose_synthesize(toy_root, tmp_path, f"ckpt={tmp_path / 'missing.ckpt'}"))
    with pytest.raises(DataError, match="7 classes"):
        run(
            compose_synthesize(
                toy_root,
                tmp_path,
                f"ckpt={checkpoint}",  # type: ignore[arg-type]
                "data.classes=[a,b,c]",
                "data.ignore_index=0",
            )
        )


def test_command_synthesises_only_the_tiles_asked_for(
    checkpoint: Path, toy_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "some"
    settings = (f"ckpt={checkpoint}", f"out={out}")
    run(compose_synthesize(toy_root, tmp_path, *settings, "tiles=[tile_001]"))
    assert sorted(p.name for p in out.glob("*.tif")) == ["tile_001_s0.tif"]
    manifest = json.loads((out / "manifest.json").read_text())["outputs"]
    assert manifest[0]["overlap"] == 16  # half of the 32 px chip by default
    with pytest.raises(DataError, match="tile_009"):
        run(compose_synthesize(toy_root, tmp_path, *settings, "tiles=[tile_009]"))


def test_out_with_a_tilde_is_one_folder(
    checkpoint: Path, toy_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``out="~/x"``: checked, written and recorded as ``$HOME/x`` (the tiles went to a
    literal ``./~/x`` in the working directory)."""
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    cfg = compose_synthesize(
        toy_root, tmp_path, f"ckpt={checkpoint}", 'out="~/x"', "tiles=[tile_001]"
    )
    result = run(cfg)  # type: ignore[arg-type]
    assert result["out_dir"] == str(home / "x")
    assert sorted(p.name for p in (home / "x").glob("*.tif")) == ["tile_001_s0.tif"]
    assert json.loads((home / "x" / "manifest.json").read_text())["outputs"]
    assert list(work.iterdir()) == []
