"""Data-parallel jobs (``trainer=ddp_cpu``): 2 CPU processes over gloo on the toy world.

Each job runs as a user types it (``python -m synthsat.<job> ... trainer=ddp_cpu``) in a
subprocess: Lightning's DDP launcher starts the second process by running the same
command again. A :class:`RankProbe` callback (added with ``+callbacks.probe``) saves what
each rank saw and ended with to ``<run dir>/probe/rank<r>.pt``, so the tests compare the
ranks with each other and with one process.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import numpy as np
import pytest
import rasterio
import torch

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


class RankProbe(L.Callback):
    """Record, per rank, the training patches, test chips and synthesis requests it got,
    its weights before and after training and its final metrics (``probe/rank<r>.pt``)."""

    def __init__(self) -> None:
        self.record: dict[str, Any] = {"train": [], "test": [], "predict": []}

    def _save(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record.update(
            rank=trainer.global_rank,
            world_size=trainer.world_size,
            global_step=trainer.global_step,
            metrics={k: float(v) for k, v in trainer.callback_metrics.items()},
        )
        out = Path(trainer.default_root_dir) / "probe"
        out.mkdir(parents=True, exist_ok=True)
        torch.save(self.record, out / f"rank{trainer.global_rank}.pt")

    @staticmethod
    def _weights(pl_module: L.LightningModule) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record["initial"] = self._weights(pl_module)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *_: Any
    ) -> None:
        self.record["train"].append(_places(batch))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record["final"] = self._weights(pl_module)
        self._save(trainer, pl_module)

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *_: Any
    ) -> None:
        self.record["test"].extend(_places(batch))

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer, pl_module)

    def on_predict_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *_: Any
    ) -> None:
        self.record["predict"].extend(r.output.name for r in batch)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer, pl_module)


def _places(batch: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(tile, row, col) of every sample of a batch."""
    rows, cols = batch["row"].tolist(), batch["col"].tolist()
    return list(zip(batch["tile"], rows, cols, strict=True))


def _run_job(job: str, run_dir: Path, *overrides: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``python -m synthsat.<job> <overrides> trainer=ddp_cpu`` with the probe; the two
    ranks' records."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)])}
    for key in ("LOCAL_RANK", "NODE_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)  # a job of its own, whatever launched pytest
    command = [
        sys.executable,
        "-m",
        f"synthsat.{job}",
        *overrides,
        f"paths.output_dir={run_dir}",
        "trainer=ddp_cpu",
        "+callbacks.probe._target_=test_ddp.RankProbe",
    ]
    proc = subprocess.run(
        command, cwd=run_dir.parent, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [torch.load(run_dir / "probe" / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [(p["rank"], p["world_size"]) for p in ranks] == [(0, 2), (1, 2)]
    return ranks[0], ranks[1]


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- the pieces, in one process -----------------------------------------------------------
def test_each_rank_gets_its_own_random_streams() -> None:
    from synthsat.tasks.distributed import rank_seed, split_random_streams

    torch.manual_seed(5)
    before = torch.get_rng_state()
    assert split_random_streams(SimpleNamespace(world_size=1, global_rank=0)) is None
    assert torch.equal(torch.get_rng_state(), before)  # one process: untouched

    draws = {}
    for rank in (0, 1):
        torch.manual_seed(5)  # every rank starts alike
        seed = split_random_streams(SimpleNamespace(world_size=2, global_rank=rank))
        draws[rank] = (seed, torch.rand(3), np.random.rand(), random.random())
    assert draws[0][0] != draws[1][0]
    assert not torch.equal(draws[0][1], draws[1][1])
    assert draws[0][2] != draws[1][2] and draws[0][3] != draws[1][3]
    torch.manual_seed(5)  # the same shared state: the same stream again
    assert split_random_streams(SimpleNamespace(world_size=2, global_rank=1)) == draws[1][0]
    assert torch.equal(torch.rand(3), draws[1][1])
    assert rank_seed(7, 0) == rank_seed(7, 0) != rank_seed(7, 1)
    assert 0 <= rank_seed(7, 1) < 2**63


def test_evaluation_sets_are_split_without_repeats(toy_root: Path, tmp_path: Path) -> None:
    from conftest import toy_datamodule

    dm = toy_datamodule(toy_root, tmp_path / "cache", eval_chip_size=48, eval_batch_size=1)
    assert len(dm.eval_dataset("test")) == 9
    assert dm.eval_sampler(dm.eval_dataset("test")) is None  # no trainer: one process
    shares = []
    for rank in (0, 1):
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)  # type: ignore[assignment]
        loader = dm.test_dataloader()
        shares.append([(b["row"].item(), b["col"].item()) for b in loader])
    assert [len(s) for s in shares] == [5, 4]
    assert sorted(shares[0] + shares[1]) == [(r, c) for r in (0, 48, 96) for c in (0, 48, 96)]
    dm.trainer = SimpleNamespace(world_size=10, global_rank=0)  # type: ignore[assignment]
    assert dm.eval_sampler(dm.eval_dataset("test")) is None  # fewer chips than ranks
    dm.trainer = None


def test_only_rank_zero_writes_the_run_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning.fabric.utilities.rank_zero import rank_zero_only
    from omegaconf import OmegaConf

    from synthsat.jobs.runtime import finish_run, prepare_run

    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path / "run")}, "seed": None})
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    out = prepare_run(cfg)
    assert finish_run(out, {"steps": 3}) == {"steps": 3, "run_dir": str(out.resolve())}
    assert list(out.iterdir()) == []  # rank 1: nothing written
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    finish_run(prepare_run(cfg), {"steps": 3})
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "metrics.json"]


def test_synthesis_needs_a_tile_for_every_process(tmp_path: Path) -> None:
    from synthsat.errors import ConfigError
    from synthsat.synthesis import TileRequest, run_synthesis

    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_checkpointing=False
    )
    request = TileRequest("t", tmp_path / "t.tif", None, 0, 0, tmp_path / "t_s0.tif")
    with pytest.raises(ConfigError, match=r"1 tile\(s\) to synthesise for 2 processes"):
        run_synthesis(object(), [request], tmp_path, trainer)  # type: ignore[arg-type]


# -- generator ---------------------------------------------------------------------------
def test_generator_trains_in_sync_on_two_processes(toy_root: Path, tmp_path: Path) -> None:
    """Both ranks make every step on patches of their own; DDP keeps the weights equal;
    the validation score is the ranks' mean; the checkpoints are rank 0's, written once."""
    from conftest import tiny_generator_overrides

    run = tmp_path / "gen"
    overrides = [
        o for o in tiny_generator_overrides(toy_root, tmp_path, "gen") if "output_dir" not in o
    ]
    rank0, rank1 = _run_job(
        "train_generator",
        run,
        *overrides,
        "data.patches_per_epoch=16",  # 8 a rank: 2 batches of 4
        "trainer.max_steps=2",
        "callbacks.samples.every_n_steps=2",
    )
    # every rank made the 2 generator steps, each on 4 patches a batch ...
    assert rank0["global_step"] == rank1["global_step"] == 2
    assert [len(b) for b in rank0["train"]] == [len(b) for b in rank1["train"]] == [4, 4]
    # ... patches of its own (the same patches would be 2 copies of one batch)
    for mine, theirs in zip(rank0["train"], rank1["train"], strict=True):
        assert mine != theirs
    # the same weights before (broadcast) and after (all-reduced gradients) the steps;
    # only batch-norm running statistics are each rank's own (of its patches; DDP
    # broadcasts rank 0's before every training forward, and the checkpoint is rank 0's)
    assert _same_weights(rank0["initial"], rank1["initial"])
    differ = {k for k in rank0["final"] if not torch.equal(rank0["final"][k], rank1["final"][k])}
    assert differ and all(k.endswith(("running_mean", "running_var")) for k in differ)
    params = [k for k in rank0["final"] if k.endswith("weight") and k not in differ]
    assert any(not torch.equal(rank0["final"][k], rank0["initial"][k]) for k in params)
    # losses of each rank's own patches, gradients (norms) of both ranks' patches
    m0, m1 = rank0["metrics"], rank1["metrics"]
    assert m0["train/g_total"] != m1["train/g_total"]
    assert m0["train/g_grad_norm"] == m1["train/g_grad_norm"]
    assert m0["train/d_grad_norm"] == m1["train/d_grad_norm"]
    # validation on different patches per rank, the logged score their mean on both
    assert m0["val/score"] == m1["val/score"]

    checkpoints = run / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best-step000002.ckpt", "last.ckpt"]
    last = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 2
    assert _same_weights(last["state_dict"], rank0["final"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["score"] == pytest.approx(m0["val/score"])
    assert metrics["checkpoint"] == str((checkpoints / "last.ckpt").resolve())
    grids = sorted(p.name for p in (run / "samples").iterdir())
    assert grids == ["step_000001.png", "step_000002.png"]


# -- segmentation ------------------------------------------------------------------------
#: The tiny segmentation job on the 4-tile toy world; 48 px chips make 9 of each 128 px
#: validation / test tile: an odd count, which a repeating sampler would pad to 10.
TINY_SEGMENTATION = [
    "data.source.tiles=4",
    "data.source.size=128",
    "data.num_workers=0",
    "data.eval_chip_size=48",
    "data.eval_batch_size=1",  # chips of 48 and 32 px: one a batch
    "data.patch_size=64",
    "data.batch_size=2",
    "data.patches_per_epoch=4",  # 2 a rank: one batch, then validation
    "segmentation=tiny",
    "logger=none",
    "trainer.max_steps=1",
]


def test_segmentation_tests_every_chip_once_on_two_processes(
    toy_root: Path, tmp_path: Path
) -> None:
    """Both ranks train on patches of their own; the test chips are split between the
    ranks, each chip once, and the test scores are those of one process on all chips."""
    from conftest import quiet_trainer
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from synthsat.tasks.segmentation import SegmentationTask

    run = tmp_path / "seg"
    settings = [f"paths.root={tmp_path}", f"data.source.root={toy_root}", *TINY_SEGMENTATION]
    rank0, rank1 = _run_job("train_segmentation", run, *settings)
    assert rank0["global_step"] == rank1["global_step"] == 1
    assert len(rank0["train"]) == len(rank1["train"]) == 1
    assert rank0["train"] != rank1["train"]  # patches of its own
    chips = {(tile, r, c) for r in (0, 48, 96) for c in (0, 48, 96) for tile in ["tile_003"]}
    assert len(rank0["test"]) + len(rank1["test"]) == 9  # none twice
    assert set(rank0["test"]) | set(rank1["test"]) == chips
    assert (len(rank0["test"]), len(rank1["test"])) == (5, 4)

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 1 and metrics["split"] == "test"
    assert rank0["metrics"]["test/miou"] == rank1["metrics"]["test/miou"]
    assert metrics["miou"] == pytest.approx(rank0["metrics"]["test/miou"])

    # one process, the same checkpoint and chips: the same scores
    cfg = OmegaConf.load(run / "config.yaml")
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    task = SegmentationTask.load_from_checkpoint(metrics["checkpoint"], map_location="cpu")
    trainer = quiet_trainer(accelerator="cpu", devices=1)
    trainer.test(task, datamodule=datamodule, verbose=False)
    single = task.test_results
    assert metrics["miou"] == pytest.approx(single["miou"], abs=1e-6)
    assert metrics["pixel_accuracy"] == pytest.approx(single["pixel_accuracy"], abs=1e-6)
    scored = {k: v for k, v in single["iou"].items() if v == v}  # no NaN (no-data: None)
    assert {k: metrics["iou"][k] for k in scored} == pytest.approx(scored, abs=1e-6)
    assert len(scored) == 6


# -- synthesis ---------------------------------------------------------------------------
def test_synthesis_writes_every_tile_once_on_two_processes(toy_root: Path, tmp_path: Path) -> None:
    """The 3 tiles are split between the ranks, each made once, and are the tiles (the
    same pixels: per-tile seeds) and manifest of one process."""
    from conftest import TINY_GENERATOR
    from hydra import compose, initialize_config_dir

    from synthsat.data import toyworld
    from synthsat.jobs.synthesize import run as synthesize
    from synthsat.tasks.generator import GeneratorTask

    data = {
        "classes": list(toyworld.CLASSES),
        "bands": 4,
        "rgb_bands": [0, 1, 2],
        "ignore_index": 0,
        "mean": [90.0, 100.0, 80.0, 120.0],
        "std": [40.0, 35.0, 30.0, 45.0],
    }
    task = GeneratorTask(data, patch_size=32, **TINY_GENERATOR)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(task)
    ckpt = tmp_path / "generator.ckpt"
    trainer.save_checkpoint(ckpt)

    settings = [
        f"paths.root={tmp_path}",
        f"data.source.root={toy_root}",
        "data.source.tiles=4",
        "data.source.size=128",
        f"ckpt={ckpt}",
        "splits=[train,test]",  # 3 masks: 2 for one rank, 1 for the other
        "seed=3",
        "logger=none",
    ]
    run = tmp_path / "ddp"
    rank0, rank1 = _run_job("synthesize", run, *settings)
    names = ["tile_000_s0.tif", "tile_001_s0.tif", "tile_003_s0.tif"]
    assert sorted(rank0["predict"] + rank1["predict"]) == names  # each tile once
    assert (len(rank0["predict"]), len(rank1["predict"])) == (2, 1)
    assert sorted(p.name for p in run.glob("*.tif")) == names
    assert not list(run.glob(".*"))  # no temporary files left

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "synthesize", [*settings, f"paths.output_dir={tmp_path / 'one'}", "trainer=cpu"]
        )
    synthesize(cfg)
    for name in names:
        with rasterio.open(run / name) as a, rasterio.open(tmp_path / "one" / name) as b:
            assert np.array_equal(a.read(), b.read())
            assert np.array_equal(a.read_masks(1), b.read_masks(1))
    manifests = [json.loads((d / "manifest.json").read_text()) for d in (run, tmp_path / "one")]
    assert [m["path"] for m in manifests[0]["outputs"]] == names
    assert manifests[0]["outputs"] == manifests[1]["outputs"]
