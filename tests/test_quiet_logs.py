"""A job prints its own lines and real problems only (issue 28): not Lightning's litlogger /
litmodels tips, torch's LeafSpec FutureWarning raised inside Lightning, the generator's
"Found N module(s) in eval mode" (its EMA copy, on purpose) or W&B's "anonymous" warning
(Lightning passing anonymous=None)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import tiny_generator_overrides

QUIETED = ("💡 Tip", "LeafSpec", "module(s) in eval mode", "anonymous")


def test_a_generator_job_with_wandb_prints_none_of_the_known_lines(
    toy_root: Path, tmp_path: Path
) -> None:
    overrides = [
        o for o in tiny_generator_overrides(toy_root, tmp_path, "gen") if o != "logger=none"
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "synthsat.train_generator", *overrides, "logger=wandb",
         "trainer.max_steps=2", "callbacks.samples.every_n_steps=0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "GPU available" in output  # Lightning's own lines still print
    assert list((tmp_path / "gen" / "wandb").glob("offline-run-*"))  # the W&B run was made
    assert [q for q in QUIETED if q in output] == [], output[-3000:]
