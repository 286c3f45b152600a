"""W&B's and matplotlib's own folders follow the run (its cache), not ``$HOME``, unless
the user set them (issue 25, row 14)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from synthsat.tracking import TOOL_DIRS, keep_tool_dirs

#: A job's use of the tools, as a tiny run makes it: a figure, an offline W&B run with
#: an artifact (staged by W&B), after ``prepare_run``'s :func:`keep_tool_dirs`.
JOB = """\
import sys
from pathlib import Path
from synthsat.tracking import keep_tool_dirs
cache, run_dir = Path(sys.argv[1]), Path(sys.argv[2])
keep_tool_dirs(cache)
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
plt.figure()
plt.text(0.5, 0.5, "synthsat")
plt.savefig(run_dir / "figure.png")
import wandb
run = wandb.init(project="synthsat-test", mode="offline", dir=str(run_dir))
run.log({"loss": 1.0})
artifact = wandb.Artifact("figure", type="image")
artifact.add_file(str(run_dir / "figure.png"))
run.log_artifact(artifact)
run.finish()
"""


def _clean_env(home: Path) -> dict[str, str]:
    """This environment with ``HOME`` at ``home`` and no tool or XDG folder set."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in TOOL_DIRS and not k.startswith("XDG_") and k != "WANDB_MODE"
    }
    return {**env, "HOME": str(home), "WANDB_SILENT": "true"}


def test_a_tiny_run_writes_nothing_under_home(tmp_path: Path) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    (work / "run").mkdir(parents=True)
    script = tmp_path / "job.py"
    script.write_text(JOB)
    cache = work / ".cache" / "synthsat"
    proc = subprocess.run(
        [sys.executable, str(script), str(cache), str(work / "run")],
        cwd=work,
        env=_clean_env(home),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []
    assert list((cache / "matplotlib").iterdir())  # the font cache, here
    assert list((work / "run").glob("wandb/offline-run-*"))


def test_the_users_own_settings_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in TOOL_DIRS:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mine"))
    chosen = keep_tool_dirs(tmp_path / "cache")
    assert os.environ["MPLCONFIGDIR"] == str(tmp_path / "mine")
    assert chosen == {
        "WANDB_DIR": str(tmp_path / "cache" / "wandb"),
        "WANDB_CACHE_DIR": str(tmp_path / "cache" / "wandb" / "cache"),
        "WANDB_DATA_DIR": str(tmp_path / "cache" / "wandb" / "data"),
    }
    assert all(os.environ[k] == v for k, v in chosen.items())


def test_the_readme_says_where_things_are_written() -> None:
    """README "Where things are written" names every folder a job writes and every
    variable that moves one, W&B's and matplotlib's included (:data:`TOOL_DIRS`)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("### Where things are written")
    section = readme[start : readme.index("\n#", start + 4)]
    for name in [*TOOL_DIRS, "SYNTHSAT_ROOT", "SYNTHSAT_DATA", "SYNTHSAT_SHARED", "SYNTHSAT_CACHE"]:
        assert f"`{name}`" in section, name
    for folder in ("outputs/<job>/<time>/", "results/<NAME>/", ".cache/synthsat/", "`data/`"):
        assert folder in section, folder
    assert "Nothing is written to `$HOME`" in section
