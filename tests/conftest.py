"""Shared fixtures: a small toy world generated once per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from synthsat.data import LandCoverDataModule, ToyWorldSource, toyworld

#: GeneratorTask settings small enough for CPU tests (a few thousand parameters).
TINY_GENERATOR: dict[str, Any] = dict(
    z_dim=8,
    net=dict(ngf=4, start_size=4, max_mult=4, spade_hidden=8),
    nef=4,
    ndf=8,
    num_D=1,
    n_layers=2,
    ema=False,
)


#: The job modules with a Hydra entry point (``python -m synthsat.<job>``, ``synthsat-*``).
JOBS = (
    "train_generator",
    "synthesize",
    "train_segmentation",
    "evaluate",
    "evaluate_synthetic",
    "pipeline",
    "layouts",
)


def compose_job(config_name: str, overrides: list[str]) -> Any:
    """``conf/<config_name>.yaml`` composed with ``overrides`` (Hydra initialised for the
    call)."""
    from hydra import compose, initialize_config_dir

    from synthsat import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name, overrides=overrides)


def tiny_generator_cfg(toy_root: Path, tmp_path: Path, run: str, *extra: str) -> Any:
    """The ``train_generator`` config of :func:`tiny_generator_overrides` with a 4-filter
    style encoder and one discriminator, then ``extra``."""
    overrides = tiny_generator_overrides(toy_root, tmp_path, run)
    return compose_job(
        "train_generator", [*overrides, "generator.nef=4", "generator.num_D=1", *extra]
    )


def tiny_generator_overrides(toy_root: Path, tmp_path: Path, run: str) -> list[str]:
    """Hydra overrides of a tiny ``train_generator`` run on the 4-tile toy world into
    ``tmp_path / run``: 2 batches of 4 patches per epoch, validation every 2 steps, no logger.
    Tests append what they vary (steps, samples, seed, ...)."""
    return [
        f"paths.root={tmp_path}",
        f"paths.output_dir={tmp_path / run}",
        f"data.source.root={toy_root}",
        "data.source.tiles=4",
        "data.source.size=128",
        "data.num_workers=0",
        "data.batch_size=4",
        "data.patches_per_epoch=8",
        "data.val_patches=4",
        "generator=cpu",
        "generator.patch_size=32",
        "generator.net.ngf=4",
        "generator.z_dim=8",
        "generator.net.spade_hidden=8",
        "generator.ndf=8",
        "generator.n_layers=2",
        "logger=none",
        "trainer.val_check_interval=2",
    ]


def toy_data_overrides(toy_root: Path) -> list[str]:
    """The 4-tile, 128 px toy world read as is: one 128 px chip per evaluated tile."""
    return [
        f"data.source.root={toy_root}",
        "data.source.tiles=4",
        "data.source.size=128",
        "data.num_workers=0",
        "data.eval_chip_size=128",
    ]


def tiny_segmentation_overrides(toy_root: Path, tmp_path: Path, run: str) -> list[str]:
    """Hydra overrides of a tiny in-process ``train_segmentation`` run on the toy world
    into ``tmp_path / run`` (64 px patches, the tiny network, no logger). Tests append
    what they vary (steps, validation interval, callbacks, seed, ...)."""
    return [
        f"paths.root={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"paths.output_dir={tmp_path / run}",
        *toy_data_overrides(toy_root),
        "data.patch_size=64",
        "data.patches_per_epoch=240",
        "segmentation=tiny",
        "logger=none",
    ]


def segmentation_multirun(work: Path, toy_root: Path, *sweep: str) -> tuple[Path, list[Path]]:
    """Run ``python -m synthsat.train_segmentation -m <sweep>`` from ``work`` as a user
    types it (no ``hydra.sweep.dir``), with the tiny toy-world settings appended.

    Returns:
        the sweep directory and its jobs' ``metrics.json`` files, sorted.
    """
    import subprocess
    import sys

    tiny = [
        *toy_data_overrides(toy_root),
        "data.patch_size=64",
        "data.patches_per_epoch=8",
        "segmentation=tiny",
        "logger=none",
        "trainer.max_steps=1",
    ]
    command = [sys.executable, "-m", "synthsat.train_segmentation", "-m", *sweep, *tiny]
    proc = subprocess.run(
        command, cwd=work, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep_dir,) = (work / "multirun" / "train_segmentation").iterdir()
    return sweep_dir, sorted(sweep_dir.glob("*/metrics.json"))


def real_as_synthetic(toy_root: Path, folder: Path) -> Path:
    """The toy world's real images copied as synthetic tiles (``<stem>_s0.tif``) into
    ``folder``: a valid, cheap ``mix.source``."""
    import shutil

    folder.mkdir()
    for image in sorted((toy_root / "images").glob("*.tif")):
        shutil.copy(image, folder / f"{image.stem}_s0.tif")
    return folder


def toy_datamodule(root: Path, cache_dir: Path, **overrides: Any) -> LandCoverDataModule:
    """A set-up datamodule over the 4-tile, 128 px toy world of :func:`toy_root`."""
    args: dict[str, Any] = dict(
        classes=list(toyworld.CLASSES),
        bands=4,
        ignore_index=0,
        patch_size=64,
        batch_size=4,
        num_workers=0,
        eval_chip_size=128,
        cache_dir=cache_dir,
    )
    args.update(overrides)
    dm = LandCoverDataModule(ToyWorldSource(root, tiles=4, size=128), **args)
    dm.setup()
    return dm


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> Iterator[None]:
    """Small tensors: one intra-op thread is faster and immune to busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def _no_mutmut_stats_in_subprocesses() -> Iterator[None]:
    """mutmut's stats run (``MUTANT_UNDER_TEST=stats``) records which tests reach which
    mutated function; a job a test starts in a subprocess cannot record (mutmut reads its
    config from the working directory, a test's tmp_path) and would fail. The variable is
    taken out of the environment the subprocesses inherit: they run the original code, and
    this process keeps recording (mutmut holds the mode in its own state too). Mutant runs
    (``MUTANT_UNDER_TEST=<mutant>``) keep it: their subprocesses run the mutant."""
    import os

    mode = os.environ.get("MUTANT_UNDER_TEST")
    if mode == "stats":
        del os.environ["MUTANT_UNDER_TEST"]
    yield
    if mode == "stats":
        os.environ["MUTANT_UNDER_TEST"] = mode


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-tile, 128 px toy world (2 train, 1 val, 1 test)."""
    return toyworld.generate(tmp_path_factory.mktemp("toyworld"), tiles=4, size=128, seed=0)


#: Data metadata of the toy world as a checkpoint records it (made-up band statistics).
TOY_METADATA: dict[str, Any] = {
    "classes": list(toyworld.CLASSES),
    "bands": 4,
    "band_names": ["r", "g", "b", "n"],
    "rgb_bands": [0, 1, 2],
    "ignore_index": 0,
    "scored_classes": [1, 2, 3, 4, 5, 6],
    "mean": [90.0, 100.0, 80.0, 120.0],
    "std": [40.0, 35.0, 30.0, 45.0],
}


def tiny_checkpoints(root: Path) -> dict[str, Path]:
    """A tiny untrained generator and segmentation checkpoint of the toy world under
    ``root`` (``generator.ckpt``, ``segmentation.ckpt``), saved by Lightning."""
    import lightning as L

    from synthsat.tasks.generator import GeneratorTask
    from synthsat.tasks.segmentation import SegmentationTask

    generator = GeneratorTask(
        data=TOY_METADATA, patch_size=32, z_dim=8,
        net=dict(ngf=4, start_size=4, max_mult=2, spade_hidden=8),
        nef=4, ndf=4, num_D=1, n_layers=2,
    )  # fmt: skip
    segmenter = SegmentationTask(
        metadata=TOY_METADATA, backbone="resnet18", encoder_depth=3, decoder_channels=[8, 8, 8]
    )
    paths = {}
    for name, task in (("generator", generator), ("segmentation", segmenter)):
        trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
        trainer.strategy.connect(task)
        trainer.save_checkpoint(root / f"{name}.ckpt")
        paths[name] = root / f"{name}.ckpt"
    return paths
