"""Progress of a pipeline run: ``[k/N]`` on every stage line and the ETA after each
finished stage (the arithmetic on hand-made numbers; the lines of stand-in stages)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import STAND_IN_HEAD, modules_on_path, pipeline_config, toy_pipeline_overrides

import synthsat.jobs.pipeline as pipeline
import synthsat.study.plan as plan
from synthsat.study.progress import Progress, eta_seconds, format_duration
from synthsat.study.stages import Stage, run_stage

# A stand-in stage module: writes the metrics.json a segmentation stage would (the
# pipeline reads the real-only run's checkpoint from it) and exits at once.
STAND_IN = (
    STAND_IN_HEAD
    + """\
(out / "metrics.json").write_text('{"checkpoint": null}')
"""
)


def test_eta_is_mean_time_of_the_kind_times_stages_left_over_jobs() -> None:
    totals = {"generator": 2, "synthesis": 2, "segmentation": 9, "synthetic_metrics": 2}
    finished = {"generator": 2, "synthesis": 1, "segmentation": 3}  # 1 segmentation skipped
    seconds = {"generator": [100.0, 200.0], "synthesis": [30.0], "segmentation": [40.0, 80.0]}
    eta, untimed = eta_seconds(totals, finished, seconds, jobs=2)
    # segmentation: mean 60 s x 6 left / 2 jobs = 180; synthesis: 30 s x 1 left / 1
    # (one stage left runs alone, whatever the jobs); generator: none left.
    assert eta == pytest.approx(210.0)
    assert untimed == {"synthetic_metrics": 2}  # none finished yet: no estimate
    eta, _ = eta_seconds(totals, finished, seconds, jobs=1)
    assert eta == pytest.approx(60 * 6 + 30)


def test_durations_read_as_seconds_minutes_hours() -> None:
    assert format_duration(42.4) == "42 s"
    assert format_duration(200) == "3 min 20 s"
    assert format_duration(7500) == "2 h 05 min"


def test_progress_tags_count_started_and_finished_stages() -> None:
    progress = Progress({"generator": 1, "segmentation": 2}, jobs=1)
    assert progress.skip("generator") == "[1/3]"  # a skipped stage starts and finishes
    assert progress.start() == "[2/3]"
    assert progress.start() == "[3/3]"
    assert progress.finish("segmentation", 50.0) == "[2/3]; ETA 50 s (1 stage left)"
    assert progress.finish("segmentation", 70.0) == "[3/3]; ETA 0 s (0 stages left)"
    fresh = Progress({"generator": 1, "segmentation": 2})
    fresh.start()
    assert fresh.finish("generator", 9.0) == (
        "[1/3]; ETA not known yet (2 stages left; not timed yet: 2 segmentation)"
    )
    partly = Progress({"generator": 2, "segmentation": 2}, jobs=1)
    assert partly.finish("generator", 10.0) == (  # the untimed stages make it a lower bound
        "[1/4]; ETA over 10 s (3 stages left; not timed yet: 2 segmentation)"
    )


@pytest.fixture()
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A stand-in stage module on the stage processes' PYTHONPATH."""
    modules_on_path(tmp_path / "jobs", monkeypatch, {"stand_in_job": STAND_IN})
    return "stand_in_job"


def test_stage_lines_carry_their_number_and_the_eta(
    tmp_path: Path, stand_in: str, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    stage = Stage("synthesis", "lambda0", stand_in, ["a=1"], {})
    run_stage(stage, results, [], progress=Progress({"synthesis": 2}))
    run, done = capsys.readouterr().out.splitlines()
    assert run.startswith("[pipeline] run  synthesis/lambda0 [1/2]: -m stand_in_job a=1 ")
    assert re.fullmatch(
        r"\[pipeline\] done synthesis/lambda0 in \d+ s \[1/2\]; ETA \d+ s \(1 stage left\)", done
    )
    run_stage(stage, results, [], progress=Progress({"synthesis": 2}))  # done: skipped
    (skip,) = capsys.readouterr().out.splitlines()
    assert skip.startswith("[pipeline] skip synthesis/lambda0 [1/2]: done in ")
    run_stage(stage, results, [])  # without a Progress: the lines as before
    assert capsys.readouterr().out.startswith("[pipeline] skip synthesis/lambda0: done in ")


def test_a_study_counts_every_stage_it_runs(
    toy_root: Path,
    tmp_path: Path,
    stand_in: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """N is the number of stages the study runs: the last stage finishes as [N/N]."""
    real_make_stage = plan.make_stage

    def make_stage(*args: Any, **kwargs: Any) -> Stage:
        stage = real_make_stage(*args, **kwargs)  # composes the real job's config
        stage.module = stand_in
        return stage

    monkeypatch.setattr(plan, "make_stage", make_stage)
    monkeypatch.setattr("synthsat.figures.sample_grid", lambda *a: None)
    monkeypatch.setattr(pipeline, "summarise", lambda results, **k: results / "timing.json")
    overrides = [
        *toy_pipeline_overrides(toy_root, tmp_path),
        "pipeline.lambdas=[0.0]",
        "pipeline.controls=[classtexture]",
        "pipeline.ratios=[0.0,1.0]",
        "pipeline.seeds=[0,1]",
        "pipeline.jobs=2",
        "pipeline.logger=none",
    ]
    with pipeline_config(monkeypatch, overrides) as cfg:
        pipeline.run_study(cfg)
    # 1 generator + 2 synthesis + 2 seeds x (real-only + 2 sources) segmentation + 2 metrics
    lines = [line for line in capsys.readouterr().out.splitlines() if "[pipeline] " in line]
    runs = [line for line in lines if line.startswith("[pipeline] run  ")]
    done = [line for line in lines if line.startswith("[pipeline] done ")]
    assert len(runs) == len(done) == 11
    assert sorted(re.search(r" \[(\d+)/11\]: ", r)[1] for r in runs) == sorted(
        str(k) for k in range(1, 12)
    )
    assert done[-1].endswith(" [11/11]; ETA 0 s (0 stages left)")
    timing = json.loads((tmp_path / "results" / "default" / "timing.json").read_text())
    assert timing["runs"][-1]["ran"] == 11
