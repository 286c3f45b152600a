"""Extend the committed Dubai learning curve with a later run's budgets.

Usage::

    python experiments/dubai_curve/extend.py --old experiments/dubai_curve/summary.csv \
        --new results/dubai_curve --out experiments/dubai_curve/steps5760

The committed curve (``--old``: its ``summary.csv``, the stage records of that run were
not kept) and a later ``make reproduce EXPERIMENT=dubai_curve`` run with more budgets
(``--new``: its results folder, e.g. ``pipeline.steps=[360,5760]``) become one curve.
Runs of the new folder that repeat a committed run (same arm, budget and seed) are not
added twice: they are the reproduction check, their mIoU next to the committed one. The
output folder gets ``summary.csv``, ``report.md`` (the curve table with paired t
intervals at every budget and the plateau rule, the reproduction table, every run) and
``learning_curve.png`` / ``delta_vs_steps.png``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

from synthsat.report import NOT_IN_CSV, load_stages, read_summary, runs_table
from synthsat.report.arms import summary_rows
from synthsat.report.curve import curve_table
from synthsat.report.plots import plot_curve


def run_key(row: dict[str, Any]) -> tuple[str, str, int, int]:
    """A run's identity across studies: arm (label, source), budget and seed."""
    return (row["label"], row["source"], int(row["steps"]), int(row["seed"]))


def combine(
    old: list[dict[str, Any]], new: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], dict[str, Any]]]]:
    """The committed rows plus the new rows of runs they lack; and the (committed, new)
    pairs of runs both made (the reproduction check)."""
    known = {run_key(r): r for r in old}
    repeats = [(known[run_key(r)], r) for r in new if run_key(r) in known]
    added = [r for r in new if run_key(r) not in known]
    return [*old, *added], repeats


#: The title of the section of repeated runs, unless ``--repeats-title`` says otherwise.
REPEATS_TITLE = "Reproduction: the new run's repeats of committed runs"


def reproduction_table(
    repeats: list[tuple[dict[str, Any], dict[str, Any]]], title: str = REPEATS_TITLE
) -> list[str]:
    lines = [
        f"## {title}",
        "",
        "| training imagery | source | steps | seed | test mIoU committed | test mIoU now "
        "| val mIoU committed | val mIoU now |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for before, now in repeats:
        label, source, steps, seed = run_key(now)
        lines.append(
            f"| {label} | {source or '—'} | {steps} | {seed} | {before['miou']:.4f} | "
            f"{now['miou']:.4f} | {before['val_miou']:.4f} | {now['val_miou']:.4f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="the committed summary.csv")
    parser.add_argument("--new", type=Path, required=True, help="a later run's results folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--repeats-title",
        default=REPEATS_TITLE,
        help="title of the section of new runs that repeat committed ones (e.g. when the "
        "new run changed a setting, such as the precision, and the repeats check it)",
    )
    args = parser.parse_args()
    old = read_summary(args.old)
    new = summary_rows([r for r in load_stages(args.new, "segmentation") if r["metrics"]])
    rows, repeats = combine(old, new)
    args.out.mkdir(parents=True, exist_ok=True)
    keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in NOT_IN_CSV]
    with open(args.out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    plot_curve(args.out, rows)
    lines = [
        f"# Results: dubai_curve, extended ({args.old} + {args.new})",
        "",
        *curve_table(rows),
        "",
        "![validation and test mIoU against steps](learning_curve.png)",
        "",
        "![paired Δ mIoU vs real-only against steps](delta_vs_steps.png)",
        "",
        *reproduction_table(repeats, args.repeats_title),
        "",
        *runs_table(rows),
    ]
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:20]))


if __name__ == "__main__":
    main()
