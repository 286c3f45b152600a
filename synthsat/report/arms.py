"""A study's segmentation runs as summary rows, grouped into arms and paired with real-only.

An arm is a training imagery (:func:`run_label`) with one synthetic source
(:func:`run_source`); the real-only arm is the baseline every other arm is compared with,
seed by seed (:func:`paired_comparisons`). :mod:`synthsat.report` writes the tables and
:mod:`synthsat.report.plots` the plots from these rows and arms.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from synthsat.report.stats import N_BOOT, PairedComparison, compare_paired

#: Le et al. 2023, Chesapeake Maryland test mIoU: real-only and the 50 % synthetic mix.
PAPER_REFERENCE = {"real-only": 0.5235, "50 % synthetic": 0.5834}
#: Synthetic-imagery metrics shown with the real imagery's value (``<key>_real``) beside them,
#: in the last columns of the fidelity / diversity table.
WITH_REAL = ("seam_ratio", "acf_peak")
#: Synthetic-imagery metrics left out of the table (still in each ``metrics.json``).
NOT_TABULATED = ("acf_step", "acf_step_real")
#: Label of the baseline arm, which every other arm is paired with.
BASELINE = "real-only"
#: Coverage of the bootstrap confidence interval of the paired difference.
CI_LEVEL = 0.95

#: An arm: (training imagery label, source); real-only's source is "".
ArmKey = tuple[str, str]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for one value)."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def run_label(params: dict[str, Any]) -> str:
    """Human-readable name of a segmentation run's training imagery.

    Replace mode: ``real-only`` (ratio 0), ``<r>% synthetic``, ``synthetic-only`` (ratio 1).
    Add mode with ``k`` synthetic copies: ``synthetic-only xk`` (ratio 1), ``real + xk
    synthetic`` (ratio 0) or ``<1 - r>% real + xk synthetic``.
    """
    r = float(params["ratio"])
    if params.get("mode") == "add":
        k = params["copies"]
        if r == 1:
            return f"synthetic-only x{k}"
        return f"real + x{k} synthetic" if r == 0 else f"{1 - r:.0%} real + x{k} synthetic"
    return "real-only" if r == 0 else ("synthetic-only" if r == 1 else f"{r:.0%} synthetic")


#: How :func:`source_label` names the new layouts a source's imagery was rendered on.
LAYOUTS_LABEL = ", layouts = "


def source_label(params: dict[str, Any]) -> str:
    """The synthetic imagery's source named by a stage's parameters: the control generator
    (``params["generator"]``) or else the GAN, as ``"lambda_div = <x>"``; the GAN's imagery
    of new layouts (``params["layouts"]``, their method) as ``"lambda_div = <x>, layouts =
    <method>"``."""
    if params.get("generator"):
        return str(params["generator"])
    lam = params.get("lambda_div")
    name = "gan" if lam is None else f"lambda_div = {float(lam):g}"
    return f"{name}{LAYOUTS_LABEL}{params['layouts']}" if params.get("layouts") else name


def run_source(params: dict[str, Any]) -> str:
    """Source of a segmentation run's synthetic imagery (:func:`source_name`); ``""`` for a
    real-only run, which uses none."""
    return "" if run_label(params) == BASELINE else source_label(params)


def run_generator(params: dict[str, Any]) -> str:
    """The ``generator`` column of summary.csv: ``"none"`` for real-only, the control
    generator's name, or ``"gan"``."""
    if run_label(params) == BASELINE:
        return "none"
    return str(params.get("generator") or "gan")


def scored_iou(metrics: dict[str, Any]) -> dict[str, float]:
    """Per-class IoU of the classes that count towards mIoU, from a segmentation
    ``metrics.json`` (``iou`` by class name, ``classes``, ``scored_classes`` indices)."""
    iou = metrics.get("iou") or {}
    classes, scored = metrics.get("classes"), metrics.get("scored_classes")
    if classes is None or scored is None:
        return dict(iou)
    names = [classes[i] for i in scored]
    return {name: iou[name] for name in names if name in iou}


def run_params(rec: dict[str, Any]) -> dict[str, Any]:
    """A segmentation record's parameters, with its synthetic source (control generator or
    the GAN's ``lambda_div``) as the synthetic tiles' manifest records it.

    Raises:
        ValueError: if the stage's record and the tiles' manifest name different sources.
    """
    params = dict(rec["params"])
    source = (rec.get("metrics") or {}).get("synthetic_source") or {}
    if source.get("generator") is None:  # real-only, or tiles without a manifest
        return params
    generator = None if source["generator"] == "gan" else str(source["generator"])
    lam = None if generator else source.get("lambda_div")  # None: the manifest does not say
    recorded = params.get("lambda_div")
    if (params.get("generator") or None) != generator or (
        lam is not None and recorded is not None and float(lam) != float(recorded)
    ):
        raise ValueError(
            f"{rec.get('dir', 'a segmentation stage')}: its record names the synthetic source "
            f"{source_label(params)!r}, but the tiles' manifest says "
            f"{source_label({'generator': generator, 'lambda_div': lam})!r}"
        )
    if generator:
        params.update(generator=generator, lambda_div=None)
    else:  # the manifest's lambda (0.0 too), else the record's
        params.update(generator=None, lambda_div=lam if lam is not None else recorded)
    return params


#: The end of a run's curve: its validations after this fraction of its last step.
TAIL_FROM = 0.75


def end_of_curve(curve: list[list[float]] | list[tuple[int, float]] | None) -> float | None:
    """The mean validation mIoU of a run over the last quarter of its steps: the
    validations at steps above :data:`TAIL_FROM` times its last validated step (the step
    it stopped at, under early stopping); None without a curve."""
    if not curve:
        return None
    last = max(int(s) for s, _ in curve)
    tail = [float(v) for s, v in curve if int(s) > TAIL_FROM * last] or [
        float(v) for s, v in curve if int(s) == last
    ]
    return float(np.mean(tail))


def summary_rows(seg: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One summary.csv row per segmentation record that has metrics (the source of its
    synthetic imagery read from the tiles' manifest, see :func:`run_params`)."""
    rows = []
    for rec in seg:
        p, m = run_params(rec), rec["metrics"]
        row = {
            "lambda_div": p.get("lambda_div"),
            "generator": run_generator(p),
            "ratio": p["ratio"],
            "mode": p["mode"],
            "copies": p.get("copies", 0),
            "seed": p["seed"],
            "label": run_label(p),
            "source": run_source(p),
            **({"layouts": str(p["layouts"])} if p.get("layouts") else {}),
            "miou": m["miou"],
            "pixel_accuracy": m.get("pixel_accuracy"),
            "val_miou": m.get("scored_val_miou"),  # the tested checkpoint's
            "scored": m.get("scored"),  # best (on validation) or last
            "scored_step": m.get("scored_step"),
        }
        if p.get("steps") is not None:  # a learning curve's step budget
            row["steps"] = int(p["steps"])
        row["val_end"] = end_of_curve(m.get("val_curve"))  # the curve's level at its end
        row["val_curve"] = m.get("val_curve")  # plotted, not a summary.csv column
        for name, iou in scored_iou(m).items():
            row[f"iou/{name}"] = iou
        rows.append(row)
    return rows


def source_rank(source: str) -> tuple[int, float, str]:
    """Real-only first, then the GAN by lambda_div (on the training layouts before new
    layouts, by method), then control generators by name."""
    if not source:
        return (0, 0.0, "")
    if source.startswith("lambda_div = "):
        lam, _, layouts = source.removeprefix("lambda_div = ").partition(LAYOUTS_LABEL)
        return (1, float(lam), layouts)
    return (2, 0.0, source)


def group_arms(rows: list[dict[str, Any]]) -> dict[ArmKey, list[dict[str, Any]]]:
    """Rows grouped by arm (label, source), in table order: replace mode by ratio before
    add mode by copies, sources as in :func:`source_rank`."""
    groups: dict[ArmKey, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["label"], r["source"])].append(r)

    def order(key: ArmKey) -> tuple[Any, ...]:
        first = groups[key][0]
        mode_rank = 1.0 if first["mode"] == "add" else 0.0
        return (mode_rank, float(first["ratio"]) + 0.01 * first["copies"], source_rank(key[1]))

    return {key: groups[key] for key in sorted(groups, key=order)}


def by_seed(rows: list[dict[str, Any]], key: str = "miou") -> dict[int, float]:
    """``key`` of each row by its seed."""
    return {int(r["seed"]): float(r[key]) for r in rows}


def paired_comparisons(
    groups: dict[ArmKey, list[dict[str, Any]]], n_boot: int = N_BOOT, seed: int = 0
) -> dict[ArmKey, PairedComparison]:
    """mIoU of every arm but real-only against real-only's, paired by seed; arms without a
    seed in common with real-only (or studies without real-only runs) are left out."""
    base = next((rows for (label, _), rows in groups.items() if label == BASELINE), None)
    if base is None:
        return {}
    baseline = by_seed(base)
    out = {}
    for key, rows in groups.items():
        arm = by_seed(rows)
        if key[0] != BASELINE and set(arm) & set(baseline):
            out[key] = compare_paired(arm, baseline, CI_LEVEL, n_boot=n_boot, seed=seed)
    return out
