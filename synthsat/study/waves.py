"""A wave of stages run as submitit jobs (:func:`run_wave`), and the stages in flight
stopped with the pipeline (:func:`stop_running`); the executors are
:mod:`synthsat.study.executors`'."""

from __future__ import annotations

import os
import shlex
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from synthsat.locks import FileLock, Holder, LockHeld, is_this_host, pid_running
from synthsat.study import processes
from synthsat.study.progress import Progress, say
from synthsat.study.stage_job import StageJob
from synthsat.study.stages import LOCK_NAME, Stage, StageFailed, resume_checkpoint, stage_command


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
        executor: from :func:`~synthsat.study.executors.make_executor`.
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
    wave = _Wave(executor, stages, results, jobs, log, env, progress, needs)
    try:
        while wave.pending or wave.running:
            wave.start_ready()
            wave.collect()
            if wave.running:
                time.sleep(poll_s)
    finally:
        for i in wave.running:
            _inflight.pop(i, None)
        _remove_template_folder(executor)
    if wave.failure is not None:
        raise wave.failure
    return wave.outs


class _Wave:
    """One :func:`run_wave`: its stages waiting (by index, in order), in flight and the
    first failure. Stages already done are skipped at once; a locked one raises."""

    def __init__(
        self,
        executor: Any,
        stages: Sequence[Stage],
        results: Path,
        jobs: int,
        log: list[str],
        env: Mapping[str, str] | None,
        progress: Progress | None,
        needs: Mapping[int, Sequence[Path]] | None,
    ) -> None:
        self.executor, self.stages, self.results = executor, stages, results
        self.log, self.env, self.progress = log, env, progress
        self.outs = [stage.directory(results) for stage in stages]
        self.pending: list[int] = []
        for i, (stage, out) in enumerate(zip(stages, self.outs)):
            if (out / "done.json").exists():
                _say_skip(stage, out, log, progress)
            else:
                _check_lock(stage, out)
                self.pending.append(i)
        self.kind = _executor_kind(executor)
        self.needs = dict(needs or {})
        if self.kind == "slurm" and any(self.needs.values()):
            raise ValueError("a SLURM wave goes out as one job array: its stages need no other")
        slots = 1 if self.kind == "debug" else max(1, jobs)
        self.limit = len(self.pending) if self.kind == "slurm" else slots
        self.running: dict[int, _InFlight] = {}
        self.failure: BaseException | None = None
        self.starts = dict.fromkeys(self.pending, 1)

    def ready(self, i: int) -> bool:
        """Whether every stage that stage ``i`` needs is done."""
        return all((d / "done.json").exists() for d in self.needs.get(i, ()))

    def start_ready(self) -> None:
        """Submit the first ready stages into the free slots (none after a failure).

        Raises:
            StageFailed: nothing runs and no waiting stage is ready.
        """
        if self.failure is not None or not self.pending or len(self.running) >= self.limit:
            return
        free = [i for i in self.pending if self.ready(i)][: self.limit - len(self.running)]
        if not free and not self.running:
            missing = [
                str(d) for i in self.pending for d in self.needs.get(i, ()) if not self.ready(i)
            ]
            raise StageFailed(f"stages wait on stages that never finished: {missing}")
        for i in free:
            self.pending.remove(i)
        if free:
            todo = [self.stages[i] for i in free]
            flights = _submit(
                self.executor, todo, self.outs, free, self.results, self.env, self.progress
            )
            self.running.update(flights)
            _inflight.update(self.running)

    def collect(self) -> None:
        """Settle every job in flight that has ended (a debug job runs here, in
        ``result()``); after a failure no waiting stage starts."""
        for i, flight in list(self.running.items()):
            if self.kind != "debug" and not flight.job.done():
                continue
            del self.running[i]
            _inflight.pop(i, None)
            self._settle(i, flight)
        if self.failure is not None:
            self.pending.clear()

    def _settle(self, i: int, flight: _InFlight) -> None:
        """An ended job: done, submitted again (it never started), or the wave's failure
        (raised once the wave settles)."""
        try:
            result = flight.job.result()
            if "failed" in result:
                raise StageFailed(result["failed"])
            if "locked" in result:  # another pipeline took the stage meanwhile
                raise LockHeld(result["locked"], Holder.parse(result["holder"]))
        except Exception as err:  # noqa: BLE001 - raised by run_wave, once the wave settles
            if (
                self.failure is None
                and _never_started(flight, err)
                and self.starts[i] < START_TRIES
            ):
                self.starts[i] += 1
                say(
                    f"[pipeline] the job of {flight.stage.kind}/{flight.stage.label} "
                    f"(job {flight.job.job_id}) ended before its stage started, with no "
                    f"output; submitting it again (try {self.starts[i]} of {START_TRIES})"
                )
                self.pending.insert(0, i)
                return
            self.failure = self.failure or _failed(flight, err)
            return
        _say_done(flight, result, self.log, self.progress)


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
