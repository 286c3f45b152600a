"""The synthesis command end to end with a (random-init) GeneratorTask checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import rasterio
from hydra import compose, initialize_config_dir

from synthsat.data import DataError, toyworld
from synthsat.synthesis import load_chip_generator
from synthsat.synthesize import run
from synthsat.tasks.generator import GeneratorTask

REPO = Path(__file__).resolve().parents[1]
CLASSES = list(toyworld.CLASSES)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-init GeneratorTask for the toy world, saved by a Lightning Trainer."""
    data = {
        "classes": CLASSES,
        "bands": 4,
        "band_names": ["r", "g", "b", "n"],
        "rgb_bands": [0, 1, 2],
        "ignore_index": 0,
        "scored_classes": [1, 2, 3, 4, 5, 6],
        "mean": [90.0, 100.0, 80.0, 120.0],
        "std": [40.0, 35.0, 30.0, 45.0],
    }
    task = GeneratorTask(
        data=data,
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
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(task)
    path = tmp_path_factory.mktemp("ckpt") / "generator.ckpt"
    trainer.save_checkpoint(path)
    return path


def _compose(toy_root: Path, tmp_path: Path, *extra: str) -> object:
    overrides = [
        f"data.source.root={toy_root}",
        "data.source.tiles=4",
        "data.source.size=128",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.num_workers=0",
        f"paths.root={tmp_path}",
        f"paths.output_dir={tmp_path / 'run'}",
        "trainer=cpu",
        "logger=none",
        *extra,
    ]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="synthesize", overrides=overrides)


def test_adapter_reads_the_checkpoint(checkpoint: Path) -> None:
    gen = load_chip_generator(checkpoint)
    assert (gen.num_classes, gen.out_bands, gen.chip_size, gen.z_dim) == (7, 4, 32, 8)
    assert gen.lambda_div == 2.0 and gen.has_encoder


def test_command_synthesises_georeferenced_tiles(
    checkpoint: Path, toy_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "synthetic"
    cfg = _compose(
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
    for name in names:
        mask = toy_root / "masks" / f"{name[:8]}.tif"
        with rasterio.open(out / name) as dst, rasterio.open(mask) as src:
            assert (dst.crs, dst.transform, dst.width, dst.height) == (
                src.crs,
                src.transform,
                src.width,
                src.height,
            )
            assert dst.count == 4 and dst.dtypes[0] == "uint8"
            # data.band_names / rgb_bands of conf/data/toyworld.yaml; NIR is not alpha
            assert dst.descriptions == ("red", "green", "blue", "nir")
            assert [c.name for c in dst.colorinterp] == ["red", "green", "blue", "undefined"]
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
        _compose(
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
        run(_compose(toy_root, tmp_path, f"ckpt={tmp_path / 'missing.ckpt'}"))  # type: ignore[arg-type]
    with pytest.raises(DataError, match="7 classes"):
        run(
            _compose(
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
    run(_compose(toy_root, tmp_path, f"ckpt={checkpoint}", f"out={out}", "tiles=[tile_001]"))  # type: ignore[arg-type]
    assert sorted(p.name for p in out.glob("*.tif")) == ["tile_001_s0.tif"]
    manifest = json.loads((out / "manifest.json").read_text())["outputs"]
    assert manifest[0]["overlap"] == 16  # half of the 32 px chip by default
    with pytest.raises(DataError, match="tile_009"):
        run(_compose(toy_root, tmp_path, f"ckpt={checkpoint}", f"out={out}", "tiles=[tile_009]"))  # type: ignore[arg-type]


def test_out_with_a_tilde_is_one_folder(
    checkpoint: Path, toy_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``out="~/x"``: checked, written and recorded as ``$HOME/x`` (the tiles went to a
    literal ``./~/x`` in the working directory)."""
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    cfg = _compose(toy_root, tmp_path, f"ckpt={checkpoint}", 'out="~/x"', "tiles=[tile_001]")
    result = run(cfg)  # type: ignore[arg-type]
    assert result["out_dir"] == str(home / "x")
    assert sorted(p.name for p in (home / "x").glob("*.tif")) == ["tile_001_s0.tif"]
    assert json.loads((home / "x" / "manifest.json").read_text())["outputs"]
    assert list(work.iterdir()) == []
