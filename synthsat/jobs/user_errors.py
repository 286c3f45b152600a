"""Errors that users read, printed as one line without a traceback (:func:`user_errors`,
the decorator of every job's body), with a hint where shared data is missing."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from synthsat.data.errors import DataError
from synthsat.errors import USER_ERRORS
from synthsat.jobs.interrupts import exit_status
from synthsat.tracking import finish_tracking


# -- user errors ------------------------------------------------------------------------
def user_errors(main: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Decorate an entry point's body: errors that users read print without a traceback.

    A :class:`~synthsat.data.DataError`, :class:`~synthsat.errors.ConfigError`,
    :class:`~synthsat.errors.CheckpointError` or an OmegaConf error (a missing ``???``
    value, an unknown key) prints as ``error: <message>`` on stderr and exits with
    status 2, also when Hydra's ``instantiate`` wrapped it (a bad ``data.source``
    setting found while the data module is built). ``HYDRA_FULL_ERROR=1`` or
    ``traceback=true`` (set by every ``debug=`` preset) re-raises it with its traceback.
    Use it under ``@hydra.main``.

    A job stopped by SIGTERM (Lightning's ``SIGTERMException``, which would exit 0)
    exits with status 143 and one line (:mod:`synthsat.jobs.interrupts`): it did not finish.
    However the job ends, its W&B run is finished (:func:`finish_tracking`): each job of
    a multirun has a run of its own.
    """

    @functools.wraps(main)
    def wrapper(cfg: DictConfig) -> Any:
        failed = True
        try:
            result = _report_user_errors(main, cfg)
            failed = False
            return result
        except SystemExit as stop:  # Lightning's SIGTERM stop exits 0: not for a stage
            raise exit_status(stop) from None
        finally:
            finish_tracking(failed)

    return wrapper


def _report_user_errors(main: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """``main(cfg)``; a user error printed as one line and exit status 2 (:func:`user_errors`)."""
    try:
        return main(cfg)
    except (*USER_ERRORS, OmegaConfBaseException, InstantiationException) as raised:
        err = _user_error(raised)
        debug = os.environ.get("HYDRA_FULL_ERROR") == "1" or bool(
            OmegaConf.select(cfg, "traceback", default=False)
        )
        if err is None or debug:
            raise
        message = str(err).strip() or type(err).__name__
        if isinstance(err, OmegaConfBaseException):
            message = message.splitlines()[0]
        if isinstance(err, DataError):
            message += shared_data_hint(cfg, message)
        print(f"error: {message}", file=sys.stderr, flush=True)
        print("(HYDRA_FULL_ERROR=1 shows the traceback)", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def shared_data_hint(cfg: DictConfig, message: str) -> str:
    """How to point the jobs at the shared data folder, for a message about a missing
    file or folder under it (``paths.shared_dir``, e.g. ``data=dubai``), else ``""``.

    The default ``<paths.root>/../shared/data`` holds only in the repository's own layout;
    from anywhere else the data is found through ``SYNTHSAT_SHARED`` or the override.
    """
    try:
        shared = OmegaConf.select(cfg, "paths.shared_dir", default=None, throw_on_missing=False)
    except OmegaConfBaseException:  # an interpolation that does not resolve here
        return ""
    if not shared or "does not exist" not in message or str(Path(shared)) not in message:
        return ""
    return (
        f"; the shared data folder is paths.shared_dir={shared}: set SYNTHSAT_SHARED=DIR "
        "or pass paths.shared_dir=DIR (the folder holding the dataset's folder, e.g. dubai/)"
    )


def _user_error(err: BaseException | None) -> BaseException | None:
    """``err`` or, for an error ``instantiate`` wrapped, the user error it wraps (or None)."""
    while isinstance(err, InstantiationException):
        err = err.__cause__
    return err if isinstance(err, (*USER_ERRORS, OmegaConfBaseException)) else None
