"""A study's learning curve: every arm's scores against the segmentation step budget.

A study with ``pipeline.steps`` trains every arm at several step budgets
(``params["steps"]``). Each run records the best validation mIoU it reached
(``scored_val_miou``, the checkpoint its test scored), that test mIoU and its validation
curve, so the curve is drawn twice: on validation data, which chooses the budget, and on
the test tiles, which only report. The study's budget is the plateau
(:func:`plateau_budget`): the smallest budget at which doubling the steps raises no arm's
mean validation mIoU by :data:`PLATEAU_GAIN` or more.

The validation mIoU the rule compares is the run's *end-of-curve* level
(:func:`synthsat.report.arms.end_of_curve`, summary.csv's ``val_end``): the mean of its
validations in the last quarter of its steps. The best validation mIoU is a maximum
over noisy validations, and a run twice as long validates twice as often, so its best
rises with the budget even where the level it trains to does not. Runs without a
recorded curve (an older summary.csv) fall back to the best (``val_miou``) for the whole
study, and the report says which was used.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from synthsat.report.arms import BASELINE, ArmKey, by_seed, group_arms, mean_std
from synthsat.report.stats import CI_METHOD, PairedComparison, compare_paired

#: A doubling of the budget that raises an arm's mean validation mIoU by this much or
#: more means that arm has not converged.
PLATEAU_GAIN = 0.01
#: summary.csv's column of the best validation mIoU of a run (its tested checkpoint's).
VAL_KEY = "val_miou"
#: summary.csv's column of a run's end-of-curve validation mIoU
#: (:func:`~synthsat.report.arms.end_of_curve`).
VAL_END_KEY = "val_end"


def plateau_key(rows: list[dict[str, Any]]) -> str:
    """The validation column the plateau rule compares for ``rows`` (e.g. the runs of two
    budgets): ``val_end`` when every run with a budget has it, else ``val_miou``."""
    budgeted = [r for r in rows if r.get("steps") is not None]
    if budgeted and all(r.get(VAL_END_KEY) is not None for r in budgeted):
        return VAL_END_KEY
    return VAL_KEY


def split_by_budget(rows: list[dict[str, Any]]) -> dict[int | None, list[dict[str, Any]]]:
    """Summary rows by step budget (``steps``; None for runs of a study without budgets),
    budgets ascending."""
    out: dict[int | None, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        out[None if r.get("steps") is None else int(r["steps"])].append(r)
    return {b: out[b] for b in sorted(out, key=lambda b: -1 if b is None else b)}


def arm_curves(rows: list[dict[str, Any]], key: str) -> dict[ArmKey, dict[int, dict[int, float]]]:
    """``key`` of every arm by budget, then by seed (runs without a value left out)."""
    curves: dict[ArmKey, dict[int, dict[int, float]]] = defaultdict(dict)
    for budget, budget_rows in split_by_budget(rows).items():
        if budget is None:
            continue
        for arm, arm_rows in group_arms(budget_rows).items():
            values = [r for r in arm_rows if r.get(key) is not None]
            if values:
                curves[arm][budget] = by_seed(values, key)
    return dict(curves)


def plateau_budget(
    rows: list[dict[str, Any]], gain: float = PLATEAU_GAIN, key: str | None = None
) -> int | None:
    """The smallest budget ``b`` with a budget of at least ``2 b`` after it in the study
    such that, going to the next such budget, no arm's mean validation mIoU (over its
    seeds) rises by ``gain`` or more; None when no budget qualifies (not converged, or
    fewer than two budgets). Every arm must have runs at both budgets; where the two
    budgets ran different seeds, the rise is the mean over the seeds they share.

    The validation mIoU is ``key``, or by default, for each pair of budgets,
    :func:`plateau_key` of their runs: the end of the curve where every run of both
    budgets recorded its curve (a study joined from runs with and without curves still
    compares curve ends where it can), else the best."""
    budgets = sorted({int(r["steps"]) for r in rows if r.get("steps") is not None})
    for b in budgets:
        later = [n for n in budgets if n >= 2 * b]
        if not later:
            return None
        nxt = later[0]
        pair = [r for r in rows if r.get("steps") in (b, nxt)]
        curves = arm_curves(pair, key or plateau_key(pair))
        if all(b in c and nxt in c for c in curves.values()) and all(
            _rise(c[b], c[nxt]) < gain for c in curves.values()
        ):
            return b
    return None


def _rise(before: dict[int, float], after: dict[int, float]) -> float:
    """The mean rise from ``before`` to ``after`` (values by seed) over the seeds both
    have; over all their seeds (difference of means) when they share none."""
    common = sorted(set(before) & set(after))
    if common:
        rise = np.mean([after[s] - before[s] for s in common])
    else:
        rise = np.mean(list(after.values())) - np.mean(list(before.values()))
    return round(float(rise), 12)  # a rise of exactly `gain` counts, whatever the rounding


def paired_by_budget(
    rows: list[dict[str, Any]], key: str = "miou"
) -> dict[ArmKey, dict[int, PairedComparison]]:
    """Every arm's ``key`` against real-only's at the same budget, paired by seed."""
    curves = arm_curves(rows, key)
    base = next((c for (label, _), c in curves.items() if label == BASELINE), {})
    out: dict[ArmKey, dict[int, PairedComparison]] = defaultdict(dict)
    for arm, curve in curves.items():
        if arm[0] == BASELINE:
            continue
        for budget, seeds in curve.items():
            if set(seeds) & set(base.get(budget, {})):
                out[arm][budget] = compare_paired(seeds, base[budget])
    return dict(out)


def _cell(values: dict[int, float] | None) -> str:
    if not values:
        return "—"
    mean, std = mean_std(list(values.values()))
    return f"{mean:.4f} ± {std:.4f}" if len(values) > 1 else f"{mean:.4f}"


def _delta_cell(c: PairedComparison | None) -> str:
    if c is None:
        return "—"
    if np.isnan(c.ci_low):
        return f"{c.mean_diff:+.4f} (1 seed)"
    return f"{c.mean_diff:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}] {c.n_improved}/{c.n_paired}"


def curve_table(rows: list[dict[str, Any]]) -> list[str]:
    """The learning curve as markdown: per arm and budget the best validation mIoU and the
    test mIoU (mean ± std over seeds), the paired Δ with real-only on both, and the plateau
    budget with the rule that chose it."""
    key = plateau_key(rows)
    val, test = arm_curves(rows, VAL_KEY), arm_curves(rows, "miou")
    end = arm_curves(rows, VAL_END_KEY)
    dval, dtest = paired_by_budget(rows, key), paired_by_budget(rows, "miou")
    plateau = plateau_budget(rows)
    lines = [
        "## Learning curve (segmentation step budgets)",
        "",
        "Each run trains to its budget and tests its best checkpoint on validation mIoU. "
        "val best: that checkpoint's validation mIoU; val end: the mean validation mIoU "
        f"over the last quarter of the run's steps (its level, not a maximum over noisy "
        "validations); test mIoU: the best checkpoint's score on the test tiles (reported, "
        "never used to choose). Mean ± std over seeds; Δ: paired with real-only at the "
        f"same budget and seed, mean [{CI_METHOD}, 95 %] and seeds improved; Δ val is on "
        f"{'val end' if key == VAL_END_KEY else 'val best'}.",
        "",
        "| training imagery | source | steps | n | val best | val end | test mIoU | Δ val "
        "| Δ test |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in val | test:
        for budget in sorted(set(val.get(arm, {})) | set(test.get(arm, {}))):
            cells = [
                arm[0],
                arm[1] or "—",
                str(budget),
                str(len(test.get(arm, {}).get(budget, {}))),
                _cell(val.get(arm, {}).get(budget)),
                _cell(end.get(arm, {}).get(budget)),
                _cell(test.get(arm, {}).get(budget)),
                _delta_cell(dval.get(arm, {}).get(budget)),
                _delta_cell(dtest.get(arm, {}).get(budget)),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    which = (
        "val end"
        if key == VAL_END_KEY
        else "val end where both budgets' runs recorded their curve, else val best"
    )
    rule = (
        f"the smallest budget at which doubling the steps raises no arm's mean validation "
        f"mIoU ({which}) by {PLATEAU_GAIN} or more"
    )
    lines += ["", plateau_sentence(rule, plateau, rows)]
    return lines


def plateau_sentence(rule: str, plateau: int | None, rows: list[dict[str, Any]]) -> str:
    """What the plateau rule says of ``rows``: the budget, not reached, or, where no budget
    has a doubled one after it (e.g. a study at one cap), that the rule cannot judge it."""
    if plateau is not None:
        return f"Plateau ({rule}): **{plateau} steps**."
    budgets = sorted({int(r["steps"]) for r in rows if r.get("steps") is not None})
    if not any(n >= 2 * b for b in budgets for n in budgets):
        shown = ", ".join(str(b) for b in budgets)
        return (
            f"Plateau ({rule}): **not judged here**: no budget of this study ({shown}) has "
            "its double beside it. Whether the runs reached their plateau is for the early "
            "stopping and the cap to show (each run's stopped and best steps)."
        )
    return f"Plateau ({rule}): **not reached** within these budgets."
