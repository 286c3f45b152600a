"""An interrupted training stage is never done, and its rerun trains to its full budget
(issue 25, row 2); a stage locked by a pipeline started at the same instant stops the
other with one line (row 12); no stray job folders (row 13).

The end-to-end test runs a real tiny ``train_segmentation`` and ``train_generator``
stage as a job of submitit's local executor, stopped by SIGTERM to its pipeline mid-fit
(once its ``last.ckpt`` exists), then reruns it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import submitit
import torch
from conftest import REPO, modules_on_path, tiny_generator_overrides, wait_for
from submitit.core.job_environment import SignalHandler
from submitit.slurm.slurm import SlurmJobEnvironment

from synthsat.locks import Holder, LockHeld, host_name
from synthsat.study import processes
from synthsat.study.executors import make_executor, run_wave
from synthsat.study.stage_job import StageJob
from synthsat.study.stages import LOCK_NAME, Stage

BUDGET = 6

#: A callback that makes each training step last ``SLOW_STEP_S`` seconds (0: as it is).
SLOW = """\
import os, time
import lightning as L

class SlowSteps(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        time.sleep(float(os.environ.get("SLOW_STEP_S", "0")))
"""

RUNNER = """\
import json, sys
from pathlib import Path
from synthsat.study.executors import make_executor, run_wave, stop_running
from synthsat.study.processes import stopped_on_signal
from synthsat.study.stages import Stage
results = Path(sys.argv[1])
stage = Stage(**json.loads(sys.argv[2]))
with stopped_on_signal(also=stop_running):
    run_wave(make_executor("local", results / ".submitit"), [stage], results, 1, [])
"""


@pytest.fixture()
def on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on the stage processes' PYTHONPATH (with the slow-steps callback)."""
    modules = {"slow_steps": SLOW, "runner": RUNNER}
    return modules_on_path(tmp_path / "jobs", monkeypatch, modules, REPO)


def segmentation_stage(toy_root: Path, tmp_path: Path) -> Stage:
    """A tiny ``train_segmentation`` stage: one step per epoch, a validation (and a
    ``last.ckpt``) after each, :data:`BUDGET` steps."""
    overrides = [
        f"paths.root={tmp_path}",
        f"data.source.root={toy_root}",
        "data.source.tiles=4",
        "data.source.size=128",
        "data.num_workers=0",
        "data.eval_chip_size=128",
        "data.patch_size=64",
        "data.patches_per_epoch=8",
        "data.val_patches=4",
        "segmentation=tiny",
        "logger=none",
        "callbacks.progress_log.every_n_steps=1",
        "+callbacks.slow._target_=slow_steps.SlowSteps",
        f"trainer.max_steps={BUDGET}",
    ]
    return Stage("segmentation", "run0", "synthsat.train_segmentation", overrides, {})


def generator_stage(toy_root: Path, tmp_path: Path) -> Stage:
    """A tiny ``train_generator`` stage: a validation after every step (a ``last.ckpt``
    beside each new best), :data:`BUDGET` steps."""
    overrides = [
        o for o in tiny_generator_overrides(toy_root, tmp_path, "gen") if "output_dir" not in o
    ]
    overrides += [
        "trainer.val_check_interval=1",
        "callbacks.samples.every_n_steps=0",
        "callbacks.progress_log.every_n_steps=1",
        "+callbacks.slow._target_=slow_steps.SlowSteps",
        f"trainer.max_steps={BUDGET}",
    ]
    return Stage("generator", "run0", "synthsat.train_generator", overrides, {})


def checkpoint_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


@pytest.mark.parametrize("make_stage", [segmentation_stage, generator_stage], ids=["seg", "gen"])
def test_sigterm_mid_fit_leaves_the_stage_undone_and_the_rerun_trains_to_its_budget(
    toy_root: Path,
    tmp_path: Path,
    on_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    make_stage: Callable[[Path, Path], Stage],
) -> None:
    results = tmp_path / "results"
    stage = make_stage(toy_root, tmp_path)
    name = f"{stage.kind}/{stage.label}"
    out = stage.directory(results)
    last = out / "checkpoints" / "last.ckpt"
    record = json.dumps({k: getattr(stage, k) for k in ("kind", "label", "module", "overrides")})
    runner = subprocess.Popen(
        [sys.executable, str(on_path / "runner.py"), str(results), record],
        env={**os.environ, "SLOW_STEP_S": "1.5"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(last.exists, "the stage's first last.ckpt (it is training)", 240.0)
        runner.send_signal(signal.SIGTERM)
        _, stderr = runner.communicate(timeout=120)
    finally:
        runner.kill()
        runner.communicate()
    assert runner.returncode == 128 + signal.SIGTERM, stderr
    log = (out / "stage.log").read_text()
    assert not (out / "done.json").exists(), log[-3000:]
    assert "interrupted by SIGTERM at step " in log
    assert not (out / "metrics.json").exists()
    stopped_at = checkpoint_step(last)
    assert 0 < stopped_at < BUDGET

    monkeypatch.delenv("SLOW_STEP_S", raising=False)
    capsys.readouterr()
    ran: list[str] = []
    assert run_wave(make_executor("local", results / ".submitit"), [stage], results, 1, ran)
    said = capsys.readouterr().out
    assert f"[pipeline] resume {name} from {last}" in said
    assert len(ran) == 1 and ran[0].startswith(f"ran   {name}")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == BUDGET  # the stage's final step: its budget
    assert checkpoint_step(last) == BUDGET  # and last.ckpt holds it
    assert (out / "done.json").exists()
    assert sorted(p.name for p in (results / ".submitit").iterdir() if "%" in p.name) == []
    if stage.kind != "segmentation":
        return
    # the resumed fit validated after every epoch again (one step each), before the stop
    # (the curve restored from last.ckpt) and after it, and the test scored the best
    steps, values = zip(*metrics["val_curve"])
    assert list(steps) == list(range(1, BUDGET + 1))
    assert metrics["scored_step"] == steps[values.index(max(values))]


@pytest.fixture()
def holder_process() -> Iterator[subprocess.Popen[bytes]]:
    """A live process standing in for another pipeline's stage job."""
    proc = subprocess.Popen(["sleep", "120"])
    yield proc
    proc.kill()
    proc.wait()


def test_a_stage_taken_by_a_pipeline_started_at_the_same_instant_stops_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, holder_process: subprocess.Popen[bytes]
) -> None:
    """Both pipelines found the stage free; the other's job took the lock first: this
    pipeline's job finds it held and the pipeline raises :class:`LockHeld` (printed as
    one line, exit 2, by ``user_errors``), not a ``StageFailed`` with a traceback."""
    monkeypatch.setattr("synthsat.study.waves._check_lock", lambda stage, out: None)
    results = tmp_path / "results"
    stage = Stage("generator", "lambda0", "no_such_job_module", ["a=1"], {})
    out = stage.directory(results)
    out.mkdir(parents=True)
    pid = holder_process.pid
    holder = Holder(pid, host_name(), "2026-11-26T16:00:00+0000")
    (out / LOCK_NAME).write_text(holder.to_json())
    ran: list[str] = []
    with pytest.raises(LockHeld) as held:
        run_wave(make_executor("local", results / ".submitit"), [stage], results, 1, ran)
    assert str(held.value) == (
        f"stage generator/lambda0 is locked by pid {pid} on {host_name()} since "
        f"{holder.since} ({out / LOCK_NAME}); wait for that process to end or stop it "
        f"(kill {pid})"
    )
    assert held.value.holder == holder
    assert ran == [] and not (out / "done.json").exists()
    assert not (results / ".submitit" / "%j").exists()  # row 13: no template folder


def test_a_preempted_stage_job_is_requeued_to_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """submitit's preemption / time-out handler (``USR2`` on SLURM) calls the job's
    ``checkpoint``: the stage's Hydra job is stopped and the same stage requeued."""
    job = StageJob(Stage("generator", "lambda0", "m", ["a=1"], {}), tmp_path, {"X": "1"})
    stopped: list[bool] = []
    monkeypatch.setattr(processes, "stop_all", lambda *a, **k: stopped.append(True) or [])
    requeued: list[int] = []

    class Env(SlurmJobEnvironment):  # scontrol requeue, recorded
        global_rank = 0  # type: ignore[assignment]

        def _requeue(self, countdown: int) -> None:
            requeued.append(countdown)

    delayed = submitit.helpers.DelayedSubmission(job)
    delayed.set_timeout(60, 3)
    paths = submitit.core.utils.JobPaths(tmp_path / "jobs", "4242")
    paths.folder.mkdir(parents=True)
    handler = SignalHandler(Env(), paths, delayed)
    monkeypatch.setattr(handler, "_exit", lambda: None)
    handler.checkpoint_and_try_requeue(signal.SIGUSR2)
    assert stopped == [True] and requeued == [3]  # preempted: not a time-out
    with open(paths.submitted_pickle, "rb") as f:
        again: Any = __import__("pickle").load(f).function
    assert isinstance(again, StageJob) and again == job and again is not job


def test_a_job_that_did_not_finish_is_never_done(tmp_path: Path) -> None:
    """The runner's own check, whatever the job says: stopped by a signal, or a training
    job exiting 0 without its ``metrics.json`` of this run."""
    from synthsat.study.stages import unfinished

    train = Stage("segmentation", "run0", "synthsat.train_segmentation", [], {})
    other = Stage("synthesis", "s0", "synthsat.synthesize", [], {})
    began = time.time()
    resumes = " (a rerun resumes it from its last.ckpt)"
    assert unfinished(train, tmp_path, 143, began) == (
        f"was interrupted (exit 143) before it finished: not done{resumes}"
    )
    assert unfinished(other, tmp_path, -9, began) == (
        "was interrupted (exit -9) before it finished: not done"
    )
    assert (
        unfinished(train, tmp_path, 0, began)
        == f"ended without writing metrics.json: not done{resumes}"
    )
    (tmp_path / "metrics.json").write_text("{}")
    os.utime(tmp_path / "metrics.json", (began - 60, began - 60))  # an earlier run's
    assert unfinished(train, tmp_path, 0, began) is not None
    (tmp_path / "metrics.json").write_text("{}")
    assert unfinished(train, tmp_path, 0, began) is None
    assert unfinished(other, tmp_path / "nothing", 0, began) is None
    assert unfinished(other, tmp_path, 3, began) == "failed (exit 3)"


def test_lightnings_sigterm_stop_exits_143_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Lightning's ``SIGTERMException`` is a ``SystemExit`` of status 0."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException
    from omegaconf import OmegaConf

    from synthsat.jobs.user_errors import user_errors

    @user_errors
    def main(cfg: object) -> None:
        stop = SIGTERMException()
        stop.step = 3  # type: ignore[attr-defined]
        raise stop

    with pytest.raises(SystemExit) as stopped:
        main(OmegaConf.create({}))
    assert stopped.value.code == 143
    assert capsys.readouterr().err.splitlines() == [
        "error: interrupted by SIGTERM at step 3: the job did not finish (exit 143); "
        "rerun it to resume from its last checkpoint"
    ]
