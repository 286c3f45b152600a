"""End to end: train on the toy world through the Hydra config, then evaluate the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_job, real_as_synthetic, segmentation_multirun, toy_run_overrides
from omegaconf import DictConfig

from synthsat.jobs.evaluate import evaluate
from synthsat.jobs.train_segmentation import train
from synthsat.metrics.segmentation import scores_from_confusion


def _compose(name: str, toy_root: Path, tmp_path: Path, run: str, *overrides: str) -> DictConfig:
    run_overrides = toy_run_overrides(toy_root, tmp_path, run)
    return compose_job(name, [*run_overrides, "data.eval_chip_size=128", *overrides])


def _majority_scores(toy_root: Path, tmp_path: Path, classes: int, scored: list[int]) -> dict:
    """Scores on the test tile of always predicting the most frequent training class."""
    from synthsat.data import LandCoverDataModule, ToyWorldSource

    dm = LandCoverDataModule(
        ToyWorldSource(toy_root, tiles=4, size=128),
        classes=[str(c) for c in range(classes)],
        bands=4,
        ignore_index=0,
        scored_classes=scored,
        cache_dir=tmp_path / "cache",
        eval_chip_size=128,
    )
    dm.setup()
    counts = sum(
        np.bincount(np.asarray(t.mask).ravel(), minlength=classes) for t in dm.tiles["train"]
    )
    majority = max(scored, key=lambda c: counts[c])
    target = torch.from_numpy(
        np.concatenate([np.asarray(t.mask).ravel() for t in dm.tiles["test"]]).astype(np.int64)
    )
    keep = target != 0
    cm = torch.zeros(classes, classes, dtype=torch.int64)
    for c in range(classes):
        cm[c, majority] = int((target[keep] == c).sum())
    return scores_from_confusion(cm, scored)


def test_short_training_beats_majority_class(toy_root: Path, tmp_path: Path) -> None:
    cfg = _compose(
        "train_segmentation",
        toy_root,
        tmp_path,
        "train",
        "segmentation=tiny",
        "logger=none",
        "trainer.max_steps=30",
        "data.patch_size=64",
        "data.batch_size=8",
        "data.patches_per_epoch=240",
        "seed=0",
    )
    metrics = train(cfg)
    out = tmp_path / "train"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["steps"] == 30 and saved["seed"] == 0
    assert saved["mix"] == {
        "ratio": 0.0,
        "mode": "replace",
        "source": None,
        "lambda_div": None,
        "copies": 1,
        "layouts": None,
    }
    assert set(saved["iou"]) == set(cfg.data.classes)
    assert saved["scored_classes"] == [1, 2, 3, 4, 5, 6]
    assert (out / "config.yaml").exists() and Path(saved["checkpoint"]).exists()
    baseline = _majority_scores(toy_root, tmp_path, 7, saved["scored_classes"])
    assert metrics["miou"] > baseline["miou"] + 0.2
    assert metrics["pixel_accuracy"] > baseline["pixel_accuracy"] + 0.1

    # the checkpoint alone is enough to score the same test tile again
    ecfg = _compose(
        "evaluate", toy_root, tmp_path, "eval", f"ckpt={saved['checkpoint']}", "device=cpu"
    )
    again = evaluate(ecfg)
    assert again["confusion_matrix"] == saved["confusion_matrix"]
    assert again["miou"] == pytest.approx(saved["miou"])
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["split"] == "test"


def test_evaluate_rejects_missing_checkpoint(toy_root: Path, tmp_path: Path) -> None:
    cfg = _compose("evaluate", toy_root, tmp_path, "eval", f"ckpt={tmp_path / 'none.ckpt'}")
    with pytest.raises(FileNotFoundError, match="none.ckpt"):
        evaluate(cfg)


def test_run_stopped_before_validation_records_its_last_checkpoint(
    toy_root: Path, tmp_path: Path
) -> None:
    """No epoch ends (so no best checkpoint): the tested final weights are last.ckpt, and
    metrics.json names it, so later stages (synthetic metrics) can load the model."""
    cfg = _compose(
        "train_segmentation",
        toy_root,
        tmp_path,
        "short",
        "segmentation=tiny",
        "logger=none",
        "trainer.max_steps=2",
        "data.patch_size=64",
        "data.patches_per_epoch=240",
        "seed=0",
    )
    saved = train(cfg)
    assert saved["steps"] == 2
    assert Path(saved["checkpoint"]).name == "last.ckpt"
    ecfg = _compose(
        "evaluate", toy_root, tmp_path, "eval-short", f"ckpt={saved['checkpoint']}", "device=cpu"
    )
    assert evaluate(ecfg)["confusion_matrix"] == saved["confusion_matrix"]


def test_hydra_multirun_sweeps_a_stage(toy_root: Path, tmp_path: Path) -> None:
    """The README's sweep, as a user types it: ``-m`` from a working directory, without
    ``hydra.sweep.dir`` or ``paths.root``; one job per point in
    ``multirun/train_segmentation/<time>/<n>/``, each with its metrics.

    ``hydra.sweep.dir`` used to stop every multirun with "HydraConfig was not set": it
    lies under ``paths.root``, which used ``${hydra:runtime.cwd}``.
    """
    synthetic = real_as_synthetic(toy_root, tmp_path / "synthetic")
    work = tmp_path / "work"
    work.mkdir()
    sweep, runs = segmentation_multirun(
        work, toy_root, "mix.ratio=0.5,1", f"mix.source={synthetic}"
    )
    assert [r.parent.name for r in runs] == ["0", "1"]
    saved = [json.loads(r.read_text()) for r in runs]
    assert [m["mix"] for m in saved] == [
        {
            "ratio": ratio,
            "mode": "replace",
            "source": str(synthetic),
            "lambda_div": None,
            "copies": 1,
            "layouts": None,
        }
        for ratio in (0.5, 1.0)
    ]
    assert [m["run_dir"] for m in saved] == [str(sweep / "0"), str(sweep / "1")]
    assert (work / ".cache" / "synthsat").is_dir()  # paths.root: the launch directory


# the test makes its patches non-finite on purpose: numpy says so as it normalises them
@pytest.mark.filterwarnings("ignore:overflow encountered in divide:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply:RuntimeWarning")
def test_a_non_finite_loss_stops_training_with_one_line(
    toy_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A band standard deviation of 1e-45 (float32's smallest) makes every normalised
    patch inf, so the first loss is NaN: training stops there with one line, exit 2 (it
    trained on NaN to a score of 0 and exit 0)."""
    from synthsat.jobs.train_segmentation import main

    std = "[" + ",".join(["1e-45"] * 4) + "]"
    cfg = _compose(
        "train_segmentation", toy_root, tmp_path, "run",
        "segmentation=tiny", "logger=none", "trainer.max_steps=3", "data.patch_size=64",
        "data.mean=[0,0,0,0]", f"data.std={std}",
    )  # fmt: skip
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main.__wrapped__(cfg)
    assert exit_info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1
    assert err[0].startswith("error: non-finite training loss (nan) at step 0: training stopped")
    assert not (tmp_path / "run" / "metrics.json").exists()
