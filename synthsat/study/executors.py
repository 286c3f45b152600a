"""Stages as submitit jobs: ``pipeline.executor=local`` (the default), ``slurm`` or ``debug``.

Each stage goes out as one submitit job whose function,
:class:`~synthsat.study.stage_job.StageJob`, runs the stage's Hydra job under the stage's
lock and writes its ``done.json`` (:func:`~synthsat.study.stages.run_stage`): the job itself
owns the stage, wherever it runs, so a killed pipeline leaves a job that finishes its
stage and a lock that stops a rerun from starting it twice; a preempted SLURM job is
requeued (see :mod:`synthsat.study.stage_job`). :func:`run_wave` runs one wave of independent
stages:

* ``local`` — submitit's :class:`~submitit.LocalExecutor`, one process per stage on this
  machine, at most ``pipeline.jobs`` at once (the study's threads shared among them);
* ``slurm`` — submitit's :class:`~submitit.SlurmExecutor`: the wave's stages go out
  together as one job array, ``sbatch`` parameters from the ``slurm`` config group
  (``conf/slurm/``); SLURM runs at most ``slurm.array_parallelism`` at once;
* ``debug`` — submitit's :class:`~submitit.DebugExecutor`: every stage in this
  process, one after another (for tests and debuggers).

Stopping the pipeline (SIGINT, SIGTERM) stops the stages of the wave in flight
(:func:`stop_running`, called by :func:`synthsat.study.processes.stopped_on_signal`): a local
stage's Hydra job (the process its lock names) gets SIGTERM, then SIGKILL after a grace
period, and every job is cancelled (``scancel`` on SLURM).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from synthsat.errors import ConfigError
from synthsat.locks import FileLock, Holder, LockHeld, is_this_host, pid_running
from synthsat.study import processes
from synthsat.study.slurm import slurm_parameters
from synthsat.study.stage_job import StageJob
from synthsat.study.stages import (
    LOCK_NAME,
    Progress,
    Stage,
    StageFailed,
    resume_checkpoint,
    say,
    stage_command,
)

__all__ = ["EXECUTORS", "StageJob", "make_executor", "run_wave", "stop_running"]

#: The executors of ``pipeline.executor``.
EXECUTORS = ("local", "slurm", "debug")


def check_executor(kind: str) -> None:
    """Refuse an executor that cannot run here, before the study reads any data.

    Raises:
        ConfigError: an unknown ``kind``, or ``slurm`` without SLURM's ``sbatch`` and
            ``srun`` on PATH.
    """
    if kind not in EXECUTORS:
        raise ConfigError(f"pipeline.executor={kind!r}: choose one of {', '.join(EXECUTORS)}")
    if kind == "slurm" and (shutil.which("srun") is None or shutil.which("sbatch") is None):
        raise ConfigError(
            "pipeline.executor=slurm needs SLURM's sbatch and srun on PATH (run the pipeline "
            "on a cluster's login node), or use pipeline.executor=local"
        )


def make_executor(
    kind: str,
    folder: Path,
    slurm: Mapping[str, Any] | None = None,
    wave: str | None = None,
    device: str = "gpu",
) -> Any:
    """A submitit executor of ``kind`` writing its job files under ``folder``.

    Args:
        kind: ``local``, ``slurm`` or ``debug`` (``pipeline.executor``).
        folder: where submitit keeps each job's pickles and logs (``<results>/.submitit``).
        slurm: the ``slurm`` config group (sbatch parameters), for ``slurm``.
        wave: the kind of stage it runs, for ``slurm.stages.<kind>`` and the job name.
        device: ``cpu`` or ``gpu``, the device of the wave's stages (SLURM: a ``cpu`` wave
            asks for no GPU, see :func:`~synthsat.study.slurm.slurm_parameters`).

    Raises:
        ConfigError: see :func:`check_executor`.
    """
    check_executor(kind)
    path = str(folder / "%j")
    if kind == "debug":
        return submitit.DebugExecutor(folder=path)
    if kind == "local":
        executor = DetachedLocalExecutor(folder=path)
        executor.update_parameters(timeout_min=60 * 24 * 30)  # a stage may take days
        return executor
    executor = submitit.SlurmExecutor(folder=path)
    executor.update_parameters(
        job_name=f"synthsat-{wave or 'stage'}", **slurm_parameters(slurm or {}, wave, device)
    )
    return executor


class _DetachedPopen:
    """``subprocess`` as submitit's local executor sees it while submitting: its job
    controller starts in a session of its own, with its output (it has no log of its own:
    the job's goes to the job's files) discarded."""

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)

    @staticmethod
    def Popen(*args: Any, **kwargs: Any) -> subprocess.Popen[Any]:  # noqa: N802 - subprocess's
        kwargs.update(start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return subprocess.Popen(*args, **kwargs)


class DetachedLocalExecutor(submitit.LocalExecutor):
    """submitit's local executor, its jobs detached from the pipeline's terminal.

    A Ctrl-C in the terminal reaches the pipeline alone, which stops its stages in order
    (:func:`stop_running`), instead of interrupting each job's controller with a
    traceback; a ``kill -9`` of the pipeline leaves its jobs to finish their stages.
    """

    def _submit_command(self, command: str) -> Any:
        from submitit.local import local

        real = local.subprocess
        local.subprocess = _DetachedPopen()  # type: ignore[assignment]
        try:
            return super()._submit_command(command)
        finally:
            local.subprocess = real


@dataclass
class _InFlight:
    stage: Stage
    out: Path
    job: Any
    started: float


_inflight: dict[int, _InFlight] = {}


def run_wave(
    executor: Any,
    stages: Sequence[Stage],
    results: Path,
    jobs: int,
    log: list[str],
    env: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    poll_s: float = 0.2,
    needs: Mapping[int, Sequence[Path]] | None = None,
) -> list[Path]:
    """Run a wave of ``stages`` as submitit jobs; their directories, in order.

    Stages already done are skipped without a job. Locally at most ``jobs`` run at once
    (a finished job's slot goes to the next stage); a SLURM executor gets the whole wave
    at once as one job array (SLURM's ``array_parallelism`` limits it); the debug
    executor runs them one by one in this process.

    Args:
        executor: from :func:`make_executor`.
        stages: the wave's stages (none depends on another).
        results: the study's results directory.
        jobs: stages at once on the local executor (``pipeline.jobs``).
        log: receives one line per stage (``ran ... in N s`` / ``skip ... (done)``).
        env: variables set for each stage's Hydra job (e.g. ``SYNTHSAT_THREADS``).
        progress: numbers the printed lines ``[k/N]`` and adds the ETA.
        poll_s: seconds between looks at the running jobs.
        needs: stage index -> directories of the stages it needs (local and debug
            executors): a stage starts once each of them holds its ``done.json``, so a
            study runs as a graph of stages (the first ready stage in order takes a free
            slot). A SLURM wave must not have any.

    Raises:
        LockHeld: a stage is locked by another live process (checked before submitting,
            and by the stage's job: a pipeline started at the same instant took it).
        StageFailed: a stage's job failed: no further stage of the wave starts, the
            running ones finish first.
    """
    outs = [stage.directory(results) for stage in stages]
    pending: list[int] = []
    for i, (stage, out) in enumerate(zip(stages, outs)):
        if (out / "done.json").exists():
            _say_skip(stage, out, log, progress)
        else:
            _check_lock(stage, out)
            pending.append(i)
    kind = _executor_kind(executor)
    needs = dict(needs or {})
    if kind == "slurm" and any(needs.values()):
        raise ValueError("a SLURM wave goes out as one job array: its stages need no other")
    limit = len(pending) if kind == "slurm" else (1 if kind == "debug" else max(1, jobs))
    running: dict[int, _InFlight] = {}
    failure: BaseException | None = None

    starts = dict.fromkeys(pending, 1)

    def ready(i: int) -> bool:
        return all((d / "done.json").exists() for d in needs.get(i, ()))

    try:
        while pending or running:
            if failure is None and pending and len(running) < limit:
                free = [i for i in pending if ready(i)][: limit - len(running)]
                if not free and not running:
                    missing = [str(d) for i in pending for d in needs.get(i, ()) if not ready(i)]
                    raise StageFailed(f"stages wait on stages that never finished: {missing}")
                for i in free:
                    pending.remove(i)
                if free:
                    todo = [stages[i] for i in free]
                    running.update(_submit(executor, todo, outs, free, results, env, progress))
                    _inflight.update(running)
            for i, flight in list(running.items()):
                # a debug job runs here, in result()
                if kind != "debug" and not flight.job.done():
                    continue
                del running[i]
                _inflight.pop(i, None)
                try:
                    result = flight.job.result()
                    if "failed" in result:
                        raise StageFailed(result["failed"])
                    if "locked" in result:  # another pipeline took the stage meanwhile
                        raise LockHeld(result["locked"], Holder.parse(result["holder"]))
                except Exception as err:  # noqa: BLE001 - raised below, once the wave settles
                    if failure is None and _never_started(flight, err) and starts[i] < START_TRIES:
                        starts[i] += 1
                        say(
                            f"[pipeline] the job of {flight.stage.kind}/{flight.stage.label} "
                            f"(job {flight.job.job_id}) ended before its stage started, with no "
                            f"output; submitting it again (try {starts[i]} of {START_TRIES})"
                        )
                        pending.insert(0, i)
                        continue
                    failure = failure or _failed(flight, err)
                    continue
                _say_done(flight, result, log, progress)
            if failure is not None:
                pending.clear()
            if running:
                time.sleep(poll_s)
    finally:
        for i in running:
            _inflight.pop(i, None)
        _remove_template_folder(executor)
    if failure is not None:
        raise failure
    return outs


#: Submissions of a stage whose job ends before the stage starts (see :func:`_never_started`).
START_TRIES = 3


def _never_started(flight: _InFlight, err: BaseException) -> bool:
    """Whether a local job ended before its stage started: submitit found no output of it
    (its controller died before starting the task) and the stage wrote no ``stage.log``.
    Nothing of the stage ran, so submitting it again is safe (seen twice in a study on a
    busy 2-core machine, cause unknown: the controller's own output is discarded)."""
    if not isinstance(err, submitit.core.utils.UncompletedJobError):
        return False
    stdout = Path(flight.job.paths.stdout)
    return not stdout.exists() and not (flight.out / "stage.log").exists()


def _remove_template_folder(executor: Any) -> None:
    """Remove the empty ``.submitit/%j`` folder that submitit's local job controller
    makes of the folder template as it is (the jobs' files go to ``.submitit/<job id>``)."""
    folder = getattr(executor, "folder", None)
    if _executor_kind(executor) == "local" and folder is not None and "%" in Path(folder).name:
        with suppress(OSError):  # not there, or not empty: left alone
            Path(folder).rmdir()


def _executor_kind(executor: Any) -> str:
    if isinstance(executor, submitit.DebugExecutor):
        return "debug"
    if isinstance(executor, submitit.LocalExecutor):
        return "local"
    return "slurm"


def _check_lock(stage: Stage, out: Path) -> None:
    """Raise :class:`~synthsat.locks.LockHeld` now if a live process runs ``stage``
    (a stale lock is taken over, with a line saying so)."""
    if (out / LOCK_NAME).exists():
        FileLock(out / LOCK_NAME, f"stage {stage.kind}/{stage.label}", notify=say).check()


def _submit(
    executor: Any,
    stages: Sequence[Stage],
    outs: Sequence[Path],
    indices: Sequence[int],
    results: Path,
    env: Mapping[str, str] | None,
    progress: Progress | None,
) -> dict[int, _InFlight]:
    """Submit ``stages`` (one job array on SLURM); the jobs in flight by stage index."""
    fns = [StageJob(stage, results, dict(env or {})) for stage in stages]
    for stage, i in zip(stages, indices):
        out = outs[i]
        out.mkdir(parents=True, exist_ok=True)
        if (ckpt := resume_checkpoint(stage.module, out)) is not None:
            say(f"[pipeline] resume {stage.kind}/{stage.label} from {ckpt}")
    if _executor_kind(executor) == "slurm":
        with executor.batch():
            submitted = [executor.submit(fn) for fn in fns]
    else:
        submitted = [executor.submit(fn) for fn in fns]
    flights: dict[int, _InFlight] = {}
    for stage, i, job in zip(stages, indices, submitted):
        tag = f" {progress.start()}" if progress is not None else ""
        cmd = " ".join(shlex.quote(a) for a in stage_command(stage, outs[i])[1:])
        say(f"[pipeline] run  {stage.kind}/{stage.label}{tag}: {cmd} (job {job.job_id})")
        flights[i] = _InFlight(stage, outs[i], job, time.perf_counter())
    return flights


def _say_skip(stage: Stage, out: Path, log: list[str], progress: Progress | None) -> None:
    name = f"{stage.kind}/{stage.label}"
    log.append(f"skip  {name} (done)")
    tag = f" {progress.skip(stage.kind)}" if progress is not None else ""
    say(f"[pipeline] skip {name}{tag}: done in {out}")


def _say_done(
    flight: _InFlight, result: Mapping[str, Any], log: list[str], progress: Progress | None
) -> None:
    name = f"{flight.stage.kind}/{flight.stage.label}"
    if not result["ran"]:  # done meanwhile by another runner
        _say_skip(flight.stage, flight.out, log, progress)
        return
    seconds = float(result["seconds"])
    log.append(f"ran   {name} in {seconds:.0f} s")
    tag = f" {progress.finish(flight.stage.kind, seconds)}" if progress is not None else ""
    say(f"[pipeline] done {name} in {seconds:.0f} s{tag}")


def _failed(flight: _InFlight, err: BaseException) -> BaseException:
    """The error to raise for a failed job: its own (debug executor), or a
    :class:`~synthsat.study.stages.StageFailed` naming the stage and its log."""
    if not isinstance(err, submitit.core.utils.UncompletedJobError):
        return err
    log = flight.out / "stage.log"
    tail = log.read_text().splitlines()[-25:] if log.exists() else []
    detail = str(err).strip().splitlines()
    reason = next((line for line in reversed(detail) if line.strip()), "the job failed")
    return StageFailed(
        f"stage {flight.stage.kind}/{flight.stage.label} failed ({reason.strip()}); "
        f"log: {log}; job log: {flight.job.paths.stdout}\n" + "\n".join(tail)
    )


def running_stages() -> Iterator[tuple[Stage, Path, Any]]:
    """The stages in flight: (stage, directory, submitit job)."""
    for flight in list(_inflight.values()):
        yield flight.stage, flight.out, flight.job


def stop_running(grace: float = processes.GRACE_S) -> list[int]:
    """Stop the stages in flight; the pids of the local Hydra jobs stopped.

    A local stage's Hydra job (the process its ``stage.lock`` names, leader of its own
    process group) gets SIGTERM, and SIGKILL after ``grace`` seconds; then every job in
    flight is cancelled (submitit: SIGINT to a local job, ``scancel`` on SLURM).
    """
    groups: list[Holder] = []
    for _stage, out, _job in running_stages():
        with suppress(OSError, ValueError):
            holder = Holder.parse((out / LOCK_NAME).read_text())
            if is_this_host(holder.host) and pid_running(holder.pid, holder.start):
                groups.append(holder)
    for holder in groups:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(holder.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(pid_running(h.pid, h.start) for h in groups) and time.monotonic() < deadline:
        time.sleep(0.05)
    for holder in groups:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(holder.pid, signal.SIGKILL)
    # a job whose stage was stopped ends by itself (releasing the stage's lock)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and not all(_ended(j) for _, _, j in running_stages()):
        time.sleep(0.05)
    for _stage, _out, job in running_stages():
        if not _ended(job):
            with suppress(Exception):
                job.cancel(check=False)
    return [h.pid for h in groups]


def _ended(job: Any) -> bool:
    """Whether a submitted job has ended (a debug job: never started)."""
    if isinstance(job, submitit.DebugJob):
        return True
    with suppress(Exception):
        return bool(job.done())
    return False
