"""The learning curve of a study with step budgets (:mod:`synthsat.report.curve`): the
plateau chosen on validation mIoU, the paired Δ at each budget, the report's sections."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from synthsat.jobs.train_segmentation import scored_record
from synthsat.report import summarise
from synthsat.report.arms import end_of_curve, summary_rows
from synthsat.report.curve import paired_by_budget, plateau_budget, plateau_key

#: (ratio, lambda) -> budget -> validation mIoU of seeds 0, 1, 2. Real-only gains 0.05
#: from 360 to 720 and 0.02 from 720 to 1440, then 0.005; the mix gains 0.03, 0.011 then
#: 0.004: the plateau is 1440 (720 -> 1440 raises the mix by 0.011 >= 0.01).
VAL = {
    (0.0, None): {
        360: (0.40, 0.41, 0.42),
        720: (0.45, 0.46, 0.47),
        1440: (0.47, 0.48, 0.49),
        2880: (0.475, 0.485, 0.495),
    },
    (0.5, 0.0): {
        360: (0.45, 0.46, 0.47),
        720: (0.48, 0.49, 0.50),
        1440: (0.491, 0.501, 0.511),
        2880: (0.495, 0.505, 0.515),
    },
}


#: test mIoU = validation + 0.1 for real-only, + 0.1 + 0.01 * seed for the mix.
def _test_miou(ratio: float, val: float, seed: int) -> float:
    return val + 0.1 + (0.01 * seed if ratio else 0.0)


def _study(root: Path, val: dict = VAL) -> None:
    for (ratio, lam), budgets in val.items():
        for steps, values in budgets.items():
            for seed, v in enumerate(values):
                params = {
                    "ratio": ratio,
                    "mode": "replace",
                    "copies": 0,
                    "lambda_div": lam,
                    "generator": None,
                    "seed": seed,
                    "steps": steps,
                }
                d = root / "segmentation" / f"r{ratio}-steps{steps}-seed{seed}"
                d.mkdir(parents=True)
                (d / "done.json").write_text(json.dumps({"params": params}))
                metrics = {
                    "miou": _test_miou(ratio, v, seed),
                    "pixel_accuracy": 0.9,
                    "scored": "best",
                    "scored_val_miou": v,
                    "scored_step": steps // 2,
                    "val_curve": [[steps // 2, v], [steps, v - 0.01]],
                }
                (d / "metrics.json").write_text(json.dumps(metrics))


def _rows(root: Path) -> list[dict]:
    from synthsat.report import load_stages

    return summary_rows(load_stages(root, "segmentation"))


def test_the_plateau_is_where_doubling_moves_no_arm_by_a_hundredth(tmp_path: Path) -> None:
    _study(tmp_path)
    assert plateau_budget(_rows(tmp_path)) == 1440


def test_no_plateau_while_an_arm_still_rises(tmp_path: Path) -> None:
    val = {arm: dict(b) for arm, b in VAL.items()}
    val[(0.5, 0.0)][2880] = (0.52, 0.52, 0.52)  # +0.0123 from 1440 on average
    _study(tmp_path, val)
    assert plateau_budget(_rows(tmp_path)) is None
    assert plateau_budget(_rows(tmp_path), gain=0.02) == 1440


def test_paired_deltas_at_each_budget(tmp_path: Path) -> None:
    _study(tmp_path)
    rows = _rows(tmp_path)
    (arm,) = paired_by_budget(rows, "val_miou")
    assert arm == ("50% synthetic", "lambda_div = 0")
    val = paired_by_budget(rows, "val_miou")[arm]
    assert sorted(val) == [360, 720, 1440, 2880]
    assert val[360].mean_diff == pytest.approx(0.05) and val[360].ci_low == pytest.approx(0.05)
    assert val[1440].mean_diff == pytest.approx(0.021)
    test = paired_by_budget(rows, "miou")[arm][2880]
    # test Δ = 0.02 + 0.01 * seed: mean 0.03, s = 0.01, t_{0.975,2} s / sqrt 3 = 0.0248414
    assert test.mean_diff == pytest.approx(0.03)
    assert (test.ci_low, test.ci_high) == pytest.approx((0.0051586, 0.0548414), abs=1e-6)
    assert test.n_improved == 3


def test_the_report_of_a_curve(tmp_path: Path) -> None:
    _study(tmp_path)
    report = summarise(tmp_path).read_text()
    assert "## Learning curve (segmentation step budgets)" in report
    assert "Plateau (the smallest budget at which doubling" in report and "**1440 steps**" in report
    row = next(
        ln
        for ln in report.splitlines()
        if ln.startswith("| 50% synthetic | lambda_div = 0 | 2880 |")
    )
    cells = row.strip("| ").split(" | ")
    assert cells[3] == "3" and cells[4] == "0.5050 ± 0.0100"
    assert cells[5] == "0.4950 ± 0.0100"  # val end: the curve's last step (v - 0.01)
    assert cells[8] == "+0.0300 [+0.0052, +0.0548] 3/3"
    assert "raises no arm's mean validation mIoU (val end) by 0.01" in report
    for budget in (360, 720, 1440, 2880):
        assert f"## At {budget} steps" in report
    for png in ("learning_curve.png", "delta_vs_steps.png", "miou_vs_ratio.png"):
        assert (tmp_path / png).stat().st_size > 1000
    rows = list(csv.DictReader((tmp_path / "summary.csv").read_text().splitlines()))
    assert {"steps", "val_miou", "val_end", "scored_step"} <= set(rows[0])
    assert "val_curve" not in rows[0]
    assert sorted({int(r["steps"]) for r in rows}) == [360, 720, 1440, 2880]
    # every run, with the checkpoint its numbers come from
    runs = report[report.index("## Runs (the weights each number comes from)") :].splitlines()
    lines = [ln for ln in runs if ln.startswith("| real-only") or ln.startswith("| 50%")]
    assert len(lines) == len(rows) == 24
    v = VAL[(0.5, 0.0)][720][1]  # 360 steps: 6 runs; at 720, real-only seeds 0-2 first
    assert lines[10] == (
        f"| 50% synthetic | lambda_div = 0 | 720 | 1 | best | 360 | {v:.4f} | "
        f"{_test_miou(0.5, v, 1):.4f} |"
    )


def test_the_scored_checkpoint_record() -> None:
    curve = [(120, 0.30), (240, 0.42), (360, 0.42), (480, 0.40)]
    best = scored_record("best", "/run/best-step240.ckpt", 480, curve)
    assert (best["scored"], best["scored_step"], best["scored_val_miou"]) == ("best", 240, 0.42)
    assert best["val_curve"] == [[120, 0.30], [240, 0.42], [360, 0.42], [480, 0.40]]
    last = scored_record("last", "/run/best-step240.ckpt", 480, curve)
    assert (last["scored"], last["scored_step"], last["scored_val_miou"]) == ("last", 480, 0.40)
    # no validation at the last step, or none at all: the step, no score
    assert scored_record("last", "", 500, curve)["scored_val_miou"] is None
    none = scored_record("best", "", 10, [])
    assert (none["scored"], none["scored_step"], none["val_curve"]) == ("last", 10, [])


def test_the_plateau_rise_is_paired_by_seed_when_budgets_ran_different_seeds(
    tmp_path: Path,
) -> None:
    """2880 with seeds 0-2, 5760 with seeds 0-1 only: the rise is the mean over seeds 0
    and 1 (+0.005: a plateau at 2880), not the difference of the means (+0.015, which the
    lower seed 2 left out would make)."""
    val = {arm: dict(b) for arm, b in VAL.items()}
    for arm in val:
        val[arm][720] = tuple(v + 0.05 for v in val[arm][720])  # no plateau before 2880
        val[arm][1440] = tuple(v + 0.05 for v in val[arm][1440])
        val[arm][2880] = (0.60, 0.60, 0.56)
    _study(tmp_path, val)
    rows = [r for r in _rows(tmp_path) if not (r["steps"] == 2880 and r["seed"] == 2)]
    for arm in val:  # 5760: seeds 0 and 1 only, each +0.005
        for seed in (0, 1):
            row = next(
                r
                for r in rows
                if r["steps"] == 2880 and r["seed"] == seed and (r["ratio"], r["lambda_div"]) == arm
            )
            rows.append({**row, "steps": 5760, "val_miou": row["val_miou"] + 0.005})
    rows += [r for r in _rows(tmp_path) if r["steps"] == 2880 and r["seed"] == 2]
    assert plateau_budget(rows) == 2880


def test_a_summary_csv_reads_back_as_the_rows_it_was_written_from(tmp_path: Path) -> None:
    """read_summary undoes summary.csv: the same rows, typed, with their source (a study
    run in parts on different machines reports the committed runs beside new ones)."""
    from synthsat.report import read_summary

    _study(tmp_path)
    rows = _rows(tmp_path)
    summarise(tmp_path)
    back = read_summary(tmp_path / "summary.csv")
    assert back == [{k: v for k, v in r.items() if k != "val_curve"} for r in rows]
    assert {r["source"] for r in back} == {"", "lambda_div = 0"}
    assert plateau_budget(back) == plateau_budget(rows) == 1440


def test_the_end_of_a_curve_is_the_mean_of_its_last_quarter() -> None:
    curve = [[120 * i, 0.40 + 0.01 * i] for i in range(1, 13)]  # to step 1440
    # steps above 1080: 1200, 1320, 1440 -> 0.50, 0.51, 0.52
    assert end_of_curve(curve) == pytest.approx(0.51)
    stopped = [[120, 0.3], [240, 0.5], [360, 0.45], [480, 0.44]]  # early stopped at 480
    assert end_of_curve(stopped) == pytest.approx(0.44)  # only 480 is above 360
    assert end_of_curve([[360, 0.4]]) == pytest.approx(0.4)
    assert end_of_curve([]) is None and end_of_curve(None) is None


def test_the_plateau_compares_the_curves_level_not_the_best_of_more_noisy_validations(
    tmp_path: Path,
) -> None:
    """At 2880 steps each run validates twice as often as at 1440, and one lucky
    validation lifts its best by 0.03 while the level it trains to rises by 0.002: the
    best says "still rising", the end of the curve says "plateau at 1440"."""
    _study(tmp_path)
    rows = _rows(tmp_path)
    for r in rows:
        if r["steps"] == 2880:
            r["val_miou"] = r["val_miou"] + 0.03  # a noisy maximum
    assert plateau_budget(rows, key="val_miou") is None
    assert plateau_key(rows) == "val_end" and plateau_budget(rows) == 1440
    # a run of 1440 without its curve (an older summary.csv): that pair compares the best
    next(r for r in rows if r["steps"] == 1440)["val_end"] = None
    assert plateau_key(rows) == "val_miou" and plateau_budget(rows) is None
    # ... while a pair whose runs all recorded their curve compares the ends: 720 -> 1440
    # does not enter, 1440 -> 2880 does once 360 / 720 stand without curves
    for r in rows:
        r["val_end"] = None if r["steps"] in (360, 720) else r["val_end"] or r["val_miou"] - 0.01
    assert plateau_budget(rows) == 1440


def test_plateau_sentence_tells_one_cap_from_not_reached() -> None:
    """A study at one cap cannot be judged by the doubling rule; budgets a doubling apart
    without a plateau are 'not reached'; a plateau is named with its budget."""
    from synthsat.report.curve import plateau_sentence

    one_cap = [{"steps": 11520}, {"steps": 11520}]
    assert "**not judged here**" in plateau_sentence("r", None, one_cap)
    assert "(11520)" in plateau_sentence("r", None, one_cap)
    close = [{"steps": 1000}, {"steps": 1500}]  # no budget has its double beside it
    assert "**not judged here**" in plateau_sentence("r", None, close)
    doubled = [{"steps": 720}, {"steps": 1440}]
    reached = plateau_sentence("r", None, doubled)
    assert reached == "Plateau (r): **not reached** within these budgets."
    assert plateau_sentence("r", 720, doubled) == "Plateau (r): **720 steps**."
