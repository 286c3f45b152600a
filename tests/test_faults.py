"""Fault injection (issue 16): bad inputs and failures never give silent wrong results,
never write into the user's data, and print one clear line.

One test (or a few) per case of the issue's table; toy data, CI-sized.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from conftest import (
    TOY_METADATA,
    compose_toy,
    make_datamodule,
    tiny_checkpoints,
    tiny_generator_overrides,
)
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from synthsat.data import DataError, ToyWorldSource, toyworld
from synthsat.errors import CheckpointError, ConfigError
from synthsat.jobs import evaluate as evaluate_job
from synthsat.jobs.synthesize import run as synthesize
from synthsat.jobs.train_generator import train as train_generator
from synthsat.tasks.checkpoints import AtomicCheckpointIO
from synthsat.tasks.segmentation import SegmentationTask


class MeanEncoderGenerator(torch.nn.Module):
    """Chips are the style code; the code is the real chip's band means (NaN spreads)."""

    num_classes, out_bands, chip_size, z_dim = 7, 4, 32, 4

    def generate(self, onehot: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return z[:, :, None, None].expand(-1, -1, *onehot.shape[2:]).clone()

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu = image.mean(dim=(2, 3))
        return mu, torch.full_like(mu, -60.0)


REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
CLASSES = list(toyworld.CLASSES)
METADATA = TOY_METADATA


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny generator and a tiny segmentation checkpoint for the toy world."""
    return tiny_checkpoints(tmp_path_factory.mktemp("ckpts"))


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
    # Generated again with other parameters (asked for: a source never does it, see
    # tests/test_toyworld.py), the toy world it made is replaced (stale tiles removed).
    toyworld.generate(root, tiles=3, size=64, seed=1)
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


# -- out= inside the data folder ----------------------------------------------------------
@pytest.mark.parametrize("job", ["synthesize", "train_segmentation", "train_generator"])
def test_output_inside_the_data_folder_is_refused(
    job: str, toy_root: Path, tmp_path: Path, checkpoints: dict[str, Path]
) -> None:
    before = _listing(toy_root)
    inside = toy_root / "masks"
    extra = (
        [f"ckpt={checkpoints['generator']}", f"out={inside}"]
        if job == "synthesize"
        else ["logger=none", f"paths.output_dir={inside / 'run'}"]
    )
    cfg = compose_toy(job, toy_root, tmp_path, *extra)
    module = __import__(f"synthsat.{job}", fromlist=["x"])
    entry = module.run if job == "synthesize" else module.train
    with pytest.raises(ConfigError, match=r"is inside the input data folder data\.source\.root"):
        entry(cfg)
    assert _listing(toy_root) == before


def test_pipeline_results_inside_the_data_folder_are_refused(
    toy_root: Path, tmp_path: Path
) -> None:
    from synthsat.jobs.runtime import check_outputs

    cfg = compose_toy(
        "pipeline", toy_root, tmp_path, "experiment=demo", f"pipeline.results_dir={toy_root}"
    )
    with pytest.raises(ConfigError, match="pipeline.results_dir"):
        check_outputs(cfg)


# -- wrong kind / empty / corrupt checkpoints ----------------------------------------------
def test_segmentation_checkpoint_given_to_synthesize(
    toy_root: Path, tmp_path: Path, checkpoints: dict[str, Path]
) -> None:
    ckpt = checkpoints["segmentation"]
    cfg = compose_toy("synthesize", toy_root, tmp_path, f"ckpt={ckpt}", "logger=none")
    with pytest.raises(CheckpointError) as info:
        synthesize(cfg)
    assert str(info.value) == (
        f"ckpt={ckpt}: this is a segmentation checkpoint; synthesize needs a generator checkpoint"
    )


def test_generator_checkpoint_given_to_evaluate(
    toy_root: Path, tmp_path: Path, checkpoints: dict[str, Path]
) -> None:
    ckpt = checkpoints["generator"]
    cfg = compose_toy("evaluate", toy_root, tmp_path, f"ckpt={ckpt}")
    with pytest.raises(CheckpointError) as info:
        evaluate_job.evaluate(cfg)
    assert str(info.value) == (
        f"ckpt={ckpt}: this is a generator checkpoint; evaluate needs a segmentation checkpoint"
    )


def test_empty_and_truncated_checkpoints(
    toy_root: Path, tmp_path: Path, checkpoints: dict[str, Path]
) -> None:
    empty = tmp_path / "empty.ckpt"
    empty.touch()
    with pytest.raises(
        CheckpointError, match=r"^ckpt=.*empty\.ckpt: the file is empty \(0 bytes\)"
    ):
        synthesize(compose_toy("synthesize", toy_root, tmp_path, f"ckpt={empty}", "logger=none"))
    data = checkpoints["segmentation"].read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"^ckpt=.*cut\.ckpt: the file is corrupt"):
        evaluate_job.evaluate(compose_toy("evaluate", toy_root, tmp_path, f"ckpt={cut}"))


# -- disk full while saving a checkpoint ---------------------------------------------------
def test_disk_full_while_saving_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every write to the checkpoint's file system fails half-way (ENOSPC).

    Both ways a checkpoint reaches its folder are cut: ``torch.save`` into a real file,
    and a move from another file system (Lightning's default moves its /tmp file).
    """
    folder = tmp_path / "checkpoints"
    last = folder / "last.ckpt"
    trainer = L.Trainer(
        logger=False,
        enable_checkpointing=False,
        accelerator="cpu",
        plugins=[AtomicCheckpointIO()],
        default_root_dir=tmp_path,
    )
    task = SegmentationTask(
        metadata=METADATA, backbone="resnet18", encoder_depth=3, decoder_channels=[8, 8, 8]
    )
    trainer.strategy.connect(task)
    trainer.save_checkpoint(last)
    good = last.read_bytes()

    def disk_full() -> OSError:
        return OSError(errno.ENOSPC, "No space left on device")

    real_save = torch.save

    def save_half(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(f, io.BytesIO):  # in-memory buffers are fine
            return real_save(obj, f, *args, **kwargs)
        f.write(good[: len(good) // 2])
        raise disk_full()

    def move_half(src: str, dst: str, *args: Any, **kwargs: Any) -> None:
        Path(dst).write_bytes(Path(src).read_bytes()[: len(good) // 2])
        raise disk_full()

    with torch.no_grad():
        next(task.parameters()).add_(1.0)  # a new state to save
    monkeypatch.setattr(torch, "save", save_half)
    monkeypatch.setattr(shutil, "move", move_half)
    with pytest.raises(OSError, match="No space left"):
        trainer.save_checkpoint(last)
    monkeypatch.undo()
    assert last.read_bytes() == good
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]  # no temp file left
    trainer.save_checkpoint(last)  # and the next save works
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert torch.equal(next(iter(state["state_dict"].values())), next(task.parameters()).detach())


def test_trainers_save_checkpoints_atomically(toy_root: Path, tmp_path: Path) -> None:
    from hydra.utils import instantiate

    cfg = compose_toy("train_segmentation", toy_root, tmp_path, "logger=none")
    trainer = instantiate(cfg.trainer, logger=False)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


# -- every error: one or two lines, exit code 2 --------------------------------------------
def test_errors_print_one_line_and_exit_2(tmp_path: Path) -> None:
    empty = tmp_path / "empty.ckpt"
    empty.touch()
    args = [
        sys.executable,
        "-m",
        "synthsat.evaluate",
        f"ckpt={empty}",
        f"paths.root={tmp_path}",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"data.source.root={tmp_path / 'toy'}",
    ]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line != "Seed set to 0"]
    assert lines == [
        f"error: ckpt={empty}: the file is empty (0 bytes); evaluate needs a segmentation "
        "checkpoint",
        "(HYDRA_FULL_ERROR=1 shows the traceback)",
    ]


@pytest.mark.parametrize("how", ["HYDRA_FULL_ERROR", "traceback"])
def test_full_error_and_traceback_still_show_the_trace(
    how: str, tmp_path: Path, toy_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty.ckpt"
    empty.touch()
    extra = ["traceback=true"] if how == "traceback" else []
    cfg = compose_toy("evaluate", toy_root, tmp_path, f"ckpt={empty}", *extra)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    if how == "HYDRA_FULL_ERROR":
        monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    body = evaluate_job.main.__wrapped__  # the entry point under @hydra.main
    with pytest.raises(CheckpointError):
        body(cfg)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    if how == "HYDRA_FULL_ERROR":  # and without it: exit code 2
        with pytest.raises(SystemExit) as exit_info:
            body(cfg)
        assert exit_info.value.code == 2


# -- generator.lambda_div=-1 and other settings out of range -------------------------------
# Keys with a schema (mix.*, generator.*, synthesize's: synthsat/schemas.py) are refused
# earlier, as the config is composed (tests/test_configs.py); these are the others.
@pytest.mark.parametrize(
    ("job", "override", "key"),
    [
        ("pipeline", "pipeline.lambdas=[0,-1]", "pipeline.lambdas"),
        ("train_segmentation", "data.on_nonfinite=skip", "data.on_nonfinite"),
        ("pipeline", "pipeline.ratios=[0,2]", "pipeline.ratios"),
        ("pipeline", "pipeline.steps=[0,100]", "pipeline.steps"),  # issue 25: no 0-step runs
        ("synthesize", "overlap=64", "overlap"),
        ("train_generator", "data.patch_size=16", "data.patch_size"),  # not the generator's
    ],
)
def test_settings_are_checked_before_any_data_is_read(
    job: str, override: str, key: str, tmp_path: Path
) -> None:
    from synthsat.jobs.runtime import prepare_run

    user = tmp_path / "mydata"  # a data read here would be a DataError (not a toy world)
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    extra = {"synthesize": ["chip_size=64", "ckpt=x.ckpt"], "pipeline": ["experiment=demo"]}
    cfg = compose_toy(job, user, tmp_path, override, *extra.get(job, []))
    with pytest.raises(ConfigError, match=rf"^{key}="):
        prepare_run(cfg)
    assert not (tmp_path / "run").exists()


def test_negative_lambda_div_stops_train_generator_before_data(tmp_path: Path) -> None:
    user = tmp_path / "mydata"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(ConfigCompositionException, match="generator.lambda_div=-1") as err:
        compose_toy("train_generator", user, tmp_path, "logger=none", "generator.lambda_div=-1")
    assert "is not a number >= 0\n    full_key: generator.lambda_div" in str(err.value.__cause__)
    # the same config built without the schema: refused before the data is read
    cfg = OmegaConf.create(OmegaConf.to_container(compose_toy("train_generator", user, tmp_path)))
    cfg.generator.lambda_div = -1
    cfg.logger = None
    with pytest.raises(ConfigError, match=r"generator\.lambda_div=-1(\.0)?: must be a number >= 0"):
        train_generator(cfg)


# -- NaN pixels in float imagery; nodata pixels ---------------------------------------------
def _float_world(root: Path, nan_rows: int = 0, nodata: float | None = None) -> Path:
    """A 3-tile toy world (train tile_000) with float32 imagery; ``nan_rows`` rows of tile 0 NaN,
    or (with ``nodata``) its bottom half set to ``nodata`` and declared as such."""
    import numpy as np
    import rasterio

    toyworld.generate(root, tiles=3, size=64, seed=0)
    path = root / "images" / "tile_000.tif"
    with rasterio.open(path) as src:
        image, profile = src.read().astype(np.float32), src.profile
    image[:, :nan_rows] = np.nan
    if nodata is not None:
        image[:, 32:] = nodata
    profile.update(dtype="float32", nodata=nodata)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image)
    return root


def _datamodule(root: Path, tmp_path: Path, **kw: Any) -> Any:
    source = ToyWorldSource(root, tiles=3, size=64)
    args = dict(classes=CLASSES, bands=4, ignore_index=0, patch_size=32, **kw)
    return make_datamodule(source, tmp_path / "cache", **args)


def _valid_stats(path: Path, rows: slice) -> tuple[Any, Any]:
    """Band mean / std over the labelled pixels of ``rows`` of tile ``path``'s image."""
    import numpy as np
    import rasterio

    with rasterio.open(path) as src:
        image = src.read().astype(np.float64)[:, rows]
    with rasterio.open(str(path).replace("images", "masks")) as src:
        mask = src.read(1)[rows]
    pixels = image[:, mask != 0]
    return pixels.mean(1), pixels.std(1)


def test_nan_pixels_are_an_error_naming_the_file_and_count(tmp_path: Path) -> None:
    root = _float_world(tmp_path / "tw", nan_rows=5)
    with pytest.raises(DataError, match=r"tile_000\.tif: 320 of 4096 pixel\(s\) hold NaN"):
        _datamodule(root, tmp_path)


def test_nan_pixels_ignored_are_unlabelled_and_left_out_of_statistics(tmp_path: Path) -> None:
    import numpy as np

    root = _float_world(tmp_path / "tw", nan_rows=5)
    dm = _datamodule(root, tmp_path, on_nonfinite="ignore")
    tile = dm.tiles["train"][0]
    assert np.isfinite(tile.image).all()
    assert (tile.mask[:5] == 0).all() and (tile.mask[5:] != 0).any()
    # Training statistics (train = tile_000 only): the labelled pixels below the NaN rows.
    mean, std = _valid_stats(root / "images" / "tile_000.tif", slice(5, None))
    np.testing.assert_allclose(dm.normalizer.mean, mean, rtol=1e-5)
    np.testing.assert_allclose(dm.normalizer.std, std, rtol=1e-4)
    assert torch.isfinite(next(iter(dm.train_dataloader()))["image"]).all()


def test_nodata_pixels_are_unlabelled_and_left_out_of_statistics(tmp_path: Path) -> None:
    import numpy as np

    root = _float_world(tmp_path / "tw", nodata=0.0)
    dm = _datamodule(root, tmp_path)  # nodata declared: no error, even on_nonfinite=error
    tile = dm.tiles["train"][0]
    assert (tile.mask[32:] == 0).all()
    mean, std = _valid_stats(root / "images" / "tile_000.tif", slice(0, 32))
    np.testing.assert_allclose(dm.normalizer.mean, mean, rtol=1e-5)
    np.testing.assert_allclose(dm.normalizer.std, std, rtol=1e-4)


def test_encoder_synthesis_never_writes_nan(tmp_path: Path) -> None:
    import numpy as np
    import rasterio

    from synthsat.synthesis import TileSynthesizer, make_requests

    root = _float_world(tmp_path / "tw", nan_rows=5)
    tile = ("tile_000", root / "masks" / "tile_000.tif", root / "images" / "tile_000.tif")
    request = make_requests([tile], tmp_path / "out", 1, 0)[0]
    synth = TileSynthesizer(
        MeanEncoderGenerator(), [90.0] * 4, [40.0] * 4, 0, style="encoder", style_scope="chip"
    )
    synth.run(request)
    with rasterio.open(request.output) as src:
        out = src.read()
    assert np.isfinite(out).all()


# -- synthesize style=encoder with an image in another CRS or shifted 10 m ------------------
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"crs": "EPSG:32617"}, r"tile_000\.tif: image CRS EPSG:32617 differs from mask CRS"),
        ({"shift": 10.0}, r"tile_000\.tif: image and mask .*masks/tile_000\.tif are not aligned"),
        ({"bands": 3}, r"tile_000\.tif: image has 3 band\(s\) but the checkpoint's generator"),
    ],
)
def test_synthesis_runs_the_training_grid_checks(
    change: dict[str, Any], message: str, toy_root: Path, tmp_path: Path
) -> None:
    import rasterio
    from rasterio.transform import Affine

    from synthsat.synthesis import TileSynthesizer, make_requests

    image = tmp_path / "images" / "tile_000.tif"
    image.parent.mkdir()
    with rasterio.open(toy_root / "images" / "tile_000.tif") as src:
        data, profile = src.read(), src.profile
    if "crs" in change:
        profile["crs"] = change["crs"]
    if "shift" in change:
        profile["transform"] = profile["transform"] @ Affine.translation(change["shift"], 0)
    data = data[: change.get("bands", 4)]
    profile["count"] = len(data)
    with rasterio.open(image, "w", **profile) as dst:
        dst.write(data)
    tile = ("tile_000", toy_root / "masks" / "tile_000.tif", image)
    request = make_requests([tile], tmp_path / "out", 1, 0)[0]
    synth = TileSynthesizer(MeanEncoderGenerator(), [90.0] * 4, [40.0] * 4, 0, style="encoder")
    with pytest.raises(DataError, match=message):
        synth.run(request)
    assert not request.output.exists()


# -- palette PNG masks; RGB colour masks and colour_map --------------------------------------
#: Class colours of a 6-class scheme (the Dubai data set's), in class order.
COLOURS = [
    (60, 16, 152), (132, 41, 246), (110, 193, 228), (254, 221, 58), (226, 169, 41),
    (155, 155, 155),
]  # fmt: skip
#: Their classes, keyed as a data config may write them.
COLOUR_MAP = {
    "#3C1098": 0, "#8429f6": 1, "110,193,228": 2, "254, 221, 58": 3, "#e2a929": 4,
    "155 155 155": 5,
}  # fmt: skip
#: Palette of the palette masks: index i shows the colour of class PERM[i].
PERM = [3, 5, 0, 4, 1, 2]
#: The masks' indices: every index on every row, shifted by the row (as written).
INDICES = (np.arange(24)[None, :] + np.arange(24)[:, None]) % 6


def _colour_world(root: Path, masks: dict[str, Any], suffix: str = ".png") -> Path:
    """An image folder data set: tiles a (train), b (val), c (test) of 24 x 24 px; the
    mask of each is a palette index array (mode ``P``, palette ``PERM``) or RGB colours."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name, mask in masks.items():
        image = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "images" / f"{name}.png")
        if mask.ndim == 2:
            written = Image.fromarray(mask.astype(np.uint8), mode="P")
            written.putpalette([v for i in PERM for v in COLOURS[i]])
        else:
            written = Image.fromarray(mask.astype(np.uint8), mode="RGB")
        written.save(root / "masks" / f"{name}{suffix}")
    return root


def _colour_dm(root: Path, tmp_path: Path, colour_map: dict[str, int] | None = None) -> Any:
    """The data module over :func:`_colour_world`; ``colour_map`` arrives as a data config
    gives it (a ``DictConfig`` with string keys)."""
    from omegaconf import OmegaConf

    from synthsat.data import ImageFolderSource

    source = ImageFolderSource(
        root,
        splits={"train": ["a"], "val": ["b"], "test": ["c"]},
        colour_map=None if colour_map is None else OmegaConf.create(colour_map),
    )
    args = dict(classes=list("BLRVWU"), bands=3, ignore_index=255, patch_size=16)
    return make_datamodule(source, tmp_path / "cache", **args)


def _rgb(classes: np.ndarray) -> np.ndarray:
    return np.array(COLOURS, np.uint8)[classes]


def test_palette_mask_is_read_as_its_indices_with_a_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The palette shows index i in class PERM[i]'s colour: the indices are what is read
    (as written, not the colours' classes), and a note says so; with a colour_map the
    palette's colours are the classes."""
    root = _colour_world(tmp_path / "pal", {n: INDICES for n in "abc"})
    with caplog.at_level("INFO", logger="synthsat.data.masks"):
        dm = _colour_dm(root, tmp_path)
    train = np.asarray(dm.tiles["train"][0].mask)
    assert train[0, :8].tolist() == [0, 1, 2, 3, 4, 5, 0, 1]
    assert train[5, :3].tolist() == [5, 0, 1]
    np.testing.assert_array_equal(train, INDICES)
    notes = [r.getMessage() for r in caplog.records]
    assert f"{root / 'masks' / 'a.png'}: palette mask: read as its palette indices, as written" in (
        " ".join(notes)
    )
    assert len(notes) == 3  # one per mask

    caplog.clear()
    with caplog.at_level("INFO", logger="synthsat.data.masks"):
        mapped = _colour_dm(root, tmp_path, COLOUR_MAP)  # a new cache entry: the map differs
    train = np.asarray(mapped.tiles["train"][0].mask)
    assert train[0, :8].tolist() == [3, 5, 0, 4, 1, 2, 3, 5]
    np.testing.assert_array_equal(train, np.array(PERM)[INDICES])
    assert "classes taken from its palette colours" in caplog.records[0].getMessage()


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_rgb_mask_with_a_colour_map_gives_the_mapped_classes(
    suffix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("synthsat.data.masks.STRIP_PIXELS", 24 * 5)  # decoded in 5 strips
    classes = (np.arange(24)[None, :] // 4 + np.arange(24)[:, None] // 12) % 6
    root = _colour_world(tmp_path / "rgb", {n: _rgb(classes) for n in "abc"}, suffix)
    dm = _colour_dm(root, tmp_path, COLOUR_MAP)
    train = np.asarray(dm.tiles["train"][0].mask)
    assert train[0, ::4].tolist() == [0, 1, 2, 3, 4, 5]
    assert train[12, ::4].tolist() == [1, 2, 3, 4, 5, 0]
    np.testing.assert_array_equal(train, classes)
    assert train.dtype == np.uint8  # cached as class indices, like any mask
    # Band statistics over the labelled pixels (all of them): the image's own.
    from PIL import Image

    image = np.asarray(Image.open(root / "images" / "a.png"), np.float64)
    np.testing.assert_allclose(dm.normalizer.mean, image.mean((0, 1)), rtol=1e-6)


def _synth_classes(mask: Path, tmp_path: Path, colour_map: dict[str, int]) -> np.ndarray:
    """Synthesise ``mask`` with a generator that writes each pixel's class index."""
    import rasterio

    from synthsat.synthesis import TileSynthesizer, make_requests

    class ClassGenerator(torch.nn.Module):
        num_classes, out_bands, chip_size, z_dim = 6, 1, 16, 2

        def generate(self, onehot: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            return onehot.argmax(1, keepdim=True).float()

    request = make_requests([("m", mask, None)], tmp_path / "out", 1, 0)[0]
    synth = TileSynthesizer(
        ClassGenerator(), [0.0], [1.0], 255, dtype="uint8", colour_map=colour_map
    )
    synth.run(request)
    with rasterio.open(request.output) as src:
        return src.read(1)


def test_synthesis_reads_colour_masks_as_classes(tmp_path: Path) -> None:
    import rasterio
    from rasterio.transform import from_origin

    classes = (np.arange(40)[None, :] // 5 + np.arange(40)[:, None] // 20) % 6
    mask = tmp_path / "m.tif"
    profile = dict(driver="GTiff", width=40, height=40, count=3, dtype="uint8")
    profile |= dict(crs="EPSG:32618", transform=from_origin(500000, 4000000, 1, 1))
    with rasterio.open(mask, "w", **profile) as dst:
        dst.write(np.moveaxis(_rgb(classes), 2, 0))
    out = _synth_classes(mask, tmp_path, COLOUR_MAP)
    assert out[0, ::5].tolist() == [0, 1, 2, 3, 4, 5, 0, 1]
    np.testing.assert_array_equal(out, classes)


@pytest.mark.parametrize("where", ["training", "synthesis"])
def test_unmapped_colour_is_an_error_naming_the_file_and_colour(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("synthsat.data.masks.STRIP_PIXELS", 24 * 5)  # counted over strips
    classes = np.zeros((24, 24), np.int64)
    bad = _rgb(classes)
    bad[3, 2:9] = (1, 2, 3)  # 7 pixels in a colour the map does not list
    bad[20, 20] = (250, 0, 0)  # and one more
    masks = {"a": _rgb(classes), "b": bad, "c": _rgb(classes)}
    root = _colour_world(tmp_path / "bad", masks)
    message = (
        rf"{root / 'masks' / 'b.png'}: 8 pixel\(s\) have 2 colour\(s\) that "
        r"data\.source\.colour_map does not list: \(1, 2, 3\) #010203: 7 px, "
        r"\(250, 0, 0\) #fa0000: 1 px; add them"
    )
    with pytest.raises(DataError, match=message):
        if where == "training":
            _colour_dm(root, tmp_path, COLOUR_MAP)
        else:
            _synth_classes(root / "masks" / "b.png", tmp_path, COLOUR_MAP)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_ambiguous_masks_are_errors_naming_the_file(tmp_path: Path) -> None:
    from PIL import Image

    classes = np.zeros((24, 24), np.int64)
    classes[:6] = 2  # 144 px of class 2's colour, 432 of class 0's
    root = _colour_world(tmp_path / "rgb", {n: _rgb(classes) for n in "abc"})
    a = root / "masks" / "a.png"
    with pytest.raises(
        DataError,
        match=rf"{a}: mask has 3 bands of RGB colours \(2 colour\(s\): \(60, 16, 152\) #3c1098: "
        r"432 px, \(110, 193, 228\) #6ec1e4: 144 px\), but data\.source\.colour_map",
    ):
        _colour_dm(root, tmp_path)  # RGB without a colour map
    Image.fromarray(classes.astype(np.uint8)).save(a)  # 1 band of values, with a colour map
    with pytest.raises(DataError, match=rf"{a}: mask has 1 band of class values \(no palette\)"):
        _colour_dm(root, tmp_path, COLOUR_MAP)
    with pytest.raises(DataError, match=r"colour \(60, 16, 152\) #3c1098 is mapped twice"):
        _colour_dm(root, tmp_path, {**COLOUR_MAP, "60,16,152": 1})
    with pytest.raises(DataError, match=r"outside the class list 0\.\.5 .*#000000 -> 7"):
        _colour_dm(root, tmp_path, {**COLOUR_MAP, "#000000": 7})


def test_a_bad_colour_map_prints_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A data error found while Hydra builds the data module (which wraps it in an
    InstantiationException) still prints one line and exits 2."""
    from omegaconf import open_dict

    from synthsat.jobs import train_segmentation

    root = _colour_world(tmp_path / "rgb", {n: _rgb(INDICES) for n in "abc"})
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train_segmentation",
            overrides=[
                f"paths.root={tmp_path}",
                f"paths.output_dir={tmp_path / 'run'}",
                "data=dubai",
                f"data.source.root={root}",
                "logger=none",
            ],
        )
    with open_dict(cfg):
        cfg.data.source.colour_map = {**COLOUR_MAP, "#000000": 9}
    with pytest.raises(SystemExit) as exit_info:
        train_segmentation.main.__wrapped__(cfg)  # the entry point under @hydra.main
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[0] == (
        "error: data.source.colour_map maps colours to classes outside the class list 0..5 "
        "and ignore index 255: (0, 0, 0) #000000 -> 9"
    )


# -- kill -9 mid-training, then rerun ---------------------------------------------------------
_STALL = '''
import time
from pathlib import Path

import lightning as L


class Stall(L.Callback):
    """Hold the run once generator step ``step`` is done (its checkpoint not yet written)."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, Path(marker)

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step >= self.step:
            self.marker.write_text(str(trainer.global_step))
            time.sleep(600)
'''


def _generator_overrides(toy_root: Path, tmp_path: Path, run: str) -> list[str]:
    """A tiny generator run on the toy world into ``tmp_path / run``: 2 batches of 4
    patches per epoch, validation and checkpoints every 2 generator steps (at each epoch's
    end), lambda_div on."""
    return [
        *tiny_generator_overrides(toy_root, tmp_path, run),
        f"paths.cache_dir={tmp_path / 'cache'}",
        "callbacks.samples.every_n_steps=0",
        "generator.lambda_div=2",
        "trainer.max_steps=4",
        "seed=3",
    ]


def test_kill_9_mid_training_then_rerun_matches_an_uninterrupted_run(
    toy_root: Path, tmp_path: Path
) -> None:
    """``python -m synthsat.train_generator`` killed with SIGKILL after generator step 3 (its
    last checkpoint: step 2), rerun with ``ckpt_path=<killed>/checkpoints/last.ckpt``: the
    rerun reaches step 4 with weights, EMA weights, batch-norm statistics and Adam states
    bit-equal to those of an uninterrupted run with the same seed.

    Exact because the checkpoint carries the random generators' states
    (``RandomStateCheckpoint``: patches, codes, noise, LabelMix coins continue the same
    draws) and was written at an epoch's end, where the data loader has drawn nothing
    ahead. Without those states all 330 floating-point tensors of the 353 differ.
    """
    import signal
    import time

    (tmp_path / "stall_callback.py").write_text(_STALL)
    env = {**os.environ, "SYNTHSAT_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    marker, log = tmp_path / "stalled", tmp_path / "killed.log"
    with log.open("w") as stderr:
        killed = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "synthsat.train_generator",
                *_generator_overrides(toy_root, tmp_path, "killed"),
                f"hydra.run.dir={tmp_path / 'killed'}",
                "+callbacks.stall._target_=stall_callback.Stall",
                "+callbacks.stall.step=3",
                f"+callbacks.stall.marker={marker}",
            ],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        # Meanwhile, the uninterrupted run (in this process: same code, one thread).
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("train_generator", _generator_overrides(toy_root, tmp_path, "whole"))
        whole = Path(train_generator(cfg)["checkpoint"])
        deadline = time.monotonic() + 120
        while not marker.exists() and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), log.read_text()[-3000:]
        os.kill(killed.pid, signal.SIGKILL)
    finally:
        killed.kill()
        killed.wait()
    assert killed.returncode == -signal.SIGKILL
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    at_kill = torch.load(last, map_location="cpu", weights_only=False)
    assert at_kill["global_step"] == 2

    # The rerun: the same run resumed from the killed one's last checkpoint (in this
    # process, as the uninterrupted run: a third interpreter start would double the
    # test's time; the killed run is the one that must be a process of its own).
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train_generator",
            [*_generator_overrides(toy_root, tmp_path, "resumed"), f"ckpt_path={last}"],
        )
    resumed = Path(train_generator(cfg)["checkpoint"])
    final = torch.load(resumed, map_location="cpu", weights_only=False)
    reference = torch.load(whole, map_location="cpu", weights_only=False)
    assert final["global_step"] == reference["global_step"] == 4
    assert final["state_dict"].keys() == reference["state_dict"].keys()
    different = [
        k for k, v in reference["state_dict"].items() if not torch.equal(v, final["state_dict"][k])
    ]
    assert different == []
    moved = [
        k for k, v in at_kill["state_dict"].items() if not torch.equal(v, final["state_dict"][k])
    ]
    assert len(moved) == len(final["state_dict"]) == 353  # steps 3 and 4 moved every tensor
    assert int(final["state_dict"]["batches_seen"]) == 4
    for ours, theirs in zip(final["optimizer_states"], reference["optimizer_states"], strict=True):
        for a, b in zip(ours["state"].values(), theirs["state"].values(), strict=True):
            assert all(torch.equal(a[k], b[k]) for k in ("step", "exp_avg", "exp_avg_sq"))
