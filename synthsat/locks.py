"""Who owns a file: a process that still runs (here or on another host), or nobody.

Two uses share this one idea of ownership:

* :class:`FileLock` — a lock file, e.g. a stage's ``stage.lock``: created atomically
  (``O_CREAT | O_EXCL``) with a JSON record of its holder — pid, host, start time and
  the process's own start time from ``/proc/<pid>/stat`` (so a pid reused by an
  unrelated process does not keep a lock alive). Released on exit (a context manager,
  also on exceptions).
* :func:`owner_tag` / :func:`tag_owner` — a temporary ``.part`` file's name carries its
  writer, ``pid<PID>@<host>`` (see :func:`synthsat.atomic.atomic_path`), so a cleaner
  removes only the ``.part`` files of writers that are gone.

An owner is judged by :func:`owner_state`: ``live`` (its pid runs on this host, not a
zombie, with the recorded start time), ``dead`` (it does not: a *stale* lock, taken
over with a line saying so; an abandoned ``.part`` file, removed), or ``elsewhere`` (on
another host, where its pid cannot be checked: treated as live, and the message says
how to remove the lock by hand).

Who holds a stage's lock: the pipeline's runner takes it (its own pid) before it
starts the stage's process, and rewrites it with the stage process's pid
(:meth:`FileLock.hand_to`) as soon as that process exists; the record keeps both pids
and the lock reads as live while either runs. So after ``kill -9`` of the pipeline
(which cannot be caught, and leaves the stage's process running, orphaned) the lock
still names a live process, and a rerun refuses that stage instead of starting a
second copy in the same directory; once the orphan ends, the lock is stale and the
next run takes it over. (A ``kill -9`` in the microseconds between starting the
stage's process and rewriting the lock would leave a lock naming only the dead runner.)
The alternative — every job taking the lock itself — would put the lock into every
entry point and could not cover the runner's own time before the job starts.

A pipeline rerun that meets a live stage lock stops with :class:`LockHeld` (one line:
the stage, pid, host, since, and what to do) rather than skipping the stage: the
stages after it would read its unfinished outputs (a synthesis stage, the checkpoint
of a generator still training), and the user most likely wants to stop the old run or
wait for it, not to have two half-studies running.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

log = logging.getLogger(__name__)

#: What :func:`owner_state` says of an owner.
State = Literal["live", "dead", "elsewhere"]

_TAG = re.compile(r"\.pid(\d+)@([A-Za-z0-9-]+)\.")


def host_name() -> str:
    """This host's name (as recorded in locks)."""
    return socket.gethostname()


def host_tag(host: str | None = None) -> str:
    """``host`` (default: this host) as it appears in file names: its first label, with
    characters other than letters, digits and ``-`` replaced by ``-``, at most 32 of
    them (hosts whose names share that are taken for this host)."""
    first = (host if host is not None else host_name()).split(".", 1)[0]
    return re.sub(r"[^A-Za-z0-9-]", "-", first)[:32] or "-"


def owner_tag() -> str:
    """This process as a file name part: ``pid<PID>@<host tag>``."""
    return f"pid{os.getpid()}@{host_tag()}"


def tag_owner(name: str) -> tuple[int, str] | None:
    """``(pid, host tag)`` of the owner that :func:`owner_tag` put into a file ``name``
    (``.tile_001_s0.pid4242@box.k3j4h5g6.tif.part``); None for a name without one."""
    found = _TAG.search(name)
    return None if found is None else (int(found.group(1)), found.group(2))


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, ``/proc/<pid>/stat`` field
    22); None where that cannot be read (no such process, no ``/proc``)."""
    stat = _proc_stat(pid)
    return None if stat is None else stat[1]


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time) of ``pid`` from ``/proc``, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = text.rsplit(")", 1)[-1].split()  # after "pid (comm)": comm may hold spaces
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def pid_running(pid: int, start: int | None = None) -> bool:
    """Whether process ``pid`` runs on this host (a zombie does not) and, if ``start`` is
    given and ``/proc`` tells, started at ``start`` (else the pid was reused)."""
    if pid <= 0:
        return False
    stat = _proc_stat(pid)
    if stat is not None:
        state, started = stat
        return state not in ("Z", "X") and (start is None or started == start)
    if Path("/proc/self/stat").exists():  # /proc works, and knows no such process
        return False
    try:  # no /proc: ask the kernel whether the pid exists
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_this_host(host: str) -> bool:
    """Whether ``host`` (a name or a :func:`host_tag`) names this host."""
    return host in (host_name(), host_tag())


def owner_state(pid: int, host: str, start: int | None = None) -> State:
    """``live``, ``dead`` or ``elsewhere`` (another host: cannot be checked from here)."""
    if not is_this_host(host):
        return "elsewhere"
    return "live" if pid_running(pid, start) else "dead"


@dataclass(frozen=True)
class Holder:
    """The record in a lock file.

    Attributes:
        pid: the process doing the locked work (a stage's process once handed to it).
        host: the host it runs on.
        since: when the lock was taken (local time, ISO 8601).
        start: ``pid``'s :func:`process_start` (None: unknown).
        runner: the process that took the lock (None: ``pid`` itself).
        runner_start: ``runner``'s :func:`process_start`.
    """

    pid: int
    host: str
    since: str
    start: int | None = None
    runner: int | None = None
    runner_start: int | None = None

    @classmethod
    def me(cls) -> Holder:
        """This process, now."""
        pid = os.getpid()
        since = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        return cls(pid, host_name(), since, process_start(pid), pid, process_start(pid))

    @classmethod
    def parse(cls, text: str) -> Holder:
        """The holder in a lock file's text (ValueError if it holds none)."""
        try:
            data = json.loads(text)
            return cls(
                pid=int(data["pid"]),
                host=str(data["host"]),
                since=str(data["since"]),
                start=None if data.get("start") is None else int(data["start"]),
                runner=None if data.get("runner") is None else int(data["runner"]),
                runner_start=(
                    None if data.get("runner_start") is None else int(data["runner_start"])
                ),
            )
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as err:
            raise ValueError(f"not a lock record: {text[:80]!r}") from err

    def to_json(self) -> str:
        """The lock file's text."""
        return json.dumps(asdict(self), indent=2) + "\n"

    def state(self) -> State:
        """``live`` while its process or its runner runs; see :func:`owner_state`."""
        if not is_this_host(self.host):
            return "elsewhere"
        if pid_running(self.pid, self.start):
            return "live"
        if self.runner is not None and pid_running(self.runner, self.runner_start):
            return "live"
        return "dead"

    def describe(self) -> str:
        """``pid 4242 on box since 2026-11-26T16:30:00+0000``."""
        return f"pid {self.pid} on {self.host} since {self.since}"


class LockHeld(RuntimeError):
    """A lock another live process holds (or one on another host)."""

    def __init__(self, message: str, holder: Holder) -> None:
        super().__init__(message)
        self.holder = holder


class FileLock:
    """A lock file held by one live process; see the module docstring.

    Example::

        with FileLock(out / "stage.lock", "stage generator/lambda0") as lock:
            proc = subprocess.Popen(...)
            lock.hand_to(proc.pid)
            proc.wait()

    Args:
        path: the lock file.
        what: what it locks, for messages (``stage generator/lambda0``).
        notify: receives the line that says a stale lock was taken over.
    """

    #: How long an unreadable lock file may be one being written right now.
    WRITE_WAIT_S = 1.0

    def __init__(
        self, path: str | Path, what: str, notify: Callable[[str], Any] = log.warning
    ) -> None:
        self.path = Path(path)
        self.what = what
        self.notify = notify
        self.holder: Holder | None = None

    def acquire(self) -> FileLock:
        """Take the lock, taking over a stale one.

        Raises:
            LockHeld: a live process holds it, or one on another host.
        """
        for _ in range(3):  # another process may take over the same stale lock
            me = Holder.me()
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._judge()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(me.to_json())
            self.holder = me
            return self
        raise LockHeld(f"{self.what}: could not take {self.path}", Holder.me())

    def check(self) -> None:
        """Raise :class:`LockHeld` if the lock is held now, without taking it; a stale
        lock is removed (with a line saying so).

        Raises:
            LockHeld: a live process holds it, or one on another host.
        """
        if self.path.exists():
            self._judge()

    def _judge(self) -> None:
        """Raise for a held lock; remove a stale one (with a line saying so)."""
        holder, stamp = self._read()
        if holder is None:  # unreadable after a wait: its writer died between open and write
            if stamp is not None:
                self.notify(f"[lock] {self.path}: taking over an unreadable lock")
                self._remove_if(stamp)
            return
        state = holder.state()
        if state == "live":
            raise LockHeld(
                f"{self.what} is locked by {holder.describe()} ({self.path}); "
                f"wait for that process to end or stop it (kill {holder.pid})",
                holder,
            )
        if state == "elsewhere":
            raise LockHeld(
                f"{self.what} is locked by {holder.describe()} ({self.path}); "
                f"a process on another host cannot be checked from {host_name()}: "
                f"if it no longer runs, delete {self.path}",
                holder,
            )
        self.notify(
            f"[lock] {self.path}: taking over the stale lock of {holder.describe()} "
            "(that process is gone)"
        )
        self._remove_if(stamp)

    def _read(self) -> tuple[Holder | None, tuple[int, int] | None]:
        """The lock's holder (None: unreadable) and its file's identity (None: gone)."""
        deadline = time.monotonic() + self.WRITE_WAIT_S
        while True:
            try:
                with open(self.path) as f:
                    st = os.fstat(f.fileno())
                    text = f.read()
            except FileNotFoundError:
                return None, None
            stamp = (st.st_ino, st.st_mtime_ns)
            try:
                return Holder.parse(text), stamp
            except ValueError:
                if time.monotonic() > deadline:
                    return None, stamp
                time.sleep(0.05)

    def _remove_if(self, stamp: tuple[int, int]) -> None:
        """Remove the lock file if it is still the one judged (not one taken since)."""
        grave = self.path.with_name(f".{self.path.name}.{owner_tag()}.stale")
        try:
            os.rename(self.path, grave)
        except FileNotFoundError:
            return
        st = grave.stat()
        if (st.st_ino, st.st_mtime_ns) != stamp:  # taken over and retaken meanwhile
            with contextlib.suppress(FileExistsError):  # (unless yet another took it)
                os.link(grave, self.path)
        grave.unlink()

    def hand_to(self, pid: int) -> None:
        """Record ``pid`` (e.g. the child doing the work) as the holder; this process
        stays recorded as its runner."""
        if self.holder is None:
            raise RuntimeError(f"{self.path}: hand_to() of a lock not held")
        holder = Holder(
            pid,
            self.holder.host,
            self.holder.since,
            process_start(pid),
            self.holder.runner,
            self.holder.runner_start,
        )
        from synthsat.atomic import write_text  # atomic imports this module

        write_text(self.path, holder.to_json())
        self.holder = holder

    def release(self) -> None:
        """Remove the lock file if this process still holds it."""
        if self.holder is None:
            return
        holder, self.holder = self.holder, None
        try:
            current = Holder.parse(self.path.read_text())
        except (OSError, ValueError):
            return
        if current == holder:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
