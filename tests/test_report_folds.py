"""The fold report (issue 24, deliverable 6): paired differences within each fold, the
t interval over fold means across folds, the pooled paired t beside it; known answers."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import t

from synthsat.report.folds import across_folds, fold_rows, main, paired_by_fold

COLUMNS = ["lambda_div", "generator", "ratio", "mode", "copies", "seed", "label", "miou",
           "val_miou", "steps"]  # fmt: skip


def _summary(path: Path, base: list[float], mix: list[float], colour: list[float]) -> Path:
    """A fold's summary.csv: real-only, 50 % GAN lambda 0 and 50 % classcolour by seed
    (test mIoU; validation mIoU = test - 0.1), at 11520 steps, plus a 1440-step run."""
    rows = []
    for seed, (b, m, c) in enumerate(zip(base, mix, colour, strict=True)):
        rows += [
            ["", "none", 0.0, "replace", 0, seed, "real-only", b, b - 0.1, 11520],
            [0.0, "gan", 0.5, "replace", 1, seed, "50% synthetic", m, m - 0.1, 11520],
            ["", "classcolour", 0.5, "replace", 1, seed, "50% synthetic", c, c - 0.1, 11520],
        ]
    rows.append(["", "none", 0.0, "replace", 0, 0, "real-only", 0.1, 0.0, 1440])
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    return path


def _two_folds(tmp_path: Path) -> tuple[Path, dict[tuple[str, str, str], dict[str, str]]]:
    """The fold report of two folds (test 8, test 4) written under ``tmp_path / "out"``,
    and its CSV rows by (arm, metric, fold)."""
    f8 = _summary(tmp_path / "f8.csv", [0.60, 0.62, 0.61], [0.62, 0.63, 0.64], [0.55, 0.56, 0.57])
    f4 = _summary(tmp_path / "f4.csv", [0.50, 0.52, 0.54], [0.49, 0.52, 0.53], [0.45, 0.47, 0.50])
    out = main(["--fold", f"test 8={f8}", "--fold", f"test 4={f4}", "--steps", "11520",
                "--out", str(tmp_path / "out")])  # fmt: skip
    with open(out / "folds.csv", newline="") as f:
        return out, {(r["arm"], r["metric"], r["fold"]): r for r in csv.DictReader(f)}


def test_across_folds_is_the_t_interval_over_fold_means() -> None:
    per_fold = {"a": {0: 0.01, 1: 0.03}, "b": {0: -0.02, 1: 0.0}, "c": {0: 0.05, 1: 0.07}}
    a = across_folds(per_fold)
    means = np.array([0.02, -0.01, 0.06])
    half = t.ppf(0.975, 2) * means.std(ddof=1) / np.sqrt(3)
    assert a.fold_means == pytest.approx(tuple(means))
    assert (a.mean, a.low, a.high) == pytest.approx((0.07 / 3, 0.07 / 3 - half, 0.07 / 3 + half))
    assert a.folds_improved == 2 and a.pairs_improved == 4 and len(a.pairs) == 6
    pairs = np.array([0.01, 0.03, -0.02, 0.0, 0.05, 0.07])
    pooled = t.ppf(0.975, 5) * pairs.std(ddof=1) / np.sqrt(6)
    assert (a.pooled_low, a.pooled_high) == pytest.approx(
        (pairs.mean() - pooled, pairs.mean() + pooled)
    )
    assert a.high - a.low > a.pooled_high - a.pooled_low  # the folds are the replicates


def test_one_fold_has_no_interval_across_folds() -> None:
    a = across_folds({"a": {0: 0.01, 1: 0.03, 2: 0.02}})
    assert a.mean == pytest.approx(0.02) and np.isnan(a.low) and np.isnan(a.high)
    with pytest.raises(ValueError, match="at least one fold"):
        across_folds({})


def test_the_report_pairs_each_arm_with_real_only_in_each_fold(tmp_path: Path) -> None:
    out, by = _two_folds(tmp_path)
    mix = "50% synthetic, lambda_div = 0"
    assert float(by[(mix, "test", "test 8")]["mean_diff"]) == pytest.approx(0.02)
    assert float(by[(mix, "test", "test 4")]["mean_diff"]) == pytest.approx(-0.02 / 3)
    assert float(by[(mix, "test", "all")]["mean_diff"]) == pytest.approx((0.02 - 0.02 / 3) / 2)
    assert by[(mix, "test", "all")]["improved"] == "1"  # one fold of two above 0
    colour = "50% synthetic, classcolour"
    assert float(by[(colour, "val", "test 4")]["mean_diff"]) == pytest.approx(-0.04667, abs=1e-5)
    assert by[(colour, "test", "test 8")]["improved"] == "0"
    text = (out / "folds.md").read_text()
    assert "**all 2 folds**" in text and "t interval over the fold means" in text
    assert (out / "folds_delta.png").stat().st_size > 0


def test_paired_by_fold_skips_a_fold_without_the_arm(tmp_path: Path) -> None:
    from synthsat.report import read_summary

    rows = read_summary(_summary(tmp_path / "f.csv", [0.5], [0.6], [0.4]))
    only_base = [r for r in rows if r["label"] == "real-only"]
    folds = {"a": fold_rows(rows, 11520), "b": fold_rows(only_base, 11520)}
    diffs = paired_by_fold(folds, ("50% synthetic", "lambda_div = 0"), "miou")
    assert diffs == {"a": {0: pytest.approx(0.1)}}


def test_a_budget_no_run_has_is_refused(tmp_path: Path) -> None:
    from synthsat.report import read_summary

    rows = read_summary(_summary(tmp_path / "f.csv", [0.5], [0.6], [0.4]))
    with pytest.raises(
        ValueError, match=r"no run at steps=999 \(the fold's budgets: \[1440, 11520\]\)"
    ):
        fold_rows(rows, 999)


def test_arm_against_arm_is_the_first_minus_the_second_by_seed(tmp_path: Path) -> None:
    """The GAN arm minus the control, paired by seed in each fold and across folds."""
    out, by = _two_folds(tmp_path)
    pair = "50% synthetic, lambda_div = 0 − 50% synthetic, classcolour"
    d8 = np.array([0.07, 0.07, 0.07])  # 0.62-0.55, 0.63-0.56, 0.64-0.57
    d4 = np.array([0.04, 0.05, 0.03])
    assert float(by[(pair, "test", "test 8")]["mean_diff"]) == pytest.approx(0.07)
    assert float(by[(pair, "test", "test 4")]["mean_diff"]) == pytest.approx(0.04)
    half = t.ppf(0.975, 2) * d4.std(ddof=1) / np.sqrt(3)
    assert float(by[(pair, "test", "test 4")]["low"]) == pytest.approx(0.04 - half)
    assert by[(pair, "test", "test 4")]["improved"] == "3"
    assert float(by[(pair, "test", "all")]["mean_diff"]) == pytest.approx((d8.mean() + 0.04) / 2)
    assert float(by[(pair, "val", "test 8")]["mean_diff"]) == pytest.approx(0.07)
    assert not any(r[0].startswith("50% synthetic, classcolour −") for r in by)  # one direction
    text = (out / "folds.md").read_text()
    assert "## Arm against arm" in text and f"| {pair} | test | test 4 | 3 |" in text
