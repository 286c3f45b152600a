"""The report's PNG plots: mIoU against the mixing ratio, the paired Δ mIoU with
real-only, the learning curve (mIoU and Δ against the step budget) and the synthetic
imagery's fidelity and diversity against lambda_div."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

from synthsat.atomic import save_figure
from synthsat.report.arms import (
    BASELINE,
    CI_LEVEL,
    PAPER_REFERENCE,
    WITH_REAL,
    ArmKey,
    by_seed,
    mean_std,
    source_rank,
)
from synthsat.report.curve import VAL_KEY, arm_curves, paired_by_budget
from synthsat.report.stats import CI_METHOD, PairedComparison

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _source_colours(sources: Sequence[str]) -> dict[str, str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {s: cycle[i % len(cycle)] for i, s in enumerate(sources)}


def _arm_points(
    groups: dict[ArmKey, list[dict[str, Any]]], source: str, mode: str
) -> list[tuple[float, float, float, str]]:
    """(order, mean, std, short label) of one source's arms in one mode (``"add"`` or any
    other, i.e. replace), sorted: by ratio, in add mode then by copies."""
    points = []
    for (label, s), rows in groups.items():
        if s == source and (rows[0]["mode"] == "add") == (mode == "add"):
            x = float(rows[0]["ratio"]) + 0.01 * float(rows[0]["copies"] if mode == "add" else 0)
            short = label.replace("synthetic-only ", "").replace(" synthetic", "")
            points.append((x, *mean_std(list(by_seed(rows).values())), short))
    return sorted(points)


def plot_miou(
    results_dir: Path, groups: dict[ArmKey, list[dict[str, Any]]], mark_paper: bool
) -> None:
    """mIoU (mean ± std over seeds) against the mixing ratio: one line per source over the
    replace-mode arms (sources dodged a little sideways), add-mode arms as open diamonds in
    columns right of ratio 1, one per add setting, labelled at the bottom (``x2``,
    ``real + x2``),
    real-only as a grey band (mean ± std) with its point at ratio 0."""
    sources = sorted({s for _, s in groups if s}, key=source_rank)
    colours = _source_colours(sources)
    dodge = {s: 0.01 * (i - (len(sources) - 1) / 2) for i, s in enumerate(sources)}
    # one column right of ratio 1 per add-mode setting, shared by the sources
    add_slots = dict(sorted((p[0], p[3]) for s in sources for p in _arm_points(groups, s, "add")))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    base = [rows for (label, _), rows in groups.items() if label == BASELINE]
    if base:
        mean, std = mean_std(list(by_seed(base[0]).values()))
        ax.axhspan(mean - std, mean + std, color="grey", alpha=0.15, lw=0)
        ax.errorbar([0.0], [mean], yerr=[std], fmt="ks", capsize=3, label=BASELINE)
    for s in sources:
        kw = {"capsize": 3, "color": colours[s]}
        replace = _arm_points(groups, s, "replace")
        if replace:
            xs, means, stds = (np.array(v) for v in list(zip(*replace))[:3])
            ax.errorbar(xs + dodge[s], means, yerr=stds, marker="o", label=s, **kw)
        for order, mean, std, _ in _arm_points(groups, s, "add"):
            x = 1.08 + 0.06 * list(add_slots).index(order) + dodge[s]
            ax.errorbar([x], [mean], yerr=[std], fmt="D", mfc="none", **kw)
    text = {"transform": ax.get_xaxis_transform(), "rotation": 90, "va": "bottom", "fontsize": 7}
    for i, short in enumerate(add_slots.values()):  # each column's label, at the bottom
        ax.text(1.08 + 0.06 * i, 0.02, short, ha="center", **text)
    if any(rows[0]["mode"] == "add" for rows in groups.values()):
        ax.plot([], [], "kD", mfc="none", label="add mode (xk: k synthetic versions)")
    if mark_paper:
        ax.axhline(PAPER_REFERENCE["real-only"], ls="--", c="grey", lw=1)
        ax.plot([0.5], [PAPER_REFERENCE["50 % synthetic"]], "k*", ms=10, label="paper: 50 % mix")
        ax.text(0.01, PAPER_REFERENCE["real-only"], "paper: real-only", va="bottom", fontsize=8)
    ax.set_xlabel("share of synthetic training patches (mixing ratio)")
    ax.set_ylabel("test mIoU on real imagery")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="mean ± std over seeds", title_fontsize=8)
    fig.tight_layout()
    save_figure(fig, results_dir / "miou_vs_ratio.png", dpi=110)
    plt.close(fig)


def plot_paired_delta(results_dir: Path, comparisons: dict[ArmKey, PairedComparison]) -> None:
    """Per arm the mean paired Δ mIoU vs real-only with its bootstrap CI, a zero line."""
    keys = list(comparisons)
    colours = _source_colours(sorted({s for _, s in keys}, key=source_rank))
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.4 * len(keys)))
    for y, key in enumerate(reversed(keys)):
        c = comparisons[key]
        err = [[c.mean_diff - c.ci_low], [c.ci_high - c.mean_diff]]
        ax.errorbar([c.mean_diff], [y], xerr=err, fmt="o", capsize=3, color=colours[key[1]])
    ax.axvline(0.0, color="k", lw=1)
    ax.set_yticks(range(len(keys)), [f"{label} · {s}" for label, s in reversed(keys)])
    ax.tick_params(axis="y", labelsize=8)
    ax.set_xlabel(f"paired Δ mIoU vs real-only (same seed): mean, {CI_LEVEL:.0%} {CI_METHOD}")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    save_figure(fig, results_dir / "paired_delta.png", dpi=110)
    plt.close(fig)


def plot_curve(results_dir: Path, rows: list[dict[str, Any]]) -> None:
    """``learning_curve.png``: validation (the tested checkpoint's) and test mIoU against
    the step budget per arm (mean ± std over seeds), and each run's validation mIoU during
    training at the largest budget; ``delta_vs_steps.png``: the paired Δ mIoU of every arm
    with real-only against the budget (mean and 95 % paired t interval), test and
    validation."""
    val, test = arm_curves(rows, VAL_KEY), arm_curves(rows, "miou")
    arms = list(test | val)
    colours = {arm: f"C{i}" for i, arm in enumerate(arms)}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, curves, name in ((axes[0], val, "validation"), (axes[1], test, "test")):
        for arm in arms:
            budgets = sorted(curves.get(arm, {}))
            stats = [mean_std(list(curves[arm][b].values())) for b in budgets]
            if stats:
                means, stds = zip(*stats)
                label = " · ".join(p for p in arm if p)
                ax.errorbar(
                    budgets,
                    means,
                    yerr=stds,
                    marker="o",
                    capsize=3,
                    label=label,
                    color=colours[arm],
                )
        _budget_axis(ax, rows)
        ax.set_ylabel(f"{name} mIoU (best validation checkpoint)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, title="mean ± std over seeds", title_fontsize=8)
    top = max((int(r["steps"]) for r in rows if r.get("steps") is not None), default=None)
    for r in rows:
        if top is not None and r.get("steps") == top and r.get("val_curve"):
            steps, values = zip(*r["val_curve"])
            arm = next(a for a in arms if a[0] == r["label"] and a[1] == r["source"])
            axes[2].plot(steps, values, color=colours[arm], alpha=0.6, lw=1)
    axes[2].set_xlabel(f"training step (runs of the {top}-step budget, one line per seed)")
    axes[2].set_ylabel("validation mIoU during training")
    axes[2].grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, results_dir / "learning_curve.png", dpi=110)
    plt.close(fig)
    _plot_delta_curve(results_dir, rows, colours)


def _budget_axis(ax: Any, rows: list[dict[str, Any]]) -> None:
    """A log2 x axis ticked at the study's budgets."""
    budgets = sorted({int(r["steps"]) for r in rows if r.get("steps") is not None})
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.minorticks_off()
    ax.set_xlabel("segmentation steps (budget)")


def _plot_delta_curve(
    results_dir: Path, rows: list[dict[str, Any]], colours: dict[ArmKey, str]
) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for key, style in (("miou", "-"), (VAL_KEY, ":")):
        for arm, by_budget in paired_by_budget(rows, key).items():
            budgets = sorted(by_budget)
            c = [by_budget[b] for b in budgets]
            means = np.array([x.mean_diff for x in c])
            err = np.array([[x.mean_diff - x.ci_low, x.ci_high - x.mean_diff] for x in c]).T
            shift = 1.0 if key == "miou" else 1.04  # validation dodged a little sideways
            name = "test" if key == "miou" else "validation"
            ax.errorbar(
                np.array(budgets) * shift,
                means,
                yerr=np.nan_to_num(err),
                ls=style,
                marker="o",
                capsize=3,
                color=colours.get(arm, "C0"),
                label=f"{' · '.join(p for p in arm if p)} ({name})",
            )
    ax.axhline(0.0, color="k", lw=1)
    _budget_axis(ax, rows)
    ax.set_ylabel("paired Δ mIoU vs real-only")
    ax.set_title(f"mean and {CI_LEVEL:.0%} {CI_METHOD} over seeds", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, results_dir / "delta_vs_steps.png", dpi=110)
    plt.close(fig)


def plot_synthetic(results_dir: Path, synth: list[dict[str, Any]], keys: list[str]) -> None:
    """Each metric against lambda_div for the GAN's imagery; control generators' values as
    dotted horizontal lines."""
    keys = keys[:6]
    cols = min(3, len(keys))
    nrows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3 * nrows), squeeze=False)
    gan = sorted(
        (r for r in synth if not r["params"].get("generator")),
        key=lambda r: float(r["params"]["lambda_div"]),
    )
    controls = sorted(
        (r for r in synth if r["params"].get("generator")), key=lambda r: r["params"]["generator"]
    )
    lams = [float(r["params"]["lambda_div"]) for r in gan]
    for ax, key in zip(axes.ravel(), keys):
        ax.plot(lams, [_value(r["metrics"], key) for r in gan], marker="o")
        real = [_value(r["metrics"], f"{key}_real") for r in gan]
        labelled = False
        if key in WITH_REAL and not np.all(np.isnan(real)):
            ax.plot(lams, real, ls="--", c="grey", label="real imagery")
            labelled = True
        for i, r in enumerate(controls):
            value = _value(r["metrics"], key)
            if not np.isnan(value):
                ax.axhline(value, ls=":", c=f"C{i + 1}", label=r["params"]["generator"])
                labelled = True
        if labelled:
            ax.legend(fontsize=7)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("lambda_div")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(keys) :]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, results_dir / "fidelity_diversity.png", dpi=110)
    plt.close(fig)


def _value(metrics: dict[str, Any], key: str) -> float:
    """A metric as a float to plot; nan where missing or None."""
    value = metrics.get(key)
    return float("nan") if value is None else float(value)
