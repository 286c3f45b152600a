"""Time the study's dry run: ``experiment=paper pipeline.dry_run=true`` (237 stages).

Prints the wall time of the whole command (Python start, Hydra composition of every
stage's config, the plan and its device hours); the target is < 90 s on 2 cores (it
took 2 min 29 s before stages of a kind shared one compose, issue 28 row 6). Run it on an
otherwise idle machine: it is a measurement, not a test.

Usage: python benchmarks/dry_run.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time

TARGET_S = 90.0


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        args = ["experiment=paper", "pipeline.dry_run=true", f"paths.root={tmp}"]
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "synthsat.pipeline", *args],
            capture_output=True,
            text=True,
            cwd=tmp,
        )
        seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(proc.stderr[-3000:])
    first = next(line for line in proc.stdout.splitlines() if line.startswith("[dry run]"))
    print(first)
    verdict = "meets" if seconds < TARGET_S else "MISSES"
    print(f"paper dry run: {seconds:.1f} s ({verdict} the target < {TARGET_S:.0f} s)")


if __name__ == "__main__":
    main()
