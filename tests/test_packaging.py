"""An installable Hydra app (issue 14): scripts run from any directory, wheels hold conf/."""

from __future__ import annotations

import os
import shutil
import sys
import tomllib
import zipfile
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from conftest import JOBS, REPO, run_ok

import synthsat

BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    env = dict(os.environ, SYNTHSAT_THREADS="1", HYDRA_FULL_ERROR="1")
    env.pop("PYTHONPATH", None)
    return env


def test_config_dir_is_the_repository_conf_in_a_checkout() -> None:
    assert Path(synthsat.config_dir()) == REPO / "conf"


def test_every_console_script_composes_its_config_from_another_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What each installed ``synthsat-*`` script calls, with ``--cfg job``, from tmp_path.

    The scripts call ``main`` of the module named in the entry point (not ``__main__``):
    with ``config_path="../conf"`` Hydra looked for ``pkg://synthsat/../conf`` and every
    one failed with ``Primary config module 'conf' not found``.
    """
    monkeypatch.chdir(tmp_path)
    scripts = {
        ep.name: ep
        for ep in entry_points(group="console_scripts")
        if ep.name.startswith("synthsat-")
    }
    assert sorted(scripts) == sorted(
        ["synthsat-toyworld"] + ["synthsat-" + job.replace("_", "-") for job in JOBS]
    )
    for job in JOBS:
        ep = scripts["synthsat-" + job.replace("_", "-")]
        assert ep.value == f"synthsat.{job}:main"
        monkeypatch.setattr(sys, "argv", [ep.name, "--cfg", "job", "seed=7"])
        ep.load()()
        out = capsys.readouterr().out
        assert f"task_name: {job}\n" in out, (job, out[-2000:])
        assert "\nseed: 7\n" in out, job
    monkeypatch.setattr(sys, "argv", ["synthsat-toyworld", "--help"])
    with pytest.raises(SystemExit) as exited:
        scripts["synthsat-toyworld"].load()()
    assert exited.value.code == 0
    assert list(tmp_path.iterdir()) == []  # --cfg writes no run directory


def test_console_script_runs_from_another_directory(tmp_path: Path) -> None:
    """The real script file, in a subprocess whose working directory is not the repo."""
    command = [str(BIN / "synthsat-train-segmentation"), "--cfg", "job", "mix.ratio=0.25"]
    proc = run_ok(command, timeout=120, cwd=tmp_path, env=_env())
    assert "task_name: train_segmentation\n" in proc.stdout
    assert "  ratio: 0.25\n" in proc.stdout


def test_packaged_groups_match_the_conf_folders() -> None:
    """pyproject lists every package folder and every conf/ group (a new one is not lost)."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"synthsat.conf": "conf"}
    code = {
        ".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "synthsat").rglob("__init__.py")
    }
    groups = {
        ".".join(("synthsat", *d.relative_to(REPO).parts))
        for d in [REPO / "conf", *(REPO / "conf").rglob("*")]
        if d.is_dir() and d.name != "__pycache__"
    }
    assert set(setuptools["packages"]) == code | groups
    assert setuptools["package-data"]["synthsat.conf"] == ["**/*.yaml"]


def test_wheel_ships_the_configs_and_finds_them(tmp_path: Path) -> None:
    """Build a wheel (from a copy of the sources, offline) and check what it holds.

    Then unpack it and ask the unpacked package where its configs are: inside it.
    """
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "synthsat", src / "synthsat", ignore=ignore)
    shutil.copytree(REPO / "conf", src / "conf", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    proc = run_ok(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
        + ["-q", "-w", str(tmp_path / "dist"), str(src)],
        timeout=300,
        env=_env(),
    )
    assert "absent from the `packages` configuration" not in proc.stderr
    (wheel,) = (tmp_path / "dist").glob("synthsat-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "site")
        scripts = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        entry_text = zf.read(scripts).decode()
    configs = {
        f"synthsat/conf/{p.relative_to(REPO / 'conf')}" for p in (REPO / "conf").rglob("*.yaml")
    }
    assert len(configs) >= 29
    assert configs <= names
    assert {n for n in names if n.startswith("synthsat/conf/")} == configs
    code = {
        f"synthsat/{p.relative_to(REPO / 'synthsat')}" for p in (REPO / "synthsat").rglob("*.py")
    }
    assert code <= names and "synthsat/py.typed" in names
    assert "synthsat-train-segmentation = synthsat.train_segmentation:main" in entry_text
    found = run_ok(
        [sys.executable, "-c", "import synthsat; print(synthsat.config_dir())"],
        timeout=60,
        cwd=tmp_path,
        env=dict(_env(), PYTHONPATH=str(tmp_path / "site")),
    )
    assert Path(found.stdout.strip()) == tmp_path / "site" / "synthsat" / "conf"
