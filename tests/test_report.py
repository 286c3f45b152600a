"""The report aggregates stage records into summary.csv, report.md and plots."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from synthsat.report import run_generator, run_label, run_params, run_source, summarise


def _stage(root: Path, kind: str, name: str, params: dict, metrics: dict) -> None:
    d = root / kind / name
    d.mkdir(parents=True)
    (d / "done.json").write_text(json.dumps({"kind": kind, "params": params}))
    (d / "metrics.json").write_text(json.dumps(metrics))


def test_summary_table_means_and_stds(tmp_path: Path) -> None:
    mious = {(0.0, None): [0.50, 0.52], (0.5, 6.0): [0.58, 0.60], (0.5, 0.0): [0.40, 0.44]}
    for (ratio, lam), values in mious.items():
        for seed, miou in enumerate(values):
            _stage(
                tmp_path,
                "segmentation",
                f"r{ratio}-l{lam}-s{seed}",
                {"ratio": ratio, "mode": "replace", "copies": 0, "lambda_div": lam, "seed": seed},
                {
                    "miou": miou,
                    "pixel_accuracy": 0.8,
                    # as train_segmentation writes it: the unscored class is left out
                    "iou": {"no-data": 0.0, "water": miou + 0.1, "road": miou - 0.1},
                    "classes": ["no-data", "water", "road"],
                    "scored_classes": [1, 2],
                },
            )
    _stage(
        tmp_path,
        "synthetic_metrics",
        "l6",
        {"lambda_div": 6.0},
        {"diversity_l1": 0.3, "spectral_w1": 2.0},
    )
    _stage(
        tmp_path,
        "synthetic_metrics",
        "l0",
        {"lambda_div": 0.0},
        {"diversity_l1": 0.1, "spectral_w1": 2.5},
    )
    report = summarise(tmp_path, mark_paper=True).read_text()
    assert f"| real-only | — | 0.5100 ± {np.std([0.5, 0.52], ddof=1):.4f} | 2 |" in report
    assert "| 50% synthetic | lambda_div = 6 | 0.5900 ±" in report
    assert "| 50% synthetic | lambda_div = 0 | 0.4200 ±" in report
    assert "0.5235" in report and "| lambda_div = 6 | 0.3 | 2 |" in report
    rows = list(csv.DictReader((tmp_path / "summary.csv").read_text().splitlines()))
    assert len(rows) == 6 and {"iou/water", "iou/road"} <= set(rows[0])
    assert "iou/no-data" not in rows[0]
    assert "## Per-class IoU (mean over seeds)" in report
    assert "| real-only | — | 0.610 | 0.410 |" in report
    assert (tmp_path / "miou_vs_ratio.png").stat().st_size > 1000
    assert (tmp_path / "fidelity_diversity.png").exists()


@pytest.mark.parametrize(
    ("params", "label"),
    [
        ({"ratio": 0.0, "mode": "replace"}, "real-only"),
        ({"ratio": 0.25, "mode": "replace"}, "25% synthetic"),
        ({"ratio": 1.0, "mode": "replace"}, "synthetic-only"),
        ({"ratio": 1, "mode": "add", "copies": 3}, "synthetic-only x3"),
        ({"ratio": 0.0, "mode": "add", "copies": 2}, "real + x2 synthetic"),
        ({"ratio": 0.25, "mode": "add", "copies": 1}, "75% real + x1 synthetic"),
    ],
)
def test_run_labels(params: dict, label: str) -> None:
    assert run_label(params) == label


def test_seam_metrics_sit_beside_the_real_imagerys(tmp_path: Path) -> None:
    seams = {
        "seam_ratio": 1.5,
        "seam_ratio_real": 1.02,
        "acf_peak": 0.25,
        "acf_peak_real": 0.001,
        "acf_step": 0.3,
        "acf_step_real": 0.01,
    }
    _stage(
        tmp_path,
        "synthetic_metrics",
        "l6",
        {"lambda_div": 6.0},
        {"diversity_l1": 0.3, "spectral_w1": 2.0, **seams},
    )
    _stage(  # synthesised before seam metrics were recorded
        tmp_path,
        "synthetic_metrics",
        "l0",
        {"lambda_div": 0.0},
        {"diversity_l1": 0.1, "spectral_w1": 2.5, "seam_ratio": None, "acf_peak": None},
    )
    report = summarise(tmp_path).read_text()
    assert "| source | diversity_l1 | spectral_w1 | seam_ratio | acf_peak |" in report
    assert "| lambda_div = 0 | 0.1 | 2.5 | — | — |" in report
    assert "| lambda_div = 6 | 0.3 | 2 | 1.5 (real 1.02) | 0.25 (real 0.001) |" in report
    assert "acf_step" not in report and "in brackets the real tiles' values" in report
    assert (tmp_path / "fidelity_diversity.png").exists()


@pytest.mark.parametrize(
    ("params", "source", "generator"),
    [
        ({"ratio": 0.0, "mode": "replace", "lambda_div": None}, "", "none"),
        ({"ratio": 0.5, "mode": "replace", "lambda_div": 6.0}, "lambda_div = 6", "gan"),
        (
            {"ratio": 0.5, "mode": "replace", "lambda_div": 0.5, "generator": None},
            "lambda_div = 0.5",
            "gan",
        ),  # fmt: skip
        (
            {"ratio": 0.5, "mode": "replace", "lambda_div": None, "generator": "classtexture"},
            "classtexture",
            "classtexture",
        ),  # fmt: skip
        ({"ratio": 1, "mode": "add", "copies": 2, "lambda_div": 1.0}, "lambda_div = 1", "gan"),
        ({"ratio": 0.0, "mode": "add", "copies": 2, "lambda_div": 6.0}, "lambda_div = 6", "gan"),
    ],
)
def test_run_sources_and_generators(params: dict, source: str, generator: str) -> None:
    assert run_source(params) == source
    assert run_generator(params) == generator


#: mIoU by seed of each arm of the paired study: (ratio, mode, copies, lambda, generator).
PAIRED = {
    (0.0, "replace", 0, None, None): {0: 0.50, 1: 0.52, 2: 0.48},
    (0.5, "replace", 0, 6.0, None): {0: 0.52, 1: 0.56, 2: 0.47},  # Δ +0.02, +0.04, -0.01
    (0.5, "replace", 0, None, "classtexture"): {0: 0.49, 1: 0.50, 2: 0.47},  # Δ -.01 -.02 -.01
    (1.0, "add", 2, 6.0, None): {0: 0.45, 1: 0.55},  # Δ -0.05, +0.03; seed 2 missing
    (0.0, "add", 2, None, "classtexture"): {0: 0.53, 1: 0.55, 2: 0.49},  # Δ +.03 +.03 +.01
    (1.0, "replace", 0, 6.0, None): {7: 0.30},  # no seed in common with real-only
}


def _paired_study(root: Path) -> None:
    for (ratio, mode, copies, lam, generator), mious in PAIRED.items():
        for seed, miou in mious.items():
            params = {"ratio": ratio, "mode": mode, "copies": copies, "lambda_div": lam}
            params["seed"] = seed
            if generator is not None:
                params["generator"] = generator
            _stage(
                root,
                "segmentation",
                f"r{ratio}-{mode}{copies}-l{lam}-g{generator}-s{seed}",
                params,
                {
                    "miou": miou,
                    "pixel_accuracy": 0.9,
                    "iou": {"water": miou + 0.1, "road": miou - 0.1},
                    "classes": ["water", "road"],
                    "scored_classes": [0, 1],
                },
            )


def _table_row(report: str, start: str) -> list[str]:
    """The cells of the main (paired) table's row that starts with ``start``."""
    main = report.split("## Per-class IoU")[0].split("## Runs")[0]
    (line,) = [ln for ln in main.splitlines() if ln.startswith(start)]
    return line.strip("| ").split(" | ")


def test_paired_table_pins_deltas_cis_and_improved(tmp_path: Path) -> None:
    """The main table pairs every arm's seeds with real-only's; the CI is the paired t
    interval, mean Δ -/+ t_{0.975, n-1} s / sqrt(n) (t = 4.302653 for 3 seeds, 12.7062 for
    2): Δ (+.02, +.04, -.01): s = .0251661, half width .0625161; Δ (-.01, -.02, -.01):
    s = .0057735, half .0143420; Δ (-.05, +.03): s = .0565685, half .508248; Δ (+.03, +.03,
    +.01): s = .0115470, half .0286844."""
    _paired_study(tmp_path)
    report = summarise(tmp_path).read_text()
    header = _table_row(report, "| training imagery | source | mIoU |")
    assert header == [
        "training imagery",
        "source",
        "mIoU",
        "n",
        "mIoU per seed",
        "Δ vs real-only",
        "95% CI of Δ",
        "improved",
    ]
    std = np.std([0.50, 0.52, 0.48], ddof=1)
    assert _table_row(report, "| real-only |") == [
        "real-only",
        "—",
        f"0.5000 ± {std:.4f}",
        "3",
        "s0: 0.5000, s1: 0.5200, s2: 0.4800",
        "—",
        "—",
        "—",
    ]
    std = np.std([0.52, 0.56, 0.47], ddof=1)
    assert _table_row(report, "| 50% synthetic | lambda_div = 6 |")[2:] == [
        f"0.5167 ± {std:.4f}",
        "3",
        "s0: 0.5200, s1: 0.5600, s2: 0.4700",
        "+0.0167",
        "[-0.0458, +0.0792]",
        "2/3",
    ]
    assert _table_row(report, "| 50% synthetic | classtexture |")[2:] == [
        f"0.4867 ± {np.std([0.49, 0.50, 0.47], ddof=1):.4f}",
        "3",
        "s0: 0.4900, s1: 0.5000, s2: 0.4700",
        "-0.0133",
        "[-0.0277, +0.0010]",
        "0/3",
    ]
    assert _table_row(report, "| synthetic-only x2 | lambda_div = 6 |")[3:] == [
        "2",
        "s0: 0.4500, s1: 0.5500",
        "-0.0100",
        "[-0.5182, +0.4982]",
        "1/2",
    ]
    # add mode with ratio 0 is the real data plus synthetic copies: an arm, not real-only
    assert _table_row(report, "| real + x2 synthetic | classtexture |")[5:] == [
        "+0.0233",
        "[-0.0054, +0.0520]",
        "3/3",
    ]
    # no seed shared with real-only: nothing to pair, one seed: no spread
    assert _table_row(report, "| synthetic-only | lambda_div = 6 |")[2:] == [
        "0.3000",
        "1",
        "s7: 0.3000",
        "—",
        "—",
        "—",
    ]
    # table order: real-only, replace by ratio (GAN by lambda, then controls), add mode last
    main = report.split("## Per-class IoU")[0].split("## Runs")[0]
    order = [ln.split(" | ")[:2] for ln in main.splitlines() if ln.startswith("| ")]
    assert order == [
        ["| training imagery", "source"],
        ["| real-only", "—"],
        ["| 50% synthetic", "lambda_div = 6"],
        ["| 50% synthetic", "classtexture"],
        ["| synthetic-only", "lambda_div = 6"],
        ["| real + x2 synthetic", "classtexture"],
        ["| synthetic-only x2", "lambda_div = 6"],
    ]
    # the per-class table keeps one row per arm, the mean over its seeds
    per_class = report.split("## Per-class IoU (mean over seeds)")[1]
    assert "| training imagery | source | water | road |" in per_class
    assert "| 50% synthetic | classtexture | 0.587 | 0.387 |" in per_class
    assert "| real-only | — | 0.600 | 0.400 |" in per_class
    assert "95% CI of Δ: paired t interval" in report and "](paired_delta.png)" in report
    for png in ("miou_vs_ratio.png", "paired_delta.png"):
        assert (tmp_path / png).stat().st_size > 1000


def test_summary_csv_generator_column(tmp_path: Path) -> None:
    _paired_study(tmp_path)
    summarise(tmp_path)
    rows = list(csv.DictReader((tmp_path / "summary.csv").read_text().splitlines()))
    assert list(rows[0])[:10] == [
        "lambda_div",
        "generator",
        "ratio",
        "mode",
        "copies",
        "seed",
        "label",
        "miou",
        "pixel_accuracy",
        "val_miou",
    ]
    assert len(rows) == sum(len(v) for v in PAIRED.values())
    by_run = {(r["label"], r["generator"], r["lambda_div"], r["seed"]): r["miou"] for r in rows}
    assert by_run[("real-only", "none", "", "1")] == "0.52"
    assert by_run[("50% synthetic", "gan", "6.0", "1")] == "0.56"
    assert by_run[("50% synthetic", "classtexture", "", "1")] == "0.5"
    assert by_run[("synthetic-only x2", "gan", "6.0", "0")] == "0.45"
    assert by_run[("real + x2 synthetic", "classtexture", "", "2")] == "0.49"
    assert {r["generator"] for r in rows} == {"none", "gan", "classtexture"}


def test_study_without_real_only_has_no_paired_columns(tmp_path: Path) -> None:
    for seed, miou in enumerate((0.4, 0.6)):
        params = {"ratio": 0.5, "mode": "replace", "copies": 0, "lambda_div": 1.0, "seed": seed}
        _stage(tmp_path, "segmentation", f"s{seed}", params, {"miou": miou})
    report = summarise(tmp_path).read_text()
    row = _table_row(report, "| 50% synthetic |")
    spread = f"0.5000 ± {np.std([0.4, 0.6], ddof=1):.4f}"
    assert row[2:] == [spread, "2", "s0: 0.4000, s1: 0.6000", "—", "—", "—"]
    assert not (tmp_path / "paired_delta.png").exists() and "paired_delta" not in report
    assert (tmp_path / "miou_vs_ratio.png").exists()


def test_control_generators_in_the_synthetic_table(tmp_path: Path) -> None:
    metrics = {"diversity_l1": 0.3, "spectral_w1": 2.0}
    _stage(tmp_path, "synthetic_metrics", "l6", {"lambda_div": 6.0}, metrics)
    _stage(
        tmp_path,
        "synthetic_metrics",
        "classtexture",
        {"lambda_div": None, "generator": "classtexture"},
        {"diversity_l1": 0.05, "spectral_w1": 0.5},
    )
    _stage(tmp_path, "synthetic_metrics", "l0", {"lambda_div": 0.0}, metrics)
    report = summarise(tmp_path).read_text()
    table = [ln for ln in report.splitlines() if ln.startswith("| ")]
    assert table == [
        "| source | diversity_l1 | spectral_w1 |",
        "| lambda_div = 0 | 0.3 | 2 |",
        "| lambda_div = 6 | 0.3 | 2 |",
        "| classtexture | 0.05 | 0.5 |",
    ]
    assert (tmp_path / "fidelity_diversity.png").stat().st_size > 1000


def _record(params: dict, source: dict | None) -> dict:
    return {"params": params, "metrics": {"synthetic_source": source}, "dir": "seg/x"}


def test_the_source_is_read_from_the_tiles_manifest() -> None:
    gan = {"ratio": 0.5, "mode": "replace", "copies": 0, "seed": 0}
    # the manifest names the lambda where the stage record has none
    assert run_params(_record({**gan, "lambda_div": None}, _src("gan", 2.0)))["lambda_div"] == 2.0
    # both agree: unchanged; a manifest that does not say keeps the record's value
    assert run_params(_record({**gan, "lambda_div": 2.0}, _src("gan", 2.0)))["lambda_div"] == 2.0
    assert run_params(_record({**gan, "lambda_div": 6.0}, _src("gan", None)))["lambda_div"] == 6.0
    control = run_params(
        _record(
            {**gan, "lambda_div": None, "generator": "classtexture"}, _src("classtexture", None)
        )
    )
    assert (control["generator"], control["lambda_div"]) == ("classtexture", None)
    # real-only runs and tiles without a manifest: the record as it is
    assert run_params(_record({**gan, "lambda_div": 2.0}, None))["lambda_div"] == 2.0
    with pytest.raises(
        ValueError,
        match=r"seg/x: its record names the synthetic source "
        r"'lambda_div = 2', but the tiles' manifest says 'lambda_div = 6'",
    ):
        run_params(_record({**gan, "lambda_div": 2.0}, _src("gan", 6.0)))
    with pytest.raises(ValueError, match="but the tiles' manifest says 'classtexture'"):
        run_params(_record({**gan, "lambda_div": 2.0}, _src("classtexture", None)))


def _src(generator: str, lam: float | None) -> dict:
    return {"generator": generator, "lambda_div": lam, "checkpoint": None}
