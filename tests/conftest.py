"""Shared fixtures: a small toy world generated once per test session."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import torch

from synthsat.data import LandCoverDataModule, ToyWorldSource, toyworld

if TYPE_CHECKING:
    import lightning as L
    from affine import Affine

    from synthsat.data.sources import TileSource

#: The repository checkout the tests run from (``conf/``, ``synthsat/``, ``pyproject.toml``).
REPO = Path(__file__).resolve().parents[1]

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


def toy_source_overrides(toy_root: Path) -> list[str]:
    """Hydra overrides reading the 4-tile, 128 px toy world at ``toy_root`` in this process
    (no data loader workers)."""
    return [
        f"data.source.root={toy_root}",
        "data.source.tiles=4",
        "data.source.size=128",
        "data.num_workers=0",
    ]


def toy_data_overrides(toy_root: Path) -> list[str]:
    """The 4-tile, 128 px toy world read as is: one 128 px chip per evaluated tile."""
    return [*toy_source_overrides(toy_root), "data.eval_chip_size=128"]


def toy_run_overrides(toy_root: Path, tmp_path: Path, run: str = "run") -> list[str]:
    """Hydra overrides of a job on the toy world (:func:`toy_source_overrides`) with its
    root, cache and output (``tmp_path / run``) under ``tmp_path``."""
    return [
        f"paths.root={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"paths.output_dir={tmp_path / run}",
        *toy_source_overrides(toy_root),
    ]


def compose_toy(job: str, toy_root: Path, tmp_path: Path, *extra: str) -> Any:
    """``conf/<job>.yaml`` composed with :func:`toy_run_overrides` (output ``tmp_path / "run"``),
    then ``extra``."""
    return compose_job(job, [*toy_run_overrides(toy_root, tmp_path), *extra])


def toy_pipeline_overrides(toy_root: Path, tmp_path: Path) -> list[str]:
    """Hydra overrides of a ``pipeline`` study on the toy world (:func:`toy_source_overrides`),
    for the study and, through ``pipeline.data_overrides``, for every stage; its root and
    cache under ``tmp_path``."""
    data = toy_source_overrides(toy_root)
    return [
        f"paths.root={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        *data,
        "pipeline.data_overrides=[" + ",".join(f'"{o}"' for o in data) + "]",
    ]


@contextmanager
def pipeline_config(monkeypatch: pytest.MonkeyPatch, overrides: list[str]) -> Iterator[Any]:
    """The ``pipeline`` config of ``overrides``, its Hydra config set as ``@hydra.main`` sets
    it (the stages read its choices; restored after the test); Hydra stays initialised on
    ``conf/`` inside the block, so the study can compose its stages."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from synthsat import config_dir

    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("pipeline", overrides=overrides, return_hydra_config=True)
        hydra_config = HydraConfig.instance()
        monkeypatch.setattr(hydra_config, "cfg", hydra_config.cfg)  # restored afterwards
        hydra_config.set_config(cfg)
        yield cfg


def toy_synthesize_overrides(toy_root: Path, tmp_path: Path) -> list[str]:
    """Hydra overrides of a ``synthesize`` run on the toy world on the CPU: the data cache
    in ``tmp_path / "cache"``, the output in ``tmp_path / "run"``. No logger is chosen."""
    return [
        *toy_source_overrides(toy_root),
        f"data.cache_dir={tmp_path / 'cache'}",
        f"paths.root={tmp_path}",
        f"paths.output_dir={tmp_path / 'run'}",
        "trainer=cpu",
    ]


def compose_synthesize(toy_root: Path, tmp_path: Path, *extra: str) -> Any:
    """The ``synthesize`` config of :func:`toy_synthesize_overrides` without a logger, then
    ``extra``."""
    overrides = [*toy_synthesize_overrides(toy_root, tmp_path), "logger=none", *extra]
    return compose_job("synthesize", overrides)


def tiny_segmentation_overrides(toy_root: Path, tmp_path: Path, run: str) -> list[str]:
    """Hydra overrides of a tiny in-process ``train_segmentation`` run on the toy world
    into ``tmp_path / run`` (64 px patches, the tiny network, no logger). Tests append
    what they vary (steps, validation interval, callbacks, seed, ...)."""
    return [
        *toy_run_overrides(toy_root, tmp_path, run),
        "data.eval_chip_size=128",
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
    run_ok(command, cwd=work)
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


def run_ok(
    command: Sequence[str], timeout: float = 600, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """``command`` run to its end (``kwargs`` as :func:`subprocess.run` takes them, output
    captured as text): its ``CompletedProcess``. Fails the test, with the tail of its
    stderr, unless it exits 0."""
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def make_datamodule(
    source: TileSource, cache: Path, setup: bool = True, **args: Any
) -> LandCoverDataModule:
    """A :class:`LandCoverDataModule` over ``source`` (``args`` as it takes them) caching in
    ``cache``; set up unless ``setup`` is false."""
    dm = LandCoverDataModule(source, cache_dir=cache, **args)
    if setup:
        dm.setup()
    return dm


def toy_datamodule(
    root: Path, cache: Path, setup: bool = True, **overrides: Any
) -> LandCoverDataModule:
    """A datamodule over the 4-tile, 128 px toy world of :func:`toy_root`: 64 px patches in
    batches of 4, 128 px evaluation chips, then ``overrides``; set up as
    :func:`make_datamodule` does."""
    args: dict[str, Any] = dict(
        classes=list(toyworld.CLASSES),
        bands=4,
        ignore_index=0,
        patch_size=64,
        batch_size=4,
        num_workers=0,
        eval_chip_size=128,
    )
    args.update(overrides)
    source = ToyWorldSource(root, tiles=4, size=128)
    return make_datamodule(source, cache, setup, **args)


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

    from synthsat.tasks.generator import GeneratorTask
    from synthsat.tasks.segmentation import SegmentationTask

    generator = GeneratorTask(
        metadata=TOY_METADATA, patch_size=32, z_dim=8,
        net=dict(ngf=4, start_size=4, max_mult=2, spade_hidden=8),
        nef=4, ndf=4, num_D=1, n_layers=2,
    )  # fmt: skip
    segmenter = SegmentationTask(
        metadata=TOY_METADATA, backbone="resnet18", encoder_depth=3, decoder_channels=[8, 8, 8]
    )
    return {
        name: save_task(task, root / f"{name}.ckpt")
        for name, task in (("generator", generator), ("segmentation", segmenter))
    }


def quiet_trainer(**kwargs: Any) -> L.Trainer:
    """A Lightning ``Trainer`` with no logger, progress bar or model summary, then
    ``kwargs``."""
    import lightning as L

    return L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, **kwargs)


def save_task(task: L.LightningModule, path: Path) -> Path:
    """``task`` saved as Lightning saves a checkpoint (no training, on the CPU), at ``path``."""
    trainer = quiet_trainer(max_steps=0, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(task)
    trainer.save_checkpoint(path)
    return path


def write_geotiff(
    path: Path, data: np.ndarray, crs: Any, transform: Affine, nodata: float | None = None
) -> Path:
    """``data`` (bands x height x width) written as a GeoTIFF at ``path`` (its folder made)
    in ``crs`` on the grid ``transform``, with ``nodata`` if given."""
    import rasterio

    path.parent.mkdir(parents=True, exist_ok=True)
    bands, height, width = data.shape
    with rasterio.open(
        path, "w", driver="GTiff", width=width, height=height, count=bands, dtype=data.dtype,
        crs=crs, transform=transform, nodata=nodata,
    ) as dst:  # fmt: skip
        dst.write(data)
    return path


def assert_on_toy_masks(out: Path, names: list[str], toy_root: Path) -> None:
    """Each synthetic tile ``out / name`` (``tile_XXX_s<k>.tif``) lies on the grid of its
    toy world mask (CRS, transform and size) with the toy world's 4 uint8 bands, named as
    ``conf/data/toyworld.yaml`` names them."""
    import rasterio

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


class ToyChipGenerator(torch.nn.Module):
    """A stand-in chip generator for the toy world: its 7 classes, 32 px chips. Subclasses
    give ``out_bands``, ``z_dim``, ``generate`` and (with an encoder) ``encode``, as
    :class:`~synthsat.synthesis.TileSynthesizer` reads them."""

    num_classes = 7
    chip_size = 32


#: The fields every synthesis record starts with (``SynthesizerBase.record``), in order.
RECORD_HEAD = ["tile", "sample", "source_mask", "source_image", "seed", "tile_seed"]

#: The opening of a stand-in stage module: ``out`` is the run directory that the stage
#: passes as ``hydra.run.dir=...``.
STAND_IN_HEAD = """\
import sys
from pathlib import Path
out = Path(next(a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("hydra.run.dir=")))
"""


def modules_on_path(
    folder: Path, monkeypatch: pytest.MonkeyPatch, modules: dict[str, str], *also: Path
) -> Path:
    """``modules`` (name: source) written as ``<name>.py`` into a new ``folder``, which goes
    on the stage processes' ``PYTHONPATH`` (before ``also``) for the test."""
    folder.mkdir()
    for name, source in modules.items():
        (folder / f"{name}.py").write_text(source)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), *map(str, also)]))
    return folder


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 120.0) -> None:
    """Wait for ``condition`` (a signal from a process); ``seconds`` only bounds a failure."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
