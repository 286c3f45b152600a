"""Atomic file writes: a temporary file next to the target, then one rename.

A reader never sees a half-written file, and a killed writer leaves at most a hidden
``.<name>.pid<PID>@<host>.*.part`` file behind (never the target); the name says which
process writes it (:func:`synthsat.locks.tag_owner`), so a cleaner can tell a live
writer's file from an abandoned one. Every write of a result, record or cache entry in
synthsat goes through here.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from synthsat.locks import owner_state, owner_tag

#: Pattern of temporary files (left behind only by a killed writer).
TEMP_GLOB = ".*.part"

#: A name :func:`atomic_path` makes: ``.<stem>.pid<PID>@<host>.<mkstemp's 8 characters>
#: <suffix>.part`` (nothing else is ever taken for one of its files).
_TEMP_NAME = re.compile(
    r"\.(?P<stem>.+)\.pid(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)\.[a-z0-9_]{8}"
    r"(?P<suffix>\.[^.]+)?\.part"
)


def file_mode() -> int:
    """Permissions of a new file under this process's umask (``0o666`` less the umask)."""
    try:  # Linux: read it without changing it (os.umask would, for every thread)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_path(final: str | Path) -> Path:
    """A fresh private temporary path next to ``final`` (same file system, so the rename
    is atomic), named after ``final`` and this process (``.<stem>.pid<PID>@<host>.<random>
    <suffix>.part``); the parent directory is created."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{final.stem}.{owner_tag()}.", suffix=final.suffix + ".part", dir=final.parent
    )
    os.close(fd)
    return Path(tmp)


def temp_owner(name: str) -> tuple[int, str] | None:
    """``(pid, host tag)`` of the writer of a temporary file named ``name`` by
    :func:`atomic_path`; None for any other name (e.g. a user's ``.thesis.part``)."""
    found = _TEMP_NAME.fullmatch(name)
    return None if found is None else (int(found["pid"]), found["host"])


def remove_abandoned(directory: str | Path) -> list[Path]:
    """Delete the temporary files of :func:`atomic_path` in ``directory`` whose writer is
    gone (killed); returns them.

    Only names that :func:`atomic_path` makes count (:func:`temp_owner`): another
    program's hidden ``.part`` files are never touched, and neither are the files of a
    writer that still runs here or runs on another host (where it cannot be checked).
    """
    removed = []
    for path in sorted(Path(directory).glob(TEMP_GLOB)):
        owner = temp_owner(path.name)
        if owner is not None and owner_state(*owner) == "dead":
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def publish(tmp: Path, final: str | Path, fsync: bool = False) -> None:
    """Give ``tmp`` (private, from ``mkstemp``) the usual permissions, rename it to ``final``.

    With ``fsync``, the data reach the disk before the rename and the rename before
    this returns (the file survives a power cut whole or not at all).
    """
    os.chmod(tmp, file_mode())
    if fsync:
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    os.replace(tmp, final)
    if fsync:
        _fsync_dir(Path(final).parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_write(final: str | Path, mode: str = "w", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; on success it replaces ``final``, on error it
    is removed and ``final`` is untouched.

    Example::

        with atomic_write(out / "summary.csv", newline="") as f:
            csv.writer(f).writerows(rows)
    """
    tmp = atomic_path(final)
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
        publish(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(final: str | Path, text: str) -> Path:
    """Write ``text`` to ``final`` atomically; returns ``final``."""
    with atomic_write(final) as f:
        f.write(text)
    return Path(final)


def write_with(final: str | Path, write: Callable[[Path], Any], fsync: bool = False) -> Path:
    """Let ``write(tmp)`` fill a temporary path (e.g. ``torch.save``, ``rasterio``), then
    publish it as ``final`` (see :func:`publish` for ``fsync``); ``final`` is untouched
    if ``write`` raises."""
    tmp = atomic_path(final)
    try:
        write(tmp)
        publish(tmp, final, fsync=fsync)
    finally:
        tmp.unlink(missing_ok=True)
    return Path(final)


def save_figure(fig: Any, final: str | Path, dpi: int = 100) -> Path:
    """Save a matplotlib figure as a PNG at ``final`` atomically (a reader never sees half
    an image); returns ``final``."""
    return write_with(final, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
