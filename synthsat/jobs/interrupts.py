"""An interrupted job never ends as if it had finished.

Lightning answers SIGTERM (the pipeline stopping its stages, ``scancel``, a SLURM
preemption) by raising its ``SIGTERMException`` — a ``SystemExit`` whose exit status is
0 — at the end of the epoch (or of the evaluation batch). A stage's runner would take
that for a finished job and record the stage done at whatever step it reached. Here:

* :class:`~synthsat.callbacks.StopOnSigterm` (on every job's trainer, see
  :func:`synthsat.jobs.runtime.build_trainer`) stops training after the step in progress
  (not at the epoch's end, which the grace period may not reach);
* :func:`exit_status` turns Lightning's exception into the exit status of a process
  killed by SIGTERM (:data:`INTERRUPTED_EXIT`, 143) with one line on stderr, in every
  entry point (:func:`synthsat.jobs.user_errors.user_errors`), so the stage is not done and its
  rerun resumes from ``last.ckpt`` (:func:`synthsat.study.stages.resume_checkpoint`).

Legitimate early ends — early stopping, ``trainer.max_time``, ``max_epochs`` — end
``trainer.fit`` normally and are not interrupts.
"""

from __future__ import annotations

import signal
import sys

#: The exit status of a job stopped by SIGTERM before it finished (``128 + 15``).
INTERRUPTED_EXIT = 128 + int(signal.SIGTERM)


def is_sigterm_stop(err: BaseException) -> bool:
    """Whether ``err`` is Lightning's ``SIGTERMException`` (a job stopped by SIGTERM)."""
    if "lightning.pytorch" not in sys.modules:  # Lightning never ran: not its exception
        return False
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    return isinstance(err, SIGTERMException)


def interrupted_message(step: int | None = None) -> str:
    """The line a job stopped by SIGTERM prints."""
    at = "" if step is None else f" at step {step}"
    return (
        f"interrupted by SIGTERM{at}: the job did not finish (exit {INTERRUPTED_EXIT}); "
        "rerun it to resume from its last checkpoint"
    )


def exit_status(err: SystemExit) -> SystemExit:
    """The ``SystemExit`` a job ends with: Lightning's ``SIGTERMException`` becomes
    :data:`INTERRUPTED_EXIT` (its line printed on stderr); any other is kept."""
    if not is_sigterm_stop(err):
        return err
    print(f"error: {interrupted_message(getattr(err, 'step', None))}", file=sys.stderr, flush=True)
    return SystemExit(INTERRUPTED_EXIT)
