"""Entry points load torch and Lightning only once their job runs: Hydra composes (and
the config schemas check) the config first, so a bad value is reported within about a
second, not after the ~10 s those imports take on a small CPU."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import JOBS

PROBE = """\
import sys
import synthsat.{job}
print(sorted(m for m in ("torch", "lightning", "matplotlib") if m in sys.modules))
"""


@pytest.mark.parametrize("job", JOBS)
def test_importing_an_entry_point_loads_no_torch(job: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(job=job)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_a_bad_value_stops_the_job_before_torch_loads() -> None:
    """``mix.mode=replce`` fails in Hydra's compose, naming the key; the job never ran."""
    probe = (
        "import sys, runpy\n"
        "sys.argv = ['train_segmentation', 'mix.mode=replce']\n"
        "try:\n"
        "    runpy.run_module('synthsat.train_segmentation', run_name='__main__')\n"
        "except SystemExit as stop:\n"
        "    print('exit', stop.code, 'torch' in sys.modules, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert "Value 'replce' is not one of: replace, add" in proc.stderr
    assert "full_key: mix.mode" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "exit 1 False"
