"""Errors that users read: bad data, bad configuration, unusable checkpoints, a held lock,
a training that diverged.

Entry points print these as one or two lines with exit code 2 (see
:func:`synthsat.jobs.user_errors.user_errors`); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from synthsat.data.errors import DataError
from synthsat.locks import LockHeld


class ConfigError(ValueError):
    """A configuration value out of range or of the wrong kind; names the key."""


class CheckpointError(ValueError):
    """A checkpoint that is missing, empty, corrupt or of the wrong kind for the job."""


class CheckpointMissing(CheckpointError, FileNotFoundError):
    """A checkpoint path that names no file."""


class IncompleteOutput(RuntimeError):
    """A job's outputs are incomplete at its end (e.g. tiles another host was writing)."""


class BudgetNotMet(RuntimeError):
    """Training stopped on its time cap (``trainer.max_time``) before its step budget
    (``trainer.max_steps``): a run of fewer steps than asked, which a study must not use."""


class NonFiniteLoss(FloatingPointError):
    """A training loss (or gradient norm) that is NaN or infinite: training stopped."""


#: The exception types an entry point reports without a traceback.
USER_ERRORS: tuple[type[Exception], ...] = (
    DataError,
    ConfigError,
    CheckpointError,
    IncompleteOutput,
    LockHeld,
    NonFiniteLoss,
    BudgetNotMet,
)

__all__ = [
    "USER_ERRORS",
    "BudgetNotMet",
    "CheckpointError",
    "CheckpointMissing",
    "ConfigError",
    "DataError",
    "IncompleteOutput",
    "LockHeld",
    "NonFiniteLoss",
]
