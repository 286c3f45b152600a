"""The report aggregates stage records into summary.csv, report.md and plots."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from synthsat.report import run_label, summarise


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
    assert "| 50% synthetic | 6 | 0.5900 ±" in report
    assert "| 50% synthetic | 0 | 0.4200 ±" in report
    assert "0.5235" in report and "| 6 | 0.3 | 2 |" in report
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
    assert "| lambda_div | diversity_l1 | spectral_w1 | seam_ratio | acf_peak |" in report
    assert "| 0 | 0.1 | 2.5 | — | — |" in report
    assert "| 6 | 0.3 | 2 | 1.5 (real 1.02) | 0.25 (real 0.001) |" in report
    assert "acf_step" not in report and "in brackets the real tiles' values" in report
    assert (tmp_path / "fidelity_diversity.png").exists()
