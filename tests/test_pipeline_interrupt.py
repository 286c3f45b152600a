"""Interrupting the study: a stopped pipeline stops its stages, a killed one leaves a
lock that keeps a rerun from starting the stage twice, and a training stage interrupted
before ``done.json`` resumes from its ``last.ckpt``.

Stages here run a stand-in job module (a script on the stage processes' PYTHONPATH)
that starts a worker process of its own, records both pids and waits until a
``finish`` file appears in its directory; the runner is a small script calling
:func:`~synthsat.study.stages.run_stage` as the pipeline does. Every process a test starts
is ended by the test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import REPO, STAND_IN_HEAD, modules_on_path, wait_for
from hydra import initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from synthsat.jobs.user_errors import user_errors
from synthsat.locks import Holder, LockHeld, host_name, pid_running, process_start
from synthsat.study import processes
from synthsat.study.stages import (
    LOCK_NAME,
    RESUMABLE,
    Stage,
    make_stage,
    resume_checkpoint,
    run_stage,
    stage_command,
)

JOB = (
    STAND_IN_HEAD
    + """\
import os, subprocess, time
worker = subprocess.Popen(["sleep", "120"])  # e.g. a data loader worker
(out / "pids.part").write_text(f"{os.getpid()} {worker.pid}")
os.replace(out / "pids.part", out / "pids")
print("job started", flush=True)
deadline = time.monotonic() + 120
while not (out / "finish").exists() and time.monotonic() < deadline:
    time.sleep(0.05)
worker.kill()
worker.wait()
(out / "metrics.json").write_text("{}")  # a training job's last write
"""
)

RUNNER = """\
import sys
from pathlib import Path
from synthsat.study.executors import make_executor, run_wave, stop_running
from synthsat.study.processes import stopped_on_signal
from synthsat.study.stages import Stage, run_stage
results, grace, jobs, mode = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
stages = [Stage("generator", f"lambda{i}", "waiting_job", ["a=1", f"b={i}"], {})
          for i in range(jobs)]
with stopped_on_signal(grace=grace, also=stop_running):
    if mode == "direct":  # the stage's own runner, as a job runs it
        run_stage(stages[0], results, [], None)
    else:  # as the pipeline runs a wave
        run_wave(make_executor(mode, results / ".submitit"), stages, results, jobs, [])
"""


def stages(jobs: int) -> list[Stage]:
    """The runner's stages with ``pipeline.jobs=jobs`` (run side by side)."""
    return [
        Stage("generator", f"lambda{i}", "waiting_job", ["a=1", f"b={i}"], {}) for i in range(jobs)
    ]


STAGE = stages(1)[0]


@dataclass
class StandIns:
    """Where the stand-ins are, and the processes a test started through them."""

    folder: Path
    started: list[tuple[int, int | None]] = field(default_factory=list)

    def runner(
        self, results: Path, grace: float, jobs: int = 1, mode: str = "direct"
    ) -> subprocess.Popen[str]:
        """Start the runner script on :func:`stages` in ``results``: ``mode`` ``direct``
        runs the stage with :func:`run_stage`, else a wave on that executor."""
        args = [str(results), str(grace), str(jobs), mode]
        return subprocess.Popen(
            [sys.executable, str(self.folder / "runner.py"), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def job_pids(self, out: Path) -> tuple[int, int]:
        """Wait for the stand-in job in ``out`` and for its lock handed to it; (job, worker)."""
        wait_for(lambda: (out / "pids").exists(), "the stage's job to start")
        job, worker = (int(p) for p in (out / "pids").read_text().split())
        self.started += [(pid, process_start(pid)) for pid in (job, worker)]
        wait_for(
            lambda: Holder.parse((out / LOCK_NAME).read_text()).pid == job,
            "the lock to name the job",
        )
        return job, worker


@pytest.fixture()
def stand_ins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIns]:
    """The stand-in job and the runner script; stage processes find the job (and the
    runner synthsat) on PYTHONPATH. Ends whatever stand-in processes remain."""
    modules = {"waiting_job": JOB, "runner": RUNNER}
    started = StandIns(modules_on_path(tmp_path / "jobs", monkeypatch, modules, REPO))
    yield started
    for pid, start in started.started:  # only processes this test started (same start time)
        if pid_running(pid, start):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(("jobs", "mode"), [(1, "direct"), (1, "local"), (2, "local")])
def test_sigterm_to_the_runner_stops_its_stages_and_their_workers(
    stand_ins: StandIns, tmp_path: Path, jobs: int, mode: str
) -> None:
    """Directly, and through submitit's local executor (the stages' jobs in sessions of
    their own, stopped through the processes their locks name)."""
    results = tmp_path / "results"
    outs = [stage.directory(results) for stage in stages(jobs)]
    runner = stand_ins.runner(results, grace=5.0, jobs=jobs, mode=mode)
    try:
        pids = [stand_ins.job_pids(out) for out in outs]
        runner.send_signal(signal.SIGTERM)
        _, stderr = runner.communicate(timeout=60)
    finally:
        runner.kill()
        runner.wait()
    assert runner.returncode == 128 + signal.SIGTERM
    said = re.fullmatch(
        r"\[pipeline\] SIGTERM: stopped the running stages \(pid ([0-9, ]+)\)",
        stderr.splitlines()[-1],
    )
    assert said is not None, stderr
    assert sorted(int(pid) for pid in said.group(1).split(", ")) == sorted(j for j, _ in pids)
    every = [pid for pair in pids for pid in pair]  # the jobs and their workers
    wait_for(lambda: not any(pid_running(pid) for pid in every), "the stages' end", 10)
    for out in outs:
        assert not (out / LOCK_NAME).exists()  # released on the way out
        assert not (out / "done.json").exists()


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    with open(tmp_path / "log", "w") as log:
        proc = processes.start(
            ["sh", "-c", f"trap '' TERM; touch {ready}; exec sleep 120"], log, None
        )
    try:
        wait_for(ready.exists, "the shell to ignore SIGTERM", 30)
        assert os.getsid(proc.pid) == os.getpgid(proc.pid) == proc.pid  # a session of its own
        t0 = time.monotonic()
        processes.stop([proc], grace=0.5)
        assert time.monotonic() - t0 >= 0.5
    finally:
        assert processes.wait(proc) == -signal.SIGKILL  # reaps, unregisters


def test_kill_9_of_the_runner_leaves_one_job_per_stage(
    stand_ins: StandIns, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    out = STAGE.directory(results)
    lock = out / LOCK_NAME
    runner = stand_ins.runner(results, grace=5.0)
    try:
        job, _ = stand_ins.job_pids(out)
        runner.kill()  # kill -9: nothing is caught, the job runs on, orphaned
    finally:
        runner.kill()
        runner.communicate()
    assert pid_running(job)
    holder = Holder.parse(lock.read_text())
    assert (holder.pid, holder.runner) == (job, runner.pid)

    # A rerun refuses the stage while the orphan runs, and leaves its files alone.
    log: list[str] = []
    with pytest.raises(LockHeld) as held:
        run_stage(STAGE, results, log)
    assert str(held.value) == (
        f"stage generator/lambda0 is locked by pid {job} on {host_name()} since "
        f"{holder.since} ({lock}); wait for that process to end or stop it (kill {job})"
    )
    assert log == []
    assert (out / "stage.log").read_text() == "job started\n"
    assert Holder.parse(lock.read_text()) == holder

    # Once the orphan has ended, the next run takes the stale lock over and runs it.
    (out / "finish").touch()
    wait_for(lambda: not pid_running(job), "the orphaned job to end", 60)
    capsys.readouterr()
    run_stage(STAGE, results, log)
    assert len(log) == 1 and log[0].startswith("ran   generator/lambda0 in ")
    assert (out / "done.json").exists() and not lock.exists()
    said = capsys.readouterr().out.splitlines()
    assert said[0] == (
        f"[lock] {lock}: taking over the stale lock of pid {job} on {host_name()} "
        f"since {holder.since} (that process is gone)"
    )
    assert said[1].startswith("[pipeline] run  generator/lambda0: ")


def test_kill_9_of_a_pipeline_on_the_local_executor_leaves_its_jobs_to_finish(
    stand_ins: StandIns, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The stage's submitit job outlives the pipeline: a rerun refuses the stage while it
    runs (before submitting anything), and the job itself marks the stage done."""
    from synthsat.study.executors import make_executor, run_wave

    results = tmp_path / "results"
    out = STAGE.directory(results)
    runner = stand_ins.runner(results, grace=5.0, mode="local")
    try:
        job, _ = stand_ins.job_pids(out)
        runner.kill()
    finally:
        runner.kill()
        runner.communicate()
    holder = Holder.parse((out / LOCK_NAME).read_text())
    assert holder.pid == job and holder.runner != runner.pid  # the job's own wrapper runs it
    assert pid_running(job) and pid_running(holder.runner, holder.runner_start)

    executor = make_executor("local", results / ".submitit")
    log: list[str] = []
    with pytest.raises(LockHeld, match=f"locked by pid {job} on "):
        run_wave(executor, [STAGE], results, 1, log)
    assert log == [] and not (out / "done.json").exists()

    (out / "finish").touch()  # the orphaned job ends, and its wrapper records the stage done
    wait_for(lambda: (out / "done.json").exists(), "the orphaned job's done.json", 60)
    wait_for(lambda: not (out / LOCK_NAME).exists(), "its lock's release", 30)
    capsys.readouterr()
    assert run_wave(executor, [STAGE], results, 1, log) == [out]
    assert log == ["skip  generator/lambda0 (done)"]
    assert capsys.readouterr().out.startswith("[pipeline] skip generator/lambda0: done in ")


def test_an_interrupted_training_stage_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    """The command gets ``ckpt_path=<last.ckpt>``; the stage's key and directory do not
    change (the override is not one of the stage's)."""
    results = tmp_path / "results"
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        stage = make_stage("generator", "lambda0", "synthsat.train_generator", ["seed=0"], {})
        again = make_stage("generator", "lambda0", "synthsat.train_generator", ["seed=0"], {})
    key, out = stage.key, stage.directory(results)
    plain = [sys.executable, "-m", "synthsat.train_generator", "seed=0", f"hydra.run.dir={out}"]
    assert stage_command(stage, out) == plain  # nothing to resume from yet
    ckpt = out / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"a checkpoint")
    assert resume_checkpoint(stage.module, out) == ckpt
    assert stage_command(stage, out) == [*plain, f"ckpt_path={ckpt}"]
    assert stage.overrides == ["seed=0"]
    assert stage.key == key == again.key and stage.directory(results) == out
    (out / "done.json").write_text("{}")  # finished: nothing to resume
    assert stage_command(stage, out) == plain
    assert sorted(RESUMABLE) == ["synthsat.train_generator", "synthsat.train_segmentation"]
    assert resume_checkpoint("synthsat.synthesize", out) is None


def test_run_stage_says_it_resumes(
    stand_ins: StandIns,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("synthsat.study.stages.RESUMABLE", frozenset({"waiting_job"}))
    results = tmp_path / "results"
    out = STAGE.directory(results)
    ckpt = out / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"a checkpoint")
    (out / "finish").touch()  # the stand-in job ends at once
    run_stage(STAGE, results, [])
    said = capsys.readouterr().out.splitlines()
    assert said[0] == f"[pipeline] resume generator/lambda0 from {ckpt}"
    assert said[1].endswith(f"a=1 b=0 hydra.run.dir={out} ckpt_path={ckpt}")
    assert json.loads((out / "done.json").read_text())["overrides"] == ["a=1", "b=0"]


def test_a_held_lock_stops_the_pipeline_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """The pipeline's ``main`` (under ``user_errors``) prints it without a traceback."""
    holder = Holder(4242, "box", "2026-11-26T16:00:00+0000")
    message = "stage generator/lambda0 is locked by pid 4242 on box since ..."

    @user_errors
    def main(cfg: DictConfig) -> None:
        raise LockHeld(message, holder)

    with pytest.raises(SystemExit) as stopped:
        main(OmegaConf.create({}))
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[0] == f"error: {message}"
