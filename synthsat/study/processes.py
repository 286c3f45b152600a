"""Stage processes that stop with the pipeline.

Each stage's job runs in its own session (so its process group holds the job and its
workers, and a Ctrl-C in the terminal reaches the pipeline only). Within
:func:`stopped_on_signal` (the pipeline's ``main``), SIGINT or SIGTERM stops every
running stage — SIGTERM to its process group, SIGKILL to what is left after a grace
period — and then exits with status ``128 + signal``, releasing the stages' locks on
the way out. ``kill -9`` of the pipeline cannot be caught: its stages keep running,
and their locks (:mod:`synthsat.locks`) keep a rerun from starting them twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from types import FrameType
from typing import IO, Any

#: Seconds a stage gets to exit after SIGTERM before SIGKILL.
GRACE_S = 10.0

_running: dict[int, subprocess.Popen[Any]] = {}
_guard = threading.RLock()  # re-entrant: the signal handler runs in the main thread
_stopping = False


class Stopping(RuntimeError):
    """The pipeline is stopping: no new stage starts."""


def start(
    cmd: Sequence[str],
    stdout: IO[Any],
    env: dict[str, str] | None = None,
    on_start: Callable[[int], Any] | None = None,
) -> subprocess.Popen[Any]:
    """Start ``cmd`` in its own session, its output (stdout and stderr) to ``stdout``.

    Args:
        cmd: the command.
        stdout: receives its output (stdout and stderr).
        env: its environment (default: this process's).
        on_start: called with its pid once it runs (if this raises, it is stopped).

    Returns:
        its ``subprocess.Popen``, registered for :func:`stop_all` until :func:`wait`.

    Raises:
        Stopping: once :func:`stop_all` has run (the process is not started, or stopped).
    """
    if _stopping:
        raise Stopping("the pipeline is stopping")
    proc = subprocess.Popen(
        list(cmd), stdout=stdout, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    try:
        with _guard:
            late = _stopping  # stop_all ran while this one started
            _running[proc.pid] = proc
        if late:
            raise Stopping("the pipeline is stopping")
        if on_start is not None:
            on_start(proc.pid)
    except BaseException:
        stop([proc])
        proc.wait()
        with _guard:
            _running.pop(proc.pid, None)
        raise
    return proc


def wait(proc: subprocess.Popen[Any]) -> int:
    """Wait for a :func:`start` ed process; its exit status. If the wait is interrupted
    (an exception in this thread), the process is stopped first."""
    try:
        return proc.wait()
    except BaseException:
        stop([proc])
        proc.wait()
        raise
    finally:
        with _guard:
            _running.pop(proc.pid, None)


def _signal_group(proc: subprocess.Popen[Any], sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):  # the group is gone
        os.killpg(proc.pid, sig)


def _exited(proc: subprocess.Popen[Any]) -> bool:
    """Whether ``proc`` has exited, without reaping it (its waiter does that)."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped already
        return True


def _wait_exited(procs: Sequence[subprocess.Popen[Any]], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not all(_exited(proc) for proc in procs) and time.monotonic() < deadline:
        time.sleep(0.05)


def stop(procs: Sequence[subprocess.Popen[Any]], grace: float = GRACE_S) -> None:
    """SIGTERM the process groups of ``procs``, and SIGKILL what is left of them after
    ``grace`` seconds; returns once the processes have exited.

    They are not reaped here: whoever waits for them (:func:`wait`, maybe in another
    thread) gets their exit status. (A signal handler must not wait with ``Popen.wait``:
    the wait it interrupted holds that ``Popen``'s lock.)
    """
    for proc in procs:
        _signal_group(proc, signal.SIGTERM)
    _wait_exited(procs, grace)
    for proc in procs:  # the leader, or workers that outlived it
        _signal_group(proc, signal.SIGKILL)
    _wait_exited(procs, GRACE_S)


def stop_all(grace: float = GRACE_S) -> list[int]:
    """Stop every running stage (see :func:`stop`); no new one starts. Their pids."""
    global _stopping
    with _guard:
        _stopping = True
        procs = list(_running.values())
    stop(procs, grace)
    return [proc.pid for proc in procs]


@contextmanager
def stopped_on_signal(
    grace: float = GRACE_S, also: Callable[[float], list[int]] | None = None
) -> Iterator[None]:
    """Within this block (in the main thread), SIGINT and SIGTERM stop the running stages
    (:func:`stop_all`, then ``also(grace)``, e.g. the pipeline's submitted jobs, see
    :func:`synthsat.study.executors.stop_running`), print a line naming their pids on stderr
    and exit with ``128 + signal``."""
    global _stopping

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        pids = stop_all(grace)
        if also is not None:
            pids += also(grace)
        stopped = ", ".join(str(pid) for pid in pids) or "none"
        # os.write: the interrupted code may be inside a sys.stderr write
        os.write(2, f"[pipeline] {name}: stopped the running stages (pid {stopped})\n".encode())
        raise SystemExit(128 + signum)

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)
        with _guard:
            _stopping = False
