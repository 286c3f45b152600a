"""Stages as submitit jobs: ``pipeline.executor=local`` (the default), ``slurm`` or ``debug``.

Each stage goes out as one submitit job whose function,
:class:`~synthsat.study.stage_job.StageJob`, runs the stage's Hydra job under the stage's
lock and writes its ``done.json`` (:func:`~synthsat.study.stages.run_stage`): the job itself
owns the stage, wherever it runs, so a killed pipeline leaves a job that finishes its
stage and a lock that stops a rerun from starting it twice; a preempted SLURM job is
requeued (see :mod:`synthsat.study.stage_job`). :func:`~synthsat.study.waves.run_wave` runs
one wave of independent stages:

* ``local`` — submitit's :class:`~submitit.LocalExecutor`, one process per stage on this
  machine, at most ``pipeline.jobs`` at once (the study's threads shared among them);
* ``slurm`` — submitit's :class:`~submitit.SlurmExecutor`: the wave's stages go out
  together as one job array, ``sbatch`` parameters from the ``slurm`` config group
  (``conf/slurm/``); SLURM runs at most ``slurm.array_parallelism`` at once;
* ``debug`` — submitit's :class:`~submitit.DebugExecutor`: every stage in this
  process, one after another (for tests and debuggers).

Stopping the pipeline (SIGINT, SIGTERM) stops the stages of the wave in flight
(:func:`~synthsat.study.waves.stop_running`, called by
:func:`synthsat.study.processes.stopped_on_signal`): a local stage's Hydra job (the
process its lock names) gets SIGTERM, then SIGKILL after a grace period, and every job is
cancelled (``scancel`` on SLURM).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import submitit

from synthsat.errors import ConfigError
from synthsat.study.slurm import slurm_parameters
from synthsat.study.stage_job import StageJob
from synthsat.study.waves import run_wave, running_stages, stop_running

__all__ = [
    "EXECUTORS",
    "StageJob",
    "make_executor",
    "run_wave",
    "running_stages",
    "stop_running",
]

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
