"""Aggregate a study's runs into ``summary.csv``, ``report.md`` and PNG plots.

The pipeline leaves one ``done.json`` per finished stage (its parameters and output
paths); segmentation stages hold a ``metrics.json`` with the test scores on real
imagery, synthetic-metric stages a ``metrics.json`` with fidelity and diversity.

Runs are grouped into *arms* over seeds: an arm is a training imagery (``run_label``: the
mixing ratio, or the add mode's copies) with one synthetic *source* (``run_source``): the
GAN trained with a given ``lambda_div`` (``"lambda_div = 6"``) or a control generator named
in ``params["generator"]`` (e.g. ``"classtexture"``, whose ``lambda_div`` is None). The
real-only arm has no source and is the baseline: every arm is compared with it seed by seed
(:mod:`synthsat.stats`), since seed ``s`` of each arm shares its seed with real-only's.

``summary.csv`` has one row per segmentation run, with the columns ``lambda_div``,
``generator``, ``ratio``, ``mode``, ``copies``, ``seed``, ``label``, ``miou``,
``pixel_accuracy`` and ``iou/<class>`` per scored class. ``generator`` is ``"none"`` for
real-only runs (no synthetic imagery), ``"gan"`` for runs on the GAN's imagery (absent or
None ``params["generator"]``; ``lambda_div`` says which GAN) and the control generator's
name otherwise.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

from synthsat.atomic import atomic_write, write_text
from synthsat.stats import N_BOOT, PairedComparison, compare_paired

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
#: Label of the baseline arm, which every other arm is paired with.
BASELINE = "real-only"
#: Coverage of the bootstrap confidence interval of the paired difference.
CI_LEVEL = 0.95

#: An arm: (training imagery label, source); real-only's source is "".
ArmKey = tuple[str, str]


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


def source_label(params: dict[str, Any]) -> str:
    """The synthetic imagery's source named by a stage's parameters: the control generator
    (``params["generator"]``) or else the GAN, as ``"lambda_div = <x>"``."""
    if params.get("generator"):
        return str(params["generator"])
    lam = params.get("lambda_div")
    return "gan" if lam is None else f"lambda_div = {float(lam):g}"


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
    params.update(generator=generator, lambda_div=None if generator else lam or recorded)
    return params


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
            "miou": m["miou"],
            "pixel_accuracy": m.get("pixel_accuracy"),
        }
        for name, iou in scored_iou(m).items():
            row[f"iou/{name}"] = iou
        rows.append(row)
    return rows


def _write_csv(results_dir: Path, rows: list[dict[str, Any]]) -> None:
    """summary.csv; ``source`` stays out (``lambda_div`` and ``generator`` say it)."""
    keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k != "source"]
    with atomic_write(results_dir / "summary.csv", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _source_rank(source: str) -> tuple[int, float, str]:
    """Real-only first, then the GAN by lambda_div, then control generators by name."""
    if not source:
        return (0, 0.0, "")
    if source.startswith("lambda_div = "):
        return (1, float(source.split(" = ")[1]), "")
    return (2, 0.0, source)


def group_arms(rows: list[dict[str, Any]]) -> dict[ArmKey, list[dict[str, Any]]]:
    """Rows grouped by arm (label, source), in table order: replace mode by ratio before
    add mode by copies, sources as in :func:`_source_rank`."""
    groups: dict[ArmKey, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["label"], r["source"])].append(r)

    def order(key: ArmKey) -> tuple[Any, ...]:
        first = groups[key][0]
        mode_rank = 1.0 if first["mode"] == "add" else 0.0
        return (mode_rank, float(first["ratio"]) + 0.01 * first["copies"], _source_rank(key[1]))

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


def _source_cell(source: str) -> str:
    return source or "—"


def paired_table(
    groups: dict[ArmKey, list[dict[str, Any]]], comparisons: dict[ArmKey, PairedComparison]
) -> list[str]:
    """The main results table: per arm the mIoU mean ± std over seeds, the seed count, each
    seed's mIoU, and the paired difference with real-only (mean, bootstrap CI, improved)."""
    ci = f"{CI_LEVEL:.0%} CI of Δ"
    lines = [
        "Test mIoU on real imagery: mean ± std (sample std, ddof = 1) over seeds; n = number "
        "of seeds. Δ = the arm's mIoU minus real-only's on the same seed, averaged over the "
        f"seeds both have; {ci}: percentile bootstrap of that mean ({N_BOOT} resamples, "
        "seed 0; with 3 seeds or fewer it is about the range of the seeds' Δ); improved: "
        "seeds with Δ > 0 out of those paired. Source: the GAN's lambda_div or the control "
        "generator.",
        "",
        f"| training imagery | source | mIoU | n | mIoU per seed | Δ vs real-only | {ci} "
        "| improved |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, rows in groups.items():
        seeds = by_seed(rows)
        mean, std = _mean_std(list(seeds.values()))
        spread = f" ± {std:.4f}" if len(seeds) > 1 else ""  # one seed: no spread to report
        per_seed = ", ".join(f"s{s}: {v:.4f}" for s, v in sorted(seeds.items()))
        cells = [key[0], _source_cell(key[1]), f"{mean:.4f}{spread}", str(len(seeds)), per_seed]
        lines.append("| " + " | ".join(cells + _paired_cells(comparisons.get(key))) + " |")
    return lines


def _paired_cells(c: PairedComparison | None) -> list[str]:
    """Δ, its CI and improved k/n; dashes for real-only and arms without paired seeds."""
    if c is None:
        return ["—", "—", "—"]
    ci = f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}]"
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
    return _source_rank(source_label(rec["params"]))


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
    _plot_synthetic(results_dir, synth, metric_keys)
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
    """The mIoU tables and plots of the segmentation runs."""
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
    _plot_miou(results_dir, groups, mark_paper)
    lines += [
        "",
        "![mIoU against mixing ratio (mean ± std over seeds)](miou_vs_ratio.png)",
    ]
    if comparisons:
        _plot_paired_delta(results_dir, comparisons)
        lines += [
            "",
            f"![paired Δ mIoU vs real-only (mean, {CI_LEVEL:.0%} bootstrap CI)](paired_delta.png)",
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
            points.append((x, *_mean_std(list(by_seed(rows).values())), short))
    return sorted(points)


def _plot_miou(
    results_dir: Path, groups: dict[ArmKey, list[dict[str, Any]]], mark_paper: bool
) -> None:
    """mIoU (mean ± std over seeds) against the mixing ratio: one line per source over the
    replace-mode arms (sources dodged a little sideways), add-mode arms as open diamonds in
    columns right of ratio 1, one per add setting, labelled at the bottom (``x2``,
    ``real + x2``),
    real-only as a grey band (mean ± std) with its point at ratio 0."""
    sources = sorted({s for _, s in groups if s}, key=_source_rank)
    colours = _source_colours(sources)
    dodge = {s: 0.01 * (i - (len(sources) - 1) / 2) for i, s in enumerate(sources)}
    # one column right of ratio 1 per add-mode setting, shared by the sources
    add_slots = dict(sorted((p[0], p[3]) for s in sources for p in _arm_points(groups, s, "add")))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    base = [rows for (label, _), rows in groups.items() if label == BASELINE]
    if base:
        mean, std = _mean_std(list(by_seed(base[0]).values()))
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
    fig.savefig(results_dir / "miou_vs_ratio.png", dpi=110)
    plt.close(fig)


def _plot_paired_delta(results_dir: Path, comparisons: dict[ArmKey, PairedComparison]) -> None:
    """Per arm the mean paired Δ mIoU vs real-only with its bootstrap CI, a zero line."""
    keys = list(comparisons)
    colours = _source_colours(sorted({s for _, s in keys}, key=_source_rank))
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.4 * len(keys)))
    for y, key in enumerate(reversed(keys)):
        c = comparisons[key]
        err = [[c.mean_diff - c.ci_low], [c.ci_high - c.mean_diff]]
        ax.errorbar([c.mean_diff], [y], xerr=err, fmt="o", capsize=3, color=colours[key[1]])
    ax.axvline(0.0, color="k", lw=1)
    ax.set_yticks(range(len(keys)), [f"{label} · {s}" for label, s in reversed(keys)])
    ax.tick_params(axis="y", labelsize=8)
    ax.set_xlabel(f"paired Δ mIoU vs real-only (same seed): mean, {CI_LEVEL:.0%} bootstrap CI")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(results_dir / "paired_delta.png", dpi=110)
    plt.close(fig)


def _plot_synthetic(results_dir: Path, synth: list[dict[str, Any]], keys: list[str]) -> None:
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
    fig.savefig(results_dir / "fidelity_diversity.png", dpi=110)
    plt.close(fig)


def _value(metrics: dict[str, Any], key: str) -> float:
    """A metric as a float to plot; nan where missing or None."""
    value = metrics.get(key)
    return float("nan") if value is None else float(value)
