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
(:mod:`synthsat.stats`), since seed ``s`` of each arm shares its seed with real-only's.

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

import numpy as np

from synthsat.atomic import atomic_write, write_text
from synthsat.report_arms import (
    BASELINE,
    CI_LEVEL,
    NOT_TABULATED,
    PAPER_REFERENCE,
    WITH_REAL,
    ArmKey,
    by_seed,
    group_arms,
    mean_std,
    paired_comparisons,
    run_generator,
    run_label,
    run_params,
    run_source,
    scored_iou,
    source_label,
    source_rank,
    summary_rows,
)
from synthsat.report_curve import curve_table, plateau_budget, split_by_budget
from synthsat.stats import CI_METHOD, MIN_BOOTSTRAP_N, N_BOOT, PairedComparison

__all__ = [
    "BASELINE",
    "CI_LEVEL",
    "NOT_TABULATED",
    "PAPER_REFERENCE",
    "WITH_REAL",
    "ArmKey",
    "by_seed",
    "group_arms",
    "load_stages",
    "paired_comparisons",
    "paired_table",
    "per_class_table",
    "run_generator",
    "run_label",
    "run_params",
    "run_source",
    "scored_iou",
    "source_label",
    "summarise",
    "summary_rows",
    "synthetic_table",
]


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
    """The rows of a study's ``summary.csv`` as :func:`~synthsat.report_arms.summary_rows`
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


def _source_cell(source: str) -> str:
    return source or "—"


def paired_table(
    groups: dict[ArmKey, list[dict[str, Any]]], comparisons: dict[ArmKey, PairedComparison]
) -> list[str]:
    """The main results table: per arm the mIoU mean ± std over seeds, the seed count, each
    seed's mIoU, and the paired difference with real-only (mean, paired t CI, improved)."""
    ci = f"{CI_LEVEL:.0%} CI of Δ"
    lines = [
        "Test mIoU on real imagery: mean ± std (sample std, ddof = 1) over seeds; n = number "
        "of seeds. Δ = the arm's mIoU minus real-only's on the same seed, averaged over the "
        f"seeds both have; {ci}: {CI_METHOD} of that mean (Student t with n - 1 degrees of "
        f"freedom; from {MIN_BOOTSTRAP_N} paired seeds on also the percentile bootstrap, "
        f"{N_BOOT} resamples, seed 0); improved: seeds with Δ > 0 out of those paired. "
        "Source: the GAN's lambda_div or the control generator.",
        "",
        f"| training imagery | source | mIoU | n | mIoU per seed | Δ vs real-only | {ci} "
        "| improved |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, rows in groups.items():
        seeds = by_seed(rows)
        mean, std = mean_std(list(seeds.values()))
        spread = f" ± {std:.4f}" if len(seeds) > 1 else ""  # one seed: no spread to report
        per_seed = ", ".join(f"s{s}: {v:.4f}" for s, v in sorted(seeds.items()))
        cells = [key[0], _source_cell(key[1]), f"{mean:.4f}{spread}", str(len(seeds)), per_seed]
        lines.append("| " + " | ".join(cells + _paired_cells(comparisons.get(key))) + " |")
    return lines


def _paired_cells(c: PairedComparison | None) -> list[str]:
    """Δ, its CI and improved k/n; dashes for real-only and arms without paired seeds."""
    if c is None:
        return ["—", "—", "—"]
    ci = "— (1 seed)" if np.isnan(c.ci_low) else f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}]"
    if c.boot_low is not None and c.boot_high is not None:
        ci += f"; bootstrap [{c.boot_low:+.4f}, {c.boot_high:+.4f}]"
    return [f"{c.mean_diff:+.4f}", ci, f"{c.n_improved}/{c.n_paired}"]


def per_class_table(groups: dict[ArmKey, list[dict[str, Any]]], iou_keys: list[str]) -> list[str]:
    """Per-class IoU of each arm, the mean over its seeds (``nan`` where a class had nothing
    to score)."""
    lines = [
        "## Per-class IoU (mean over seeds)",
        "",
        "| training imagery | source | " + " | ".join(k[4:] for k in iou_keys) + " |",
        "|---|---|" + "---|" * len(iou_keys),
    ]
    for (label, source), rows in groups.items():
        # a class with nothing to score (no test pixels, never predicted) has IoU null
        vals = [np.mean([np.nan if r.get(k) is None else r[k] for r in rows]) for k in iou_keys]
        cells = [label, _source_cell(source)] + [f"{v:.3f}" for v in vals]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _synth_order(rec: dict[str, Any]) -> tuple[int, float, str]:
    return source_rank(source_label(rec["params"]))


def synthetic_table(results_dir: Path, synth: list[dict[str, Any]]) -> list[str]:
    """Fidelity and diversity of each source's synthetic imagery, and its plot."""
    numeric = {k for r in synth for k, v in r["metrics"].items() if isinstance(v, int | float)}
    paired = [k for k in WITH_REAL if k in numeric]
    hidden = {*NOT_TABULATED, *WITH_REAL, *(f"{k}_real" for k in WITH_REAL)}
    metric_keys = sorted(numeric - hidden) + paired
    lines = [
        "## Fidelity and diversity of the synthetic imagery per source",
        "",
        "| source | " + " | ".join(metric_keys) + " |",
        "|---|" + "---|" * len(metric_keys),
    ]
    for r in sorted(synth, key=_synth_order):
        cells = [_metric_cell(r["metrics"], k, k in paired) for k in metric_keys]
        lines.append(f"| {source_label(r['params'])} | " + " | ".join(cells) + " |")
    if paired:
        lines += [
            "",
            "seam_ratio: gradient across chip edges over that elsewhere (1: seamless); "
            "acf_peak: autocorrelation of the high-passed image at the chip step above "
            "nearby shifts (0: no repetition); in brackets the real tiles' values on the "
            "same chip grid.",
        ]
    from synthsat.report_plots import plot_synthetic  # matplotlib: loaded when plotting

    plot_synthetic(results_dir, synth, metric_keys)
    return lines + ["", "![fidelity and diversity](fidelity_diversity.png)"]


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
    from synthsat.report_plots import plot_curve  # matplotlib

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
    from synthsat.report_plots import plot_miou, plot_paired_delta  # matplotlib

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


def generator_table(generators: list[dict[str, Any]]) -> list[str]:
    """One line per trained generator: its lambda_div, the steps it trained for against
    its budget (``trainer.max_steps``) and its fit time, so a reader sees that every
    lambda had the same number of steps."""
    lines = [
        "## Generators",
        "",
        "| lambda_div | steps | budget | fit time (min) |",
        "|---|---|---|---|",
    ]
    for rec in sorted(generators, key=lambda r: float(r["metrics"].get("lambda_div") or 0)):
        m = rec["metrics"]
        budget = m.get("max_steps")
        fit = m.get("fit_time_s")
        lines.append(
            f"| {float(m.get('lambda_div') or 0):g} | {m.get('steps')} | "
            f"{'—' if budget is None or budget < 0 else budget} | "
            f"{'—' if fit is None else f'{fit / 60:.1f}'} |"
        )
    return lines


def runs_table(rows: list[dict[str, Any]]) -> list[str]:
    """One line per segmentation run: which weights its numbers come from (the
    checkpoint scored, ``best`` on validation or ``last``, and its step), its validation
    mIoU there and its test mIoU; by budget, arm and seed."""
    lines = [
        "## Runs (the weights each number comes from)",
        "",
        "| training imagery | source | steps | seed | scored | at step | val mIoU | test mIoU |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cell(value: Any) -> str:
        return "—" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)

    for budget, budget_rows in split_by_budget(rows).items():
        for (label, source), arm_rows in group_arms(budget_rows).items():
            for r in sorted(arm_rows, key=lambda r: r["seed"]):
                cells = [label, _source_cell(source), cell(budget), cell(r["seed"])]
                cells += [cell(r.get(k)) for k in ("scored", "scored_step", "val_miou", "miou")]
                lines.append("| " + " | ".join(cells) + " |")
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


def _metric_cell(metrics: dict[str, Any], key: str, with_real: bool) -> str:
    """A table cell: the value (``—`` if missing), with ``(real <key>_real)`` if asked."""
    value = metrics.get(key)
    cell = "—" if value is None else f"{value:.4g}"
    real = metrics.get(f"{key}_real") if with_real else None
    return cell if real is None else f"{cell} (real {real:.4g})"
