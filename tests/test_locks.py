"""Lock files and file owners: taken once, refused while held, stale ones taken over."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from synthsat.atomic import atomic_path
from synthsat.locks import (
    FileLock,
    Holder,
    LockHeld,
    host_name,
    host_tag,
    owner_state,
    owner_tag,
    pid_running,
    process_start,
    tag_owner,
)

WHAT = "stage generator/lambda0"
SINCE = "2026-11-26T16:00:00+0000"


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen(["sleep", "0"])
    proc.wait()
    return proc.pid


def write_lock(path: Path, **record: object) -> None:
    path.write_text(json.dumps(record))


def test_acquire_records_this_process_and_release_removes_it(tmp_path: Path) -> None:
    path = tmp_path / "stage.lock"
    with FileLock(path, WHAT) as lock:
        record = json.loads(path.read_text())
        assert record["pid"] == record["runner"] == os.getpid()
        assert record["host"] == host_name()
        assert record["start"] == record["runner_start"] == process_start(os.getpid())
        assert isinstance(record["start"], int)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", record["since"])
        assert lock.holder == Holder.parse(path.read_text())
    assert not path.exists()


def test_released_also_on_an_exception(tmp_path: Path) -> None:
    path = tmp_path / "stage.lock"
    with pytest.raises(RuntimeError, match="boom"), FileLock(path, WHAT):
        assert path.exists()
        raise RuntimeError("boom")
    assert not path.exists()


def test_a_second_acquire_is_refused_naming_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "stage.lock"
    with FileLock(path, WHAT) as first:
        assert first.holder is not None
        with pytest.raises(LockHeld) as held:
            FileLock(path, WHAT).acquire()
        assert str(held.value) == (
            f"{WHAT} is locked by pid {os.getpid()} on {host_name()} since "
            f"{first.holder.since} ({path}); wait for that process to end or stop it "
            f"(kill {os.getpid()})"
        )
        assert held.value.holder == first.holder
        assert Holder.parse(path.read_text()) == first.holder  # untouched
    assert not path.exists()


def test_a_handed_lock_names_the_child_and_stays_live_while_it_runs(tmp_path: Path) -> None:
    path = tmp_path / "stage.lock"
    child = subprocess.Popen(["sleep", "30"])
    try:
        with FileLock(path, WHAT) as lock:
            lock.hand_to(child.pid)
            record = json.loads(path.read_text())
            assert (record["pid"], record["runner"]) == (child.pid, os.getpid())
            assert record["start"] == process_start(child.pid)
            assert [p.name for p in tmp_path.iterdir()] == ["stage.lock"]  # no temporary
            # Without its runner (dead pid), the lock lives on with the child.
            orphaned = Holder(child.pid, host_name(), SINCE, record["start"], dead_pid())
            assert orphaned.state() == "live"
        assert not path.exists()
    finally:
        child.kill()
        child.wait()
    assert orphaned.state() == "dead"


def test_a_stale_lock_of_a_dead_pid_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "stage.lock"
    pid = dead_pid()
    write_lock(path, pid=pid, host=host_name(), since=SINCE)
    said: list[str] = []
    with FileLock(path, WHAT, notify=said.append):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert said == [
        f"[lock] {path}: taking over the stale lock of pid {pid} on {host_name()} "
        f"since {SINCE} (that process is gone)"
    ]
    assert not path.exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # the stale record is gone too


def test_a_reused_pid_or_a_zombie_does_not_keep_a_lock_alive(tmp_path: Path) -> None:
    path = tmp_path / "stage.lock"
    start = process_start(os.getpid())
    assert start is not None
    # This process's pid, but another start time: the pid was reused.
    write_lock(path, pid=os.getpid(), host=host_name(), since=SINCE, start=start - 1)
    said: list[str] = []
    with FileLock(path, WHAT, notify=said.append):
        pass
    assert len(said) == 1 and "taking over the stale lock" in said[0]
    zombie = subprocess.Popen(["sleep", "0"])
    try:
        while process_start(zombie.pid) is not None and pid_running(zombie.pid):
            pass  # until it has exited (a zombie: not yet reaped)
        assert process_start(zombie.pid) is not None  # still in /proc
        assert not pid_running(zombie.pid)
        write_lock(path, pid=zombie.pid, host=host_name(), since=SINCE)
        with FileLock(path, WHAT, notify=said.append):
            pass
        assert len(said) == 2
    finally:
        zombie.wait()


def test_a_lock_of_another_host_is_treated_as_live(tmp_path: Path) -> None:
    path = tmp_path / "stage.lock"
    write_lock(path, pid=dead_pid(), host="other-box.example.org", since=SINCE)
    before = path.read_text()
    with pytest.raises(LockHeld) as held:
        FileLock(path, WHAT).acquire()
    pid = json.loads(before)["pid"]
    assert str(held.value) == (
        f"{WHAT} is locked by pid {pid} on other-box.example.org since {SINCE} ({path}); "
        f"a process on another host cannot be checked from {host_name()}: "
        f"if it no longer runs, delete {path}"
    )
    assert path.read_text() == before


def test_an_unreadable_lock_is_taken_over_after_a_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty lock: its writer died between creating and writing it."""
    monkeypatch.setattr(FileLock, "WRITE_WAIT_S", 0.1)
    path = tmp_path / "stage.lock"
    path.write_text("")
    said: list[str] = []
    with FileLock(path, WHAT, notify=said.append):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert said == [f"[lock] {path}: taking over an unreadable lock"]


def test_file_names_carry_their_owner(tmp_path: Path) -> None:
    assert owner_tag() == f"pid{os.getpid()}@{host_tag()}"
    assert host_tag("node-7.cluster.example.org") == "node-7"
    assert host_tag("a_b") == "a-b"
    assert host_tag("x" * 40 + ".example.org") == "x" * 32
    tmp = atomic_path(tmp_path / "tile_001_s0.tif")
    assert re.fullmatch(
        rf"\.tile_001_s0\.pid{os.getpid()}@{re.escape(host_tag())}\.[a-z0-9_]+\.tif\.part",
        tmp.name,
    )
    assert tag_owner(tmp.name) == (os.getpid(), host_tag())
    assert tag_owner(".tile_001_s0.x1y2z3.tif.part") is None  # an older run's
    assert owner_state(os.getpid(), host_tag()) == "live"
    assert owner_state(os.getpid(), host_name()) == "live"
    assert owner_state(dead_pid(), host_tag()) == "dead"
    assert owner_state(os.getpid(), "other-box") == "elsewhere"
