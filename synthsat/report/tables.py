"""The report's Markdown tables: the paired results table (each arm against real-only), the
per-class IoU, the synthetic imagery's fidelity and diversity, the generators and the runs
(:func:`synthsat.report.summary.summarise` puts them into ``report.md``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from synthsat.report.arms import (
    CI_LEVEL,
    NOT_TABULATED,
    WITH_REAL,
    ArmKey,
    by_seed,
    group_arms,
    mean_std,
    source_label,
    source_rank,
)
from synthsat.report.curve import split_by_budget
from synthsat.report.stats import CI_METHOD, MIN_BOOTSTRAP_N, N_BOOT, PairedComparison


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
    from synthsat.report.plots import plot_synthetic  # matplotlib: loaded when plotting

    plot_synthetic(results_dir, synth, metric_keys)
    return lines + ["", "![fidelity and diversity](fidelity_diversity.png)"]


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


def _metric_cell(metrics: dict[str, Any], key: str, with_real: bool) -> str:
    """A table cell: the value (``—`` if missing), with ``(real <key>_real)`` if asked."""
    value = metrics.get(key)
    cell = "—" if value is None else f"{value:.4g}"
    real = metrics.get(f"{key}_real") if with_real else None
    return cell if real is None else f"{cell} (real {real:.4g})"
