"""Aggregate a study's runs into ``summary.csv``, ``report.md`` and PNG plots.

The pipeline leaves one ``done.json`` per finished stage (its parameters and output
paths); segmentation stages hold a ``metrics.json`` with the test scores on real
imagery, synthetic-metric stages a ``metrics.json`` with fidelity and diversity.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

#: Le et al. 2023, Chesapeake Maryland test mIoU: real-only and the 50 % synthetic mix.
PAPER_REFERENCE = {"real-only": 0.5235, "50 % synthetic": 0.5834}
#: Synthetic-imagery metrics shown with the real imagery's value (``<key>_real``) beside them,
#: in the last columns of the fidelity / diversity table.
WITH_REAL = ("seam_ratio", "acf_peak")
#: Synthetic-imagery metrics left out of the table (still in each ``metrics.json``).
NOT_TABULATED = ("acf_step", "acf_step_real")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(text)
    os.replace(tmp, path)


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


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def run_label(params: dict[str, Any]) -> str:
    """Human-readable name of a segmentation run's training imagery."""
    if params.get("mode") == "add" and params.get("ratio") == 1:
        return f"synthetic-only x{params['copies']}"
    r = float(params["ratio"])
    return "real-only" if r == 0 else ("synthetic-only" if r == 1 else f"{r:.0%} synthetic")


def scored_iou(metrics: dict[str, Any]) -> dict[str, float]:
    """Per-class IoU of the classes that count towards mIoU, from a segmentation
    ``metrics.json`` (``iou`` by class name, ``classes``, ``scored_classes`` indices)."""
    iou = metrics.get("iou") or {}
    classes, scored = metrics.get("classes"), metrics.get("scored_classes")
    if classes is None or scored is None:
        return dict(iou)
    names = [classes[i] for i in scored]
    return {name: iou[name] for name in names if name in iou}


def summarise(
    results_dir: str | Path, class_names: Sequence[str] | None = None, mark_paper: bool = False
) -> Path:
    """Write summary.csv, report.md and plots for the study in ``results_dir``."""
    results_dir = Path(results_dir)
    seg = [r for r in load_stages(results_dir, "segmentation") if r["metrics"]]
    rows = []
    for rec in seg:
        p, m = rec["params"], rec["metrics"]
        row = {
            "lambda_div": p.get("lambda_div"),
            "ratio": p["ratio"],
            "mode": p["mode"],
            "copies": p.get("copies", 0),
            "seed": p["seed"],
            "label": run_label(p),
            "miou": m["miou"],
            "pixel_accuracy": m.get("pixel_accuracy"),
        }
        for name, iou in scored_iou(m).items():
            row[f"iou/{name}"] = iou
        rows.append(row)
    if rows:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        tmp = results_dir / ".summary.csv.part"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, results_dir / "summary.csv")

    # Group over seeds: (label, lambda) -> rows. Real-only runs don't depend on lambda.
    groups: dict[tuple[str, Any], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        lam = None if r["ratio"] == 0 else r["lambda_div"]
        groups[(r["label"], lam)].append(r)

    lines = [f"# Results: {results_dir.name}", ""]
    lines += [
        "Test mIoU on real imagery (mean ± std over seeds; n = number of seeds).",
        "",
        "| training imagery | lambda_div | mIoU | n |",
        "|---|---|---|---|",
    ]

    def order(key: tuple[str, Any]) -> tuple[float, float, str]:
        label, lam = key
        recs = groups[key]
        mode_rank = 1.0 if recs[0]["mode"] == "add" else 0.0
        return (
            mode_rank,
            float(recs[0]["ratio"]) + 0.01 * recs[0]["copies"],
            "" if lam is None else f"{float(lam):08.3f}",
        )

    for key in sorted(groups, key=order):
        label, lam = key
        mean, std = _mean_std([r["miou"] for r in groups[key]])
        lam_s = "—" if lam is None else f"{float(lam):g}"
        n = len(groups[key])
        spread = f" ± {std:.4f}" if n > 1 else ""  # one seed: no spread to report
        lines.append(f"| {label} | {lam_s} | {mean:.4f}{spread} | {n} |")
    if mark_paper:
        lines += [
            "",
            "Paper (Le et al. 2023, Chesapeake Maryland): real-only "
            f"{PAPER_REFERENCE['real-only']}, 50 % synthetic "
            f"{PAPER_REFERENCE['50 % synthetic']}.",
        ]

    iou_keys = [k for k in (rows[0] if rows else {}) if k.startswith("iou/")]
    if iou_keys:
        lines += [
            "",
            "## Per-class IoU (mean over seeds)",
            "",
            "| training imagery | lambda_div | " + " | ".join(k[4:] for k in iou_keys) + " |",
            "|---|---|" + "---|" * len(iou_keys),
        ]
        for key in sorted(groups, key=order):
            label, lam = key
            # a class with nothing to score (no test pixels, never predicted) has IoU null
            vals = [
                np.mean([np.nan if r[k] is None else r[k] for r in groups[key]]) for k in iou_keys
            ]
            lam_s = "—" if lam is None else f"{float(lam):g}"
            lines.append(f"| {label} | {lam_s} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")

    synth = [r for r in load_stages(results_dir, "synthetic_metrics") if r["metrics"]]
    if synth:
        numeric = {k for r in synth for k, v in r["metrics"].items() if isinstance(v, int | float)}
        paired = [k for k in WITH_REAL if k in numeric]
        hidden = {*NOT_TABULATED, *WITH_REAL, *(f"{k}_real" for k in WITH_REAL)}
        metric_keys = sorted(numeric - hidden) + paired
        lines += [
            "",
            "## Fidelity and diversity of the synthetic imagery per lambda_div",
            "",
            "| lambda_div | " + " | ".join(metric_keys) + " |",
            "|---|" + "---|" * len(metric_keys),
        ]
        for r in sorted(synth, key=lambda r: float(r["params"]["lambda_div"])):
            cells = [_metric_cell(r["metrics"], k, k in paired) for k in metric_keys]
            lines.append(f"| {float(r['params']['lambda_div']):g} | " + " | ".join(cells) + " |")
        if paired:
            lines += [
                "",
                "seam_ratio: gradient across chip edges over that elsewhere (1: seamless); "
                "acf_peak: autocorrelation of the high-passed image at the chip step above "
                "nearby shifts (0: no repetition); in brackets the real tiles' values on the "
                "same chip grid.",
            ]
        _plot_synthetic(results_dir, synth, metric_keys)
        lines += ["", "![fidelity and diversity](fidelity_diversity.png)"]

    if rows:
        _plot_miou(results_dir, rows, mark_paper)
        lines += ["", "![mIoU against mixing ratio](miou_vs_ratio.png)"]
    if (results_dir / "sample_grid.png").exists():
        lines += [
            "",
            "## Samples (mask | real | synthetic at each lambda_div)",
            "",
            "![samples](sample_grid.png)",
        ]
    timing = results_dir / "timing.json"
    if timing.exists():
        t = json.loads(timing.read_text())
        lines += [
            "",
            f"Wall time: {t.get('total_s', 0) / 60:.1f} min over "
            f"{max(1, len(t.get('runs', [])))} pipeline run(s) "
            f"(job time by stage, summed over jobs run side by side: "
            f"{', '.join(f'{k} {v / 60:.1f} min' for k, v in t.get('stages', {}).items())}).",
        ]
    _write_atomic(results_dir / "report.md", "\n".join(lines) + "\n")
    return results_dir / "report.md"


def _metric_cell(metrics: dict[str, Any], key: str, with_real: bool) -> str:
    """A table cell: the value (``—`` if missing), with ``(real <key>_real)`` if asked."""
    value = metrics.get(key)
    cell = "—" if value is None else f"{value:.4g}"
    real = metrics.get(f"{key}_real") if with_real else None
    return cell if real is None else f"{cell} (real {real:.4g})"


def _plot_miou(results_dir: Path, rows: list[dict[str, Any]], mark_paper: bool) -> None:
    replace = [r for r in rows if r["mode"] == "replace"]
    real = [r["miou"] for r in replace if r["ratio"] == 0]
    lambdas = sorted({r["lambda_div"] for r in replace if r["ratio"] > 0})
    fig, ax = plt.subplots(figsize=(6, 4))
    for lam in lambdas:
        by_ratio: dict[float, list[float]] = defaultdict(list)
        if real:
            by_ratio[0.0] = real
        for r in replace:
            if r["ratio"] > 0 and r["lambda_div"] == lam:
                by_ratio[float(r["ratio"])].append(r["miou"])
        xs = sorted(by_ratio)
        stats = [_mean_std(by_ratio[x]) for x in xs]
        mean = np.array([s[0] for s in stats])
        std = np.array([s[1] for s in stats])
        line = ax.plot(xs, mean, marker="o", label=f"lambda_div = {lam:g}")[0]
        ax.fill_between(xs, mean - std, mean + std, alpha=0.2, color=line.get_color())
    if mark_paper:
        ax.axhline(PAPER_REFERENCE["real-only"], ls="--", c="grey", lw=1)
        ax.plot([0.5], [PAPER_REFERENCE["50 % synthetic"]], "k*", ms=10, label="paper: 50 % mix")
        ax.text(0.01, PAPER_REFERENCE["real-only"], "paper: real-only", va="bottom", fontsize=8)
    ax.set_xlabel("share of synthetic training patches (mixing ratio)")
    ax.set_ylabel("test mIoU on real imagery")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(results_dir / "miou_vs_ratio.png", dpi=110)
    plt.close(fig)


def _plot_synthetic(results_dir: Path, synth: list[dict[str, Any]], keys: list[str]) -> None:
    keys = keys[:6]
    cols = min(3, len(keys))
    nrows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3 * nrows), squeeze=False)
    recs = sorted(synth, key=lambda r: float(r["params"]["lambda_div"]))
    lams = [float(r["params"]["lambda_div"]) for r in recs]
    for ax, key in zip(axes.ravel(), keys):
        ax.plot(lams, [_value(r["metrics"], key) for r in recs], marker="o")
        real = [_value(r["metrics"], f"{key}_real") for r in recs]
        if key in WITH_REAL and not np.all(np.isnan(real)):
            ax.plot(lams, real, ls="--", c="grey", label="real imagery")
            ax.legend(fontsize=7)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("lambda_div")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(keys) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(results_dir / "fidelity_diversity.png", dpi=110)
    plt.close(fig)


def _value(metrics: dict[str, Any], key: str) -> float:
    """A metric as a float to plot; nan where missing or None."""
    value = metrics.get(key)
    return float("nan") if value is None else float(value)
