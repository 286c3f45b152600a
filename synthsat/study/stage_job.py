"""The function a stage's submitit job runs (:class:`StageJob`), and how it ends.

A job runs its stage under the stage's lock to its ``done.json``
(:func:`~synthsat.study.stages.run_stage`) and reports back as data, not as an exception
that submitit would hand the pipeline as a traceback: ``{"out", "ran", "seconds"}``,
``{"failed": message}`` (the stage's Hydra job failed or was interrupted: its message
and log tail) or ``{"locked": message, "holder": record}`` (another live process holds
the stage's lock, e.g. a second pipeline started at the same instant, past the
pipeline's own check: the pipeline stops with :class:`~synthsat.locks.LockHeld`, one
line, exit 2).

Interruptions, and what follows them:

* SIGINT / SIGTERM to the job (the pipeline stopping, ``scancel``): the stage's Hydra
  job is stopped with it (:func:`synthsat.study.processes.stopped_on_signal`); it exits as
  interrupted (:mod:`synthsat.jobs.interrupts`), so the stage is not done and the next
  pipeline run resumes it from its ``last.ckpt``. Not requeued: the user stopped it.
* SLURM preemption or time limit: submitit's signal (``USR2``, sent
  ``signal_delay_s`` before the end, see submitit's checkpointing) calls
  :meth:`StageJob.checkpoint` — the stage's Hydra job is stopped (not done) and the
  same job is handed back, so submitit requeues it (``scontrol requeue``) and the
  requeued job resumes the stage from its ``last.ckpt``; the pipeline keeps waiting
  for it. A job timed out more than submitit's ``max_num_timeout`` times is not
  requeued (it fails).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthsat.locks import LockHeld
from synthsat.study import processes
from synthsat.study.stages import Stage, StageFailed, run_stage


@dataclass
class StageJob:
    """The function a submitit job runs: one stage, from its lock to its ``done.json``.

    Args:
        stage: the stage.
        results: the study's results directory (shared with the job's machine).
        env: environment variables set for the stage's Hydra job on top of the job's own
            (e.g. ``SYNTHSAT_THREADS``), not a whole environment: a SLURM job keeps its
            node's.
    """

    stage: Stage
    results: Path
    env: dict[str, str] = field(default_factory=dict)

    def __call__(self) -> dict[str, Any]:
        """Run the stage (unless done); see the module docstring for what it returns."""
        log: list[str] = []
        try:
            with processes.stopped_on_signal():  # scancel / SIGTERM stop the Hydra job too
                out = run_stage(self.stage, self.results, log, {**os.environ, **self.env})
        except StageFailed as err:
            return {"failed": str(err)}
        except LockHeld as err:
            return {"locked": str(err), "holder": err.holder.to_json()}
        ran = bool(log) and log[0].startswith("ran")
        seconds = float(json.loads((out / "done.json").read_text())["seconds"]) if ran else 0.0
        return {"out": str(out), "ran": ran, "seconds": seconds}

    def checkpoint(self) -> Any:
        """submitit's hook on preemption or time-out (its ``USR2``): stop the stage's
        Hydra job (it exits interrupted; no ``done.json``) and return this job again,
        for submitit to requeue; the requeued job resumes the stage from its
        ``last.ckpt`` (:func:`~synthsat.study.stages.resume_checkpoint`)."""
        from submitit.helpers import DelayedSubmission

        processes.stop_all()
        return DelayedSubmission(StageJob(self.stage, self.results, dict(self.env)))
