"""The headline comparison over folds of tile groups (issue 24, deliverable 6).

Each fold is a study of its own (``make reproduce EXPERIMENT=dubai_folds*``: its own test
group, validation group and generator) with a ``summary.csv``. Within a fold every arm is
compared with real-only seed by seed (:func:`~synthsat.report.stats.compare_paired`, the paired
t interval over seeds). Across folds the unit of replication is the fold (a scene): the
across-fold mean is the mean of the folds' mean paired differences, and its interval the
t interval over those fold means (``F - 1`` degrees of freedom; wide with 3 folds, on
purpose: a claim about new scenes rests on the number of scenes). The paired t interval
over all fold × seed pairs is given beside it, named as what it is: an interval for
these folds' scenes, not for new ones.

Usage::

    python -m synthsat.report_folds \\
        --fold "test 8=experiments/dubai_curve/steps11520/summary.csv" \\
        --fold "test 4=results/dubai_folds_test4/summary.csv" --steps 11520 \\
        --out experiments/dubai_folds
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthsat.atomic import atomic_write, save_figure, write_text
from synthsat.report.arms import BASELINE, CI_LEVEL, ArmKey, by_seed, group_arms
from synthsat.report.stats import PairedComparison, compare_paired, t_interval
from synthsat.report.summary import read_summary

#: Scores compared: test mIoU (``miou``) and the scored checkpoint's validation mIoU.
METRICS = {"test": "miou", "val": "val_miou"}


@dataclass(frozen=True)
class AcrossFolds:
    """One arm's paired differences from real-only over folds.

    Attributes:
        folds: the fold names, in order.
        fold_means: the mean paired difference of each fold.
        mean: the mean of :attr:`fold_means`.
        low: lower bound of the t interval over the fold means (nan with one fold).
        high: its upper bound.
        folds_improved: folds whose mean difference is above 0.
        pairs: every (fold, seed) paired difference.
        pooled_low: lower bound of the paired t interval over all :attr:`pairs`.
        pooled_high: its upper bound.
        pairs_improved: pairs above 0.
    """

    folds: tuple[str, ...]
    fold_means: tuple[float, ...]
    mean: float
    low: float
    high: float
    folds_improved: int
    pairs: tuple[float, ...]
    pooled_low: float
    pooled_high: float
    pairs_improved: int


def fold_rows(rows: Sequence[dict[str, Any]], steps: int | None) -> list[dict[str, Any]]:
    """The rows of one fold at the step budget ``steps`` (None: every row).

    Raises:
        ValueError: no row at that budget.
    """
    kept = [r for r in rows if steps is None or r.get("steps") == steps]
    if not kept:
        budgets = sorted({r.get("steps") for r in rows}, key=lambda b: (b is None, b or 0))
        raise ValueError(f"no run at steps={steps} (the fold's budgets: {budgets})")
    return kept


def _baseline(groups: Mapping[ArmKey, list[dict[str, Any]]], base: ArmKey | None) -> Any:
    """The runs of the arm compared against: ``base``, or real-only where it is None."""
    if base is not None:
        return groups.get(base)
    return next((g for (label, _), g in groups.items() if label == BASELINE), None)


def fold_comparisons(
    rows: Sequence[dict[str, Any]], key: str, base: ArmKey | None = None
) -> dict[ArmKey, PairedComparison]:
    """Every other arm against ``base`` (None: real-only) on score ``key``, paired by
    seed (real-only is never compared against; arms without a seed in common, or a fold
    without the base's runs: left out)."""
    groups = group_arms(list(rows))
    base_runs = _baseline(groups, base)
    if base_runs is None:
        return {}
    baseline = by_seed(base_runs, key)
    out = {}
    for arm, group in groups.items():
        scores = by_seed(group, key)
        if arm[0] != BASELINE and arm != base and set(scores) & set(baseline):
            out[arm] = compare_paired(scores, baseline, CI_LEVEL)
    return out


def across_folds(
    per_fold: Mapping[str, Mapping[int, float]], level: float = CI_LEVEL
) -> AcrossFolds:
    """Summarise one arm's paired differences (by seed) of each fold (see the module).

    Raises:
        ValueError: no fold, or a fold without a difference.
    """
    if not per_fold or any(not d for d in per_fold.values()):
        raise ValueError("across_folds needs at least one fold, each with a paired seed")
    names = tuple(per_fold)
    means = tuple(float(np.mean(list(per_fold[f].values()))) for f in names)
    pairs = tuple(float(v) for f in names for v in per_fold[f].values())
    low, high = t_interval(means, level)
    pooled = t_interval(pairs, level)
    return AcrossFolds(
        folds=names,
        fold_means=means,
        mean=float(np.mean(means)),
        low=low,
        high=high,
        folds_improved=sum(m > 0 for m in means),
        pairs=pairs,
        pooled_low=pooled[0],
        pooled_high=pooled[1],
        pairs_improved=sum(p > 0 for p in pairs),
    )


def paired_by_fold(
    folds: Mapping[str, Sequence[dict[str, Any]]],
    arm: ArmKey,
    key: str,
    base: ArmKey | None = None,
) -> dict[str, dict[int, float]]:
    """``arm``'s paired differences from ``base`` (None: real-only) on ``key``, by seed,
    in each fold that ran both (folds without either left out)."""
    out = {}
    for name, rows in folds.items():
        groups = group_arms(list(rows))
        base_runs = _baseline(groups, base)
        if base_runs is None or arm not in groups:
            continue
        baseline, scores = by_seed(base_runs, key), by_seed(groups[arm], key)
        common = sorted(set(scores) & set(baseline))
        if common:
            out[name] = {s: scores[s] - baseline[s] for s in common}
    return out


def _f(x: float) -> str:
    return "n/a" if np.isnan(x) else f"{x:+.3f}"


def _arm_name(arm: ArmKey) -> str:
    return f"{arm[0]}, {arm[1]}" if arm[1] else arm[0]


def _comparison_rows(
    folds: Mapping[str, Sequence[dict[str, Any]]], arm: ArmKey, base: ArmKey | None
) -> tuple[list[str], list[dict]]:
    """The table lines and CSV rows of ``arm`` against ``base`` (None: real-only), each
    metric in each fold, then across folds."""
    name = _arm_name(arm) if base is None else f"{_arm_name(arm)} − {_arm_name(base)}"
    lines: list[str] = []
    csv_rows: list[dict] = []
    for metric, key in METRICS.items():
        for fold, rows in folds.items():
            c = fold_comparisons(rows, key, base).get(arm)
            if c is None:
                continue
            lines.append(
                f"| {name} | {metric} | {fold} | {c.n_paired} | "
                f"{c.mean:.3f} ± {c.std:.3f} | {_f(c.mean_diff)} "
                f"[{_f(c.ci_low)}, {_f(c.ci_high)}] | {c.n_improved}/{c.n_paired} |"
            )
            csv_rows.append({
                "arm": name, "metric": metric, "fold": fold, "n": c.n_paired,
                "mean_diff": c.mean_diff, "low": c.ci_low, "high": c.ci_high,
                "improved": c.n_improved, "interval": "paired t over seeds",
            })  # fmt: skip
        diffs = paired_by_fold(folds, arm, key, base)
        if not diffs:
            continue
        a = across_folds(diffs)
        lines.append(
            f"| {name} | {metric} | **all {len(a.folds)} folds** | "
            f"{len(a.pairs)} | | **{_f(a.mean)}** [{_f(a.low)}, {_f(a.high)}] over folds; "
            f"[{_f(a.pooled_low)}, {_f(a.pooled_high)}] over pairs | "
            f"{a.folds_improved}/{len(a.folds)} folds, {a.pairs_improved}/{len(a.pairs)} |"
        )
        csv_rows.append({
            "arm": name, "metric": metric, "fold": "all", "n": len(a.pairs),
            "mean_diff": a.mean, "low": a.low, "high": a.high,
            "improved": a.folds_improved, "interval": "t over fold means",
        })  # fmt: skip
    return lines, csv_rows


_HEADER = [
    "| arm | metric | fold | n | arm mean ± std | Δ [95 % CI] | improved |",
    "|---|---|---|---|---|---|---|",
]


def folds_report(folds: Mapping[str, Sequence[dict[str, Any]]]) -> tuple[list[str], list[dict]]:
    """The markdown lines of the fold report and its CSV rows: every arm against
    real-only, then every pair of the other arms (the earlier arm minus the later, e.g.
    the GAN minus a control), each in each fold and across folds."""
    lines = ["# The headline comparison over folds", ""]
    lines += [
        f"Paired differences from real-only (arm minus real-only, same seed). Within a fold: "
        f"the paired t interval over seeds ({int(CI_LEVEL * 100)} %). Across folds: the "
        "mean of the fold means and the t interval over the fold means (F - 1 degrees "
        "of freedom; the fold is the unit of replication), then the paired t interval over "
        "all fold × seed pairs (these scenes only).",
        "",
        *_HEADER,
    ]
    csv_rows: list[dict] = []
    arms = [a for rows in folds.values() for a in group_arms(list(rows)) if a[0] != BASELINE]
    arms = list(dict.fromkeys(arms))
    for arm in arms:
        more, rows = _comparison_rows(folds, arm, None)
        lines += more
        csv_rows += rows
    pairs = [(a, b) for i, a in enumerate(arms) for b in arms[i + 1 :]]
    if pairs:
        lines += [
            "",
            "## Arm against arm",
            "",
            "The same intervals for one arm minus another (same fold, same seed; the "
            "arm mean is the first arm's).",
            "",
            *_HEADER,
        ]
    for arm, base in pairs:
        more, rows = _comparison_rows(folds, arm, base)
        lines += more
        csv_rows += rows
    return lines, csv_rows


def forest_plot(folds: Mapping[str, Sequence[dict[str, Any]]], path: Path) -> None:
    """Δ test mIoU (arm minus real-only) of each arm in each fold and across folds, with
    their intervals, one row each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries: list[tuple[str, float, float, float]] = []
    arms = [a for rows in folds.values() for a in group_arms(list(rows)) if a[0] != BASELINE]
    for arm in dict.fromkeys(arms):
        for name, rows in folds.items():
            c = fold_comparisons(rows, "miou").get(arm)
            if c is not None:
                entries.append((f"{_arm_name(arm)} | {name}", c.mean_diff, c.ci_low, c.ci_high))
        diffs = paired_by_fold(folds, arm, "miou")
        if diffs:
            a = across_folds(diffs)
            entries.append((f"{_arm_name(arm)} | all folds", a.mean, a.low, a.high))
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(entries) + 1.2))
    for i, (_, mean, low, high) in enumerate(entries):
        y = len(entries) - 1 - i
        if not (np.isnan(low) or np.isnan(high)):
            ax.plot([low, high], [y, y], color="k", lw=1.5)
        ax.plot([mean], [y], "o", color="C0")
    ax.axvline(0.0, color="grey", ls="--", lw=1)
    ax.set_yticks(range(len(entries)), [e[0] for e in reversed(entries)])
    ax.set_xlabel("Δ test mIoU vs real-only (95 % interval)")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def parse_fold(text: str) -> tuple[str, Path]:
    """``NAME=PATH`` of ``--fold``.

    Raises:
        argparse.ArgumentTypeError: no ``=`` or an empty name.
    """
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path:
        raise argparse.ArgumentTypeError(f"--fold {text!r}: expected NAME=PATH/summary.csv")
    return name.strip(), Path(path)


def main(argv: Sequence[str] | None = None) -> Path:
    """Write ``folds.md``, ``folds.csv`` and ``folds_delta.png`` under ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fold", type=parse_fold, action="append", required=True)
    parser.add_argument("--steps", type=int, default=None, help="the step budget compared")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    folds: dict[str, list[dict[str, Any]]] = {}
    for name, path in args.fold:
        if not path.is_file():
            parser.error(f"--fold {name}={path}: no such summary.csv")
        folds[name] = fold_rows(read_summary(path), args.steps)
    lines, rows = folds_report(folds)
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "folds.md", "\n".join(lines) + "\n")
    with atomic_write(args.out / "folds.csv", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["arm"])
        writer.writeheader()
        writer.writerows(rows)
    forest_plot(folds, args.out / "folds_delta.png")
    print(f"wrote {args.out / 'folds.md'}")
    return args.out


if __name__ == "__main__":
    main()
