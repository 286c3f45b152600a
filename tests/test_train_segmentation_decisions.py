"""What ``synthsat.jobs.train_segmentation`` decides, without a training: the W&B run of a job,
which checkpoint the test loads and ``metrics.json`` records, the printed line and a
sweeper's objective (the training itself is tested end to end in test_segmentation_train)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from synthsat.jobs.train_segmentation import (
    checkpoint_to_test,
    objective,
    recorded_checkpoint,
    scored_record,
    segmentation_run,
    summary,
)


def test_the_run_of_a_mixed_job_names_its_ratio_lambda_and_seed() -> None:
    cfg = OmegaConf.create({"seed": 3, "task_name": "train_segmentation"})
    source = {"generator": "gan", "lambda_div": 2.0, "checkpoint": "/g/last.ckpt"}
    run = segmentation_run(cfg, {"ratio": "0.5"}, source)
    assert run["name"] == "seg r0.5 λ2 s3"
    assert run["tags"] == ["seg", "ratio=0.5", "lambda_div=2", "seed=3"]
    assert run["job_type"] == "train_segmentation"
    assert run["config"] == {"synthetic_source": source, "lambda_div": 2.0}


def test_the_run_of_a_control_shows_its_name_and_real_only_no_ratio() -> None:
    cfg = OmegaConf.create({"seed": 1})
    control = segmentation_run(cfg, {"ratio": 0.25}, {"generator": "classtexture"})
    assert control["name"] == "seg r0.25 classtexture s1"
    assert control["config"] == {
        "synthetic_source": {"generator": "classtexture"},
        "lambda_div": None,
    }
    real = segmentation_run(cfg, None, None)
    assert real["name"] == "seg s1"
    assert real["config"] == {"synthetic_source": None, "lambda_div": None}


def test_the_best_checkpoint_is_tested_only_when_asked_for_and_written() -> None:
    assert checkpoint_to_test("best", "/run/best.ckpt") == "/run/best.ckpt"
    assert checkpoint_to_test("last", "/run/best.ckpt") is None  # the final weights
    assert checkpoint_to_test("best", "") is None  # no validation wrote one


def test_the_recorded_checkpoint_is_the_tested_one_or_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    best, last = "run/best.ckpt", Path("run/last.ckpt")
    assert recorded_checkpoint(best, last) == str(tmp_path / "run" / "best.ckpt")
    assert recorded_checkpoint(None, last) == str(tmp_path / "run" / "last.ckpt")
    assert recorded_checkpoint(None, None) is None


def test_the_scored_step_of_best_is_the_first_of_equal_tops() -> None:
    curve = [(100, 0.5), (200, 0.7), (300, 0.7), (400, 0.6)]
    record = scored_record("best", "/b.ckpt", 400, curve)
    assert (record["scored"], record["scored_step"], record["scored_val_miou"]) == (
        "best",
        200,
        0.7,
    )
    last = scored_record("last", "/b.ckpt", 300, curve)
    assert (last["scored"], last["scored_step"], last["scored_val_miou"]) == ("last", 300, 0.7)
    assert last["val_curve"] == [[100, 0.5], [200, 0.7], [300, 0.7], [400, 0.6]]
    assert all(type(s) is int and type(v) is float for s, v in last["val_curve"])


def test_the_printed_line() -> None:
    metrics = {
        "miou": 0.51234,
        "iou": {"water": 0.9, "road": None},
        "pixel_accuracy": 0.876543,
        "steps": 120,
        "fit_time_s": 12.6,
        "run_dir": "/r",
    }
    assert summary(metrics) == (
        "test mIoU 0.5123 (per class: water 0.900, road n/a); pixel accuracy 0.8765; "
        "120 steps in 13 s -> /r/metrics.json"
    )


def test_the_objective_is_the_scored_validation_miou() -> None:
    assert objective({"scored_val_miou": 0.25, "miou": 0.9}) == 0.25
    assert math.isnan(objective({"scored_val_miou": None, "miou": 0.9}))
    assert math.isnan(objective({"miou": 0.9}))
