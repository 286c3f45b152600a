"""Running independent stages side by side: order, failure handling, thread sharing."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from synthsat.pipeline import _seg_label, run_parallel, segmentation_runs, source_name, stage_env


def test_results_come_back_in_task_order() -> None:
    def task(i: int) -> int:
        time.sleep(0.02 * (3 - i))  # later tasks finish first
        return i

    assert run_parallel(2, [lambda i=i: task(i) for i in range(4)]) == [0, 1, 2, 3]
    assert run_parallel(1, [lambda i=i: task(i) for i in range(4)]) == [0, 1, 2, 3]


def test_at_most_jobs_tasks_run_at_once() -> None:
    running, peak, lock = [0], [0], threading.Lock()

    def task() -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    run_parallel(2, [task] * 6)
    assert peak[0] == 2


def test_failure_stops_new_tasks_and_waits_for_running_ones() -> None:
    started: list[int] = []
    finished: list[int] = []

    def task(i: int) -> int:
        started.append(i)
        if i == 0:
            raise RuntimeError("stage 0 failed")
        time.sleep(0.1)
        finished.append(i)
        return i

    with pytest.raises(RuntimeError, match="stage 0 failed"):
        run_parallel(2, [lambda i=i: task(i) for i in range(10)])
    assert len(started) < 10  # queued tasks were cancelled
    assert sorted(finished) == sorted(i for i in started if i != 0)  # none abandoned


def test_threads_are_shared_among_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNTHSAT_THREADS", "4")
    assert stage_env(4, 2)["SYNTHSAT_THREADS"] == "2"
    assert stage_env(1, 2)["SYNTHSAT_THREADS"] == "1"
    assert stage_env(4, 1)["SYNTHSAT_THREADS"] == "4"  # one job: unchanged


def test_stage_key_follows_the_composed_config(tmp_path: Path) -> None:
    """Editing a preset file changes the stage's key, so the stage reruns."""
    from hydra import initialize_config_dir

    from synthsat.pipeline import make_stage

    conf = tmp_path / "conf"
    shutil.copytree(Path(__file__).resolve().parents[1] / "conf", conf)

    def key() -> str:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            stage = make_stage("segmentation", "r0", "synthsat.train_segmentation", ["seed=0"], {})
        assert "encoder_name" in stage.config  # the preset's content, not just overrides
        return stage.key

    before = key()
    assert key() == before
    preset = conf / "segmentation" / "cpu.yaml"
    text = preset.read_text()
    assert "lr: 1.0e-3" in text
    preset.write_text(text.replace("lr: 1.0e-3", "lr: 2.0e-3"))
    assert key() != before


def test_study_arms_pair_every_source_with_the_same_seeds() -> None:
    p = OmegaConf.create(
        {
            "lambdas": [0.0, 2.0],
            "controls": ["classtexture"],
            "ratios": [0.0, 0.5],
            "copies": [1],
            "add_ratio": 0.0,
            "seeds": [3, 4],
        }
    )
    runs = segmentation_runs(p)
    labels = [_seg_label(**r) for r in runs]
    per_seed = [
        "r0-replace-seed{s}",
        "r0.5-replace-lambda0-seed{s}",
        "r0-addx1-lambda0-seed{s}",
        "r0.5-replace-lambda2-seed{s}",
        "r0-addx1-lambda2-seed{s}",
        "r0.5-replace-classtexture-seed{s}",
        "r0-addx1-classtexture-seed{s}",
    ]
    assert labels == [x.format(s=s) for s in (3, 4) for x in per_seed]
    control = runs[5]
    assert control == {
        "ratio": 0.5,
        "mode": "replace",
        "copies": 0,
        "lambda_div": None,
        "generator": "classtexture",
        "seed": 3,
    }
    assert runs[0]["lambda_div"] is None and runs[0]["generator"] is None
    assert (
        source_name(2.0, None) == "lambda2" and source_name(None, "classtexture") == "classtexture"
    )
