"""Nothing outside what a job owns is touched: temporary files of other programs and of
live writers stay, abandoned ones of this project's writers go; outputs never hold the
data (issue 25, rows 3, 4 and 11)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from synthsat.atomic import atomic_path, remove_abandoned, temp_owner
from synthsat.errors import ConfigError
from synthsat.jobs.runtime import check_outputs
from synthsat.locks import host_tag
from synthsat.synthesis.writer import remove_stale_temps
from synthsat.tasks.checkpoints import AtomicCheckpointIO

CONF = Path(__file__).resolve().parents[1] / "conf"


def _dead_pid() -> int:
    """The pid of a process that has ended."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture()
def live_pid() -> object:
    """A running process standing in for another writer."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _temps(folder: Path, stem: str, suffix: str, live: int) -> dict[str, Path]:
    """A dead writer's and a live writer's temporary files of ``<stem><suffix>`` in
    ``folder``, and other programs' hidden ``.part`` files."""
    here = host_tag()
    names = {
        "dead": f".{stem}.pid{_dead_pid()}@{here}.k3j4h5g6{suffix}.part",
        "live": f".{stem}.pid{live}@{here}.a1b2c3d4{suffix}.part",
        "remote": f".{stem}.pid{_dead_pid()}@other-box.a1b2c3d4{suffix}.part",
        "thesis": ".thesis.part",
        "untagged": f".{stem}.x1y2z3{suffix}.part",
        "lookalike": f".notes.pid{_dead_pid()}@{here}.draft.part",
    }
    folder.mkdir(parents=True, exist_ok=True)
    paths = {key: folder / name for key, name in names.items()}
    for path in paths.values():
        path.write_bytes(b"someone's bytes")
    return paths


def test_only_this_projects_writers_temporaries_are_named_as_theirs() -> None:
    made = atomic_path(Path("/tmp/synthsat-test-names/last.ckpt"))
    made.unlink()
    assert temp_owner(made.name) is not None
    assert temp_owner(".thesis.part") is None
    assert temp_owner(".tile_000_s0.x1y2z3.tif.part") is None
    assert temp_owner(".notes.pid12@box.draft.part") is None  # not mkstemp's 8 characters


def test_synthesis_removes_only_its_own_abandoned_temporaries(
    tmp_path: Path, live_pid: int
) -> None:
    """Row 3: a ``.thesis.part`` (or any file the writer did not name) in ``out`` stays."""
    paths = _temps(tmp_path / "out", "tile_000_s0", ".tif", live_pid)
    assert remove_stale_temps(tmp_path / "out") == [paths["dead"]]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        p.name for key, p in paths.items() if key != "dead"
    )


def test_a_killed_checkpoint_writers_temporary_is_removed_at_the_next_save(
    tmp_path: Path, live_pid: int
) -> None:
    """Row 11: ``.last.pid<N>@<host>.<random>.ckpt.part`` of a writer that is gone."""
    folder = tmp_path / "checkpoints"
    paths = _temps(folder, "last", ".ckpt", live_pid)
    AtomicCheckpointIO().save_checkpoint({"state": 1}, folder / "last.ckpt")
    assert not paths["dead"].exists()
    assert all(p.exists() for key, p in paths.items() if key != "dead")
    assert (folder / "last.ckpt").is_file()
    assert remove_abandoned(folder) == []


def _synthesize_cfg(toy_root: Path, tmp_path: Path, out: Path) -> DictConfig:
    overrides = [
        f"paths.root={tmp_path}",
        f"paths.output_dir={tmp_path / 'run'}",
        f"data.source.root={toy_root}",
        "data.source.tiles=4",
        "data.source.size=128",
        "ckpt=generator.ckpt",
        f"out={out}",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("synthesize", overrides=overrides)


@pytest.mark.parametrize("where", ["root", "parent", "itself's parent"])
def test_an_out_holding_the_data_folder_is_refused(
    toy_root: Path, tmp_path: Path, where: str
) -> None:
    """Row 4: ``out=/`` and ``out=`` a parent of the data folder, as ``out=<data>/masks``."""
    out = {"root": Path("/"), "parent": toy_root.parent, "itself's parent": toy_root.parents[1]}[
        where
    ]
    cfg = _synthesize_cfg(toy_root, tmp_path, out)
    with pytest.raises(ConfigError) as refused:
        check_outputs(cfg)
    assert str(refused.value).startswith(
        f"out={out} holds the input data folder data.source.root={toy_root}; "
    )
    assert "\n" not in str(refused.value)


def test_an_out_beside_the_data_folder_is_accepted(toy_root: Path, tmp_path: Path) -> None:
    check_outputs(_synthesize_cfg(toy_root, tmp_path, tmp_path / "tiles"))
