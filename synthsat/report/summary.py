"""Aggregate a study's runs into ``summary.csv``, ``report.md`` and PNG plots.

The pipeline leaves one ``done.json`` per finished stage (its parameters and output
paths); segmentation stages hold a ``metrics.json`` with the test scores on real
imagery, synthetic-metric stages a ``metrics.json`` with fidelity and diversity.

Runs are grouped into *arms* over seeds: an arm is a training imagery (``run_label``: the
mixing ratio, or the add mode's copies) with one synthetic *source* (``run_source``): the
GAN trained with a given ``lambda_div`` (``"lambda_div = 6"``; on new layouts of
``pipeline.layouts``: ``"lambda_div = 6, layouts = recombine"``) or a control generator named
in ``params["generator"]`` (e.g. ``"classtexture"``, whose ``lambda_div`` is None). The
real-only arm has no source and is the baseline: every arm is compared with it seed by seed
(:mod:`synthsat.report.stats`), since seed ``s`` of each arm shares its seed with real-only's.

``summary.csv`` has one row per segmentation run, with the columns ``lambda_div``,
``generator``, ``ratio``, ``mode``, ``copies``, ``seed``, ``label``, ``miou``,
``pixel_accuracy`` and ``iou/<class>`` per scored class. ``generator`` is ``"none"`` for
real-only runs (no synthetic imagery), ``"gan"`` for runs on the GAN's imagery (absent or
None ``params["generator"]``; ``lambda_div`` says which GAN) and the control generator's
name otherwise; a study with new-layout arms adds ``layouts`` (their method, empty for
the runs on the training layouts).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from synthsat.atomic import atomic_write, write_text
from synthsat.report.arms import (
    CI_LEVEL,
    PAPER_REFERENCE,
    group_arms,
    paired_comparisons,
    run_source,
    summary_rows,
)
from synthsat.report.curve import curve_table, plateau_budget, split_by_budget
from synthsat.report.tables import (
    generator_table,
    paired_table,
    per_class_table,
    runs_table,
    synthetic_table,
)

#: Row keys that summary.csv leaves out.
NOT_IN_CSV = ("source", "val_curve")


def load_stages(results_dir: Path, stage: str) -> list[dict[str, Any]]:
    """``done.json`` records of one stage, each with its ``metrics`` when present."""
    records = []
    for done in sorted((results_dir / stage).glob("*/done.json")):
        rec = json.loads(done.read_text())
        metrics = done.parent / "metrics.json"
        rec["metrics"] = json.loads(metrics.read_text()) if metrics.exists() else {}
        rec["dir"] = str(done.parent)
        records.append(rec)
    return records


def _write_csv(results_dir: Path, rows: list[dict[str, Any]]) -> None:
    """summary.csv; ``source`` stays out (``lambda_div`` and ``generator`` say it), and so
    does each run's ``val_curve`` (in its metrics.json)."""
    keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in NOT_IN_CSV]
    with atomic_write(results_dir / "summary.csv", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


#: summary.csv's columns that are not floats, by type (the rest: floats, "" for None).
_CSV_TYPES: dict[str, type] = {
    "generator": str,
    "layouts": str,
    "mode": str,
    "label": str,
    "scored": str,
    "copies": int,
    "seed": int,
    "scored_step": int,
    "steps": int,
}


def read_summary(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a study's ``summary.csv`` as :func:`~synthsat.report.arms.summary_rows`
    made them (typed; empty cells None; ``source`` from ``lambda_div`` and ``generator``;
    no ``val_curve``): a finished study's runs, e.g. committed from another machine, to
    report beside new ones."""
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row: dict[str, Any] = {}
            for key, text in raw.items():
                kind = _CSV_TYPES.get(key, float)
                row[key] = None if text == "" else kind(float(text) if kind is int else text)
            generator = row.get("generator")
            params = {
                **row,
                "generator": None if generator in (None, "none", "gan") else generator,
            }
            row["source"] = run_source(params)
            rows.append(row)
    return rows


def _timing_lines(timing: Path) -> list[str]:
    t = json.loads(timing.read_text())
    return [
        "",
        f"Wall time: {t.get('total_s', 0) / 60:.1f} min over "
        f"{max(1, len(t.get('runs', [])))} pipeline run(s) "
        f"(job time by stage, summed over jobs run side by side: "
        f"{', '.join(f'{k} {v / 60:.1f} min' for k, v in t.get('stages', {}).items())}).",
    ]


def _results_lines(results_dir: Path, rows: list[dict[str, Any]], mark_paper: bool) -> list[str]:
    """The mIoU tables and plots of the segmentation runs; with step budgets
    (``pipeline.steps``) the learning curve first, then the tables at each budget (the
    plots at the plateau budget, else at the largest)."""
    budgets = split_by_budget(rows)
    if list(budgets) == [None]:
        return _budget_lines(results_dir, rows, mark_paper, plots=True)
    from synthsat.report.plots import plot_curve  # matplotlib

    plot_curve(results_dir, rows)
    lines = [
        *curve_table(rows),
        "",
        "![validation and test mIoU against steps](learning_curve.png)",
        "",
        "![paired Δ mIoU vs real-only against steps](delta_vs_steps.png)",
    ]
    shown = plateau_budget(rows) or max(b for b in budgets if b is not None)
    for budget, budget_rows in budgets.items():
        lines += ["", f"## At {budget} steps" if budget is not None else "## Other runs", ""]
        lines += _budget_lines(results_dir, budget_rows, mark_paper, plots=budget == shown)
    return lines


def _budget_lines(
    results_dir: Path, rows: list[dict[str, Any]], mark_paper: bool, plots: bool
) -> list[str]:
    """The mIoU tables of runs at one budget, and (``plots``) their plots."""
    groups = group_arms(rows)
    comparisons = paired_comparisons(groups)
    lines = paired_table(groups, comparisons)
    if mark_paper:
        lines += [
            "",
            "Paper (Le et al. 2023, Chesapeake Maryland): real-only "
            f"{PAPER_REFERENCE['real-only']}, 50 % synthetic "
            f"{PAPER_REFERENCE['50 % synthetic']}.",
        ]
    iou_keys = [k for k in rows[0] if k.startswith("iou/")]
    if iou_keys:
        lines += ["", *per_class_table(groups, iou_keys)]
    if not plots:
        return lines
    from synthsat.report.plots import plot_miou, plot_paired_delta  # matplotlib

    plot_miou(results_dir, groups, mark_paper)
    lines += [
        "",
        "![mIoU against mixing ratio (mean ± std over seeds)](miou_vs_ratio.png)",
    ]
    if comparisons:
        plot_paired_delta(results_dir, comparisons)
        lines += [
            "",
            f"![paired Δ mIoU vs real-only (mean, {CI_LEVEL:.0%} CI)](paired_delta.png)",
        ]
    return lines


def summarise(results_dir: str | Path, mark_paper: bool = False) -> Path:
    """Write summary.csv, report.md and plots for the study in ``results_dir``.

    Args:
        results_dir: The study's results folder (``segmentation/``, ``synthetic_metrics/``,
            ``timing.json``, ``sample_grid.png``).
        mark_paper: Quote Le et al. 2023's mIoU in the report and the mIoU plot.

    Returns:
        The path of ``report.md``.
    """
    results_dir = Path(results_dir)
    seg = [r for r in load_stages(results_dir, "segmentation") if r["metrics"]]
    rows = summary_rows(seg)
    lines = [f"# Results: {results_dir.name}", ""]
    if rows:
        _write_csv(results_dir, rows)
        lines += _results_lines(results_dir, rows, mark_paper)
        lines += ["", *runs_table(rows)]
    generators = [r for r in load_stages(results_dir, "generator") if r["metrics"]]
    if generators:
        lines += ["", *generator_table(generators)]
    synth = [r for r in load_stages(results_dir, "synthetic_metrics") if r["metrics"]]
    if synth:
        lines += ["", *synthetic_table(results_dir, synth)]
    if (results_dir / "sample_grid.png").exists():
        lines += [
            "",
            "## Samples (mask | real | synthetic at each lambda_div)",
            "",
            "![samples](sample_grid.png)",
        ]
    if (results_dir / "timing.json").exists():
        lines += _timing_lines(results_dir / "timing.json")
    write_text(results_dir / "report.md", "\n".join(lines) + "\n")
    return results_dir / "report.md"
