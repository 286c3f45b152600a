"""The shared data folder (``paths.shared_dir``, read by ``data=dubai``) from any directory:
``SYNTHSAT_SHARED`` moves it like ``SYNTHSAT_DATA`` moves ``paths.data_dir``, and a job
that does not find the data there says how to point it elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_shared_dir_follows_synthsat_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNTHSAT_SHARED", str(tmp_path / "shared"))
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train_segmentation", overrides=["data=dubai", f"paths.root={tmp_path}"])
    assert cfg.paths.shared_dir == str(tmp_path / "shared")
    assert cfg.data.source.root == str(tmp_path / "shared" / "dubai")
    monkeypatch.delenv("SYNTHSAT_SHARED")
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train_segmentation", overrides=["data=dubai", f"paths.root={tmp_path}"])
    assert cfg.data.source.root == f"{tmp_path}/../shared/data/dubai"  # the repo's layout


def test_missing_shared_data_names_the_env_variable_and_the_override(tmp_path: Path) -> None:
    """``data=dubai`` from a folder without ``../shared/data``: one line, exit 2, naming the
    missing data directory (not its split file), ``SYNTHSAT_SHARED`` and the override."""
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNTHSAT_", "HYDRA_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "synthsat.train_segmentation", "data=dubai", "logger=none"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = [s for s in proc.stderr.splitlines() if s.startswith("error: ")]
    shared = f"{work}/../shared/data"
    assert line == (
        f"error: {shared}/dubai: data directory does not exist (expected images/ and masks/ "
        f"under it, with matching stems); the shared data folder is paths.shared_dir={shared}"
        ": set SYNTHSAT_SHARED=DIR or pass paths.shared_dir=DIR (the folder holding the "
        "dataset's folder, e.g. dubai/)"
    )
