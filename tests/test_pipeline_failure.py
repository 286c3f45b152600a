"""A failing stage stops the study: it is named, not marked done, and nothing after it runs.

The study runs in this process (``run_study``, as ``python -m synthsat.pipeline`` does),
with its real stage composition and stage subprocesses, but every stage's module is
swapped for a stand-in script: the generator stage's exits with status 3 and a message,
any other stage's records that it ran. Stand-ins start in milliseconds, where a real
training job would take seconds just to import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import modules_on_path, pipeline_config, toy_pipeline_overrides

import synthsat.study.plan as plan
from synthsat.jobs.pipeline import run_study
from synthsat.study.stages import Stage, StageFailed, run_stage

FAILING = """\
import sys
print("fake generator: CUDA out of memory", file=sys.stderr)
sys.exit(3)
"""
RECORDING = """\
import sys
from pathlib import Path
with open(Path(__file__).with_name("ran.txt"), "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
"""


@pytest.fixture()
def stand_ins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Stand-in stage modules on the stage processes' PYTHONPATH; stages use them."""
    modules = {"failing_job": FAILING, "recording_job": RECORDING}
    jobs = modules_on_path(tmp_path / "jobs", monkeypatch, modules)
    real_make_stage = plan.make_stage

    def make_stage(*args: Any, **kwargs: Any) -> Stage:
        stage = real_make_stage(*args, **kwargs)  # composes the real job's config
        stage.module = "failing_job" if stage.kind == "generator" else "recording_job"
        return stage

    monkeypatch.setattr(plan, "make_stage", make_stage)
    return jobs


def test_failing_stage_is_named_not_done_and_stops_the_study(
    toy_root: Path,
    tmp_path: Path,
    stand_ins: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    overrides = [
        *toy_pipeline_overrides(toy_root, tmp_path),
        "pipeline.lambdas=[0.0,2.0]",
        "pipeline.ratios=[0.0,1.0]",
        "pipeline.jobs=1",
        "pipeline.logger=none",
    ]
    with pipeline_config(monkeypatch, overrides) as cfg, pytest.raises(StageFailed) as failed:
        run_study(cfg)

    results = tmp_path / "results" / "default"
    (gen_dir,) = (results / "generator").iterdir()
    assert gen_dir.name.startswith("lambda0-")
    message = str(failed.value)
    assert message.startswith("stage generator/lambda0 failed (exit 3); ")
    assert f"log: {gen_dir / 'stage.log'}" in message
    assert message.splitlines()[-1] == "fake generator: CUDA out of memory"  # the log's tail
    assert (gen_dir / "stage.log").read_text() == "fake generator: CUDA out of memory\n"
    assert not (gen_dir / "done.json").exists()
    # Nothing ran after the failure: not this lambda's synthesis (which needs the
    # generator's checkpoint), not the next lambda's generator, no segmentation.
    assert sorted(p.name for p in results.iterdir() if not p.name.startswith(".")) == ["generator"]
    assert not (stand_ins / "ran.txt").exists()
    assert not (results / "timing.json").exists() and not (results / "report.md").exists()
    out = capsys.readouterr().out
    assert "[pipeline] run  generator/lambda0" in out
    assert "[pipeline] done" not in out and "synthesis/" not in out


def test_the_stand_ins_do_run_when_nothing_fails(tmp_path: Path, stand_ins: Path) -> None:
    """Control for the test above: the recording stand-in really records, and a stage
    that exits 0 is marked done (so 'not recorded' above means 'not run')."""
    log: list[str] = []
    stage = Stage("synthesis", "lambda0", "recording_job", ["a=1"], {"lambda_div": 0.0})
    out = run_stage(stage, tmp_path / "results", log, env=None)
    assert (out / "done.json").exists()
    ran = (stand_ins / "ran.txt").read_text().split()
    assert ran == ["a=1", f"hydra.run.dir={out}"]
    assert len(log) == 1 and log[0].startswith("ran   synthesis/lambda0 in ")
