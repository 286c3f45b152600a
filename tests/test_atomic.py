"""Atomic writes: the target is replaced whole or not at all."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from synthsat.atomic import atomic_write, file_mode, save_figure, write_text, write_with


def test_write_text_replaces_the_target_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "record.json"
    assert write_text(target, "one") == target
    write_text(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["record.json"]
    assert stat.S_IMODE(os.stat(target).st_mode) == file_mode()


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "summary.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_write(target, newline="") as f:
        f.write("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.csv"]


def test_write_with_a_library_writer(tmp_path: Path) -> None:
    target = tmp_path / "a.npy"

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # np.save(path) would append .npy to the .part name
            np.save(f, np.arange(3))

    write_with(target, save)
    assert np.load(target).tolist() == [0, 1, 2]

    def fail(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise OSError("no space")

    with pytest.raises(OSError, match="no space"):
        write_with(target, fail)
    assert np.load(target).tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]


def test_file_mode_follows_the_umask() -> None:
    old = os.umask(0o027)
    try:
        assert file_mode() == 0o640
    finally:
        os.umask(old)


def test_save_figure_writes_a_png_whole_or_not_at_all(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    target = tmp_path / "curve.png"
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [0, 1])
    save_figure(fig, target, dpi=50)
    assert Image.open(target).size == (100, 50)  # a PNG (the .part name has no suffix)
    before = target.read_bytes()

    class Broken:
        def savefig(self, path: Path, **kwargs: object) -> None:
            Path(path).write_bytes(b"\x89PNG half")
            raise OSError("no space")

    with pytest.raises(OSError, match="no space"):
        save_figure(Broken(), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]
    plt.close(fig)


def test_a_lock_handed_on_is_rewritten_atomically(tmp_path: Path) -> None:
    from synthsat.locks import FileLock

    lock = FileLock(tmp_path / "stage.lock", "stage test").acquire()
    lock.hand_to(os.getppid())
    assert json.loads((tmp_path / "stage.lock").read_text())["pid"] == os.getppid()
    assert [p.name for p in tmp_path.iterdir()] == ["stage.lock"]
