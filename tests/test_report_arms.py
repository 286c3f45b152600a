"""The study's rows and arms (synthsat.report_arms), on hand-made records."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from synthsat.report.arms import (
    BASELINE,
    CI_LEVEL,
    by_seed,
    end_of_curve,
    group_arms,
    mean_std,
    paired_comparisons,
    run_generator,
    run_label,
    run_params,
    run_source,
    scored_iou,
    source_label,
    source_rank,
    summary_rows,
)
from synthsat.report.stats import compare_paired


def test_mean_and_sample_std() -> None:
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    mean, std = mean_std([1.0, 4.0])
    assert (mean, std) == (2.5, pytest.approx(math.sqrt(4.5)))  # ddof 1, not 1.5
    assert mean_std([0.7]) == (0.7, 0.0)
    as32 = np.array([0.1, 0.2, 0.7], dtype=np.float32)  # computed in float64
    assert mean_std(as32) == mean_std([float(v) for v in as32])


@pytest.mark.parametrize(
    ("params", "label"),
    [
        ({"ratio": 0}, "real-only"),
        ({"ratio": "0.0", "mode": "replace"}, "real-only"),
        ({"ratio": 1}, "synthetic-only"),
        ({"ratio": 0.25}, "25% synthetic"),
        ({"ratio": 0.5, "mode": "replace", "copies": 3}, "50% synthetic"),
        ({"ratio": 1, "mode": "add", "copies": 2}, "synthetic-only x2"),
        ({"ratio": 0, "mode": "add", "copies": 3}, "real + x3 synthetic"),
        ({"ratio": 0.25, "mode": "add", "copies": 2}, "75% real + x2 synthetic"),
    ],
)
def test_run_labels(params: dict[str, Any], label: str) -> None:
    assert run_label(params) == label


@pytest.mark.parametrize(
    ("params", "source"),
    [
        ({"generator": "classtexture", "lambda_div": 0.5}, "classtexture"),
        ({"generator": "", "lambda_div": 0.5}, "lambda_div = 0.5"),
        ({"generator": None}, "gan"),
        ({}, "gan"),
        ({"lambda_div": 2}, "lambda_div = 2"),
        ({"lambda_div": "0.25"}, "lambda_div = 0.25"),
        ({"lambda_div": 0.0, "layouts": "shuffle"}, "lambda_div = 0, layouts = shuffle"),
        ({"layouts": "flip"}, "gan, layouts = flip"),
        ({"lambda_div": 1.0, "layouts": ""}, "lambda_div = 1"),
        ({"generator": "copies", "layouts": "flip"}, "copies"),
    ],
)
def test_source_labels(params: dict[str, Any], source: str) -> None:
    assert source_label(params) == source


def test_run_source_and_generator_columns() -> None:
    real = {"ratio": 0, "generator": "classtexture", "lambda_div": 0.5}
    assert run_source(real) == "" and run_generator(real) == "none"
    gan = {"ratio": 0.5, "lambda_div": 0.5}
    assert run_source(gan) == "lambda_div = 0.5" and run_generator(gan) == "gan"
    control = {"ratio": 1, "generator": "classtexture"}
    assert run_source(control) == "classtexture" and run_generator(control) == "classtexture"
    assert run_generator({"ratio": 0.5, "generator": ""}) == "gan"
    assert run_generator({"ratio": 0.5, "generator": None}) == "gan"


def test_scored_iou_keeps_the_scored_classes_in_their_order() -> None:
    metrics = {
        "iou": {"water": 0.9, "forest": 0.5, "road": 0.1},
        "classes": ["nodata", "water", "forest", "road", "barren"],
        "scored_classes": [3, 1, 4],
    }
    scored = scored_iou(metrics)
    assert scored == {"road": 0.1, "water": 0.9}  # barren has no IoU, nodata and forest
    assert list(scored) == ["road", "water"]  # are not scored
    unscored = {"iou": {"a": 0.2, "b": 0.3}}  # without the class lists: every IoU
    assert scored_iou(unscored) == {"a": 0.2, "b": 0.3}
    assert scored_iou({"iou": {"a": 0.2}, "classes": ["a"]}) == {"a": 0.2}
    assert scored_iou({"iou": {"a": 0.2}, "scored_classes": [0]}) == {"a": 0.2}
    assert scored_iou({"iou": None, "classes": ["a"], "scored_classes": [0]}) == {}
    assert scored_iou({}) == {}


def _rec(params: dict[str, Any], source: dict[str, Any] | None = None) -> dict[str, Any]:
    metrics: dict[str, Any] = {"miou": 0.5}
    if source is not None:
        metrics["synthetic_source"] = source
    return {"dir": "seg/r0.5-seed0", "params": params, "metrics": metrics}


def test_run_params_take_the_source_from_the_tiles_manifest() -> None:
    params = {"ratio": 0.5, "generator": None, "lambda_div": None, "seed": 0}
    # the manifest says the GAN at lambda 0.5, the record did not say
    got = run_params(_rec(params, {"generator": "gan", "lambda_div": 0.5}))
    assert got == {**params, "generator": None, "lambda_div": 0.5}
    assert params["lambda_div"] is None  # the record's own parameters are left alone
    # a manifest without lambda keeps the record's
    got = run_params(_rec({**params, "lambda_div": 2.0}, {"generator": "gan"}))
    assert got["lambda_div"] == 2.0 and got["generator"] is None
    # the manifest's lambda 0 is a lambda, not "unknown": the run is the lambda 0 arm
    got = run_params(_rec(params, {"generator": "gan", "lambda_div": 0.0}))
    assert got["lambda_div"] == 0.0 and source_label(got) == "lambda_div = 0"
    # both say the same lambda
    got = run_params(_rec({**params, "lambda_div": 2}, {"generator": "gan", "lambda_div": 2.0}))
    assert got["lambda_div"] == 2.0
    # a control generator: its name, no lambda whatever the manifest says
    control = {**params, "generator": "classtexture", "lambda_div": 0.5}
    got = run_params(_rec(control, {"generator": "classtexture", "lambda_div": 0.1}))
    assert got["generator"] == "classtexture" and got["lambda_div"] is None
    # a record without a generator (or with "") gets the manifest's: None for the GAN
    got = run_params(_rec({"ratio": 0.5, "seed": 0}, {"generator": "gan", "lambda_div": 1.0}))
    assert got == {"ratio": 0.5, "seed": 0, "generator": None, "lambda_div": 1.0}
    got = run_params(_rec({**params, "generator": ""}, {"generator": "gan"}))
    assert got["generator"] is None
    # no manifest, or one that names no generator: the record as it is
    assert run_params(_rec(params)) == params
    assert run_params(_rec(params, {"lambda_div": 3.0})) == params
    assert run_params({"params": params, "metrics": None}) == params
    assert run_params({"params": params}) == params


def test_run_params_refuse_a_manifest_naming_another_source() -> None:
    params = {"ratio": 0.5, "generator": None, "lambda_div": 0.5, "seed": 0}
    with pytest.raises(ValueError) as err:
        run_params(_rec(params, {"generator": "gan", "lambda_div": 2.0}))
    assert str(err.value) == (
        "seg/r0.5-seed0: its record names the synthetic source 'lambda_div = 0.5', "
        "but the tiles' manifest says 'lambda_div = 2'"
    )
    with pytest.raises(ValueError) as err:
        run_params(_rec(params, {"generator": "classtexture"}))
    assert str(err.value) == (
        "seg/r0.5-seed0: its record names the synthetic source 'lambda_div = 0.5', "
        "but the tiles' manifest says 'classtexture'"
    )
    control = {**params, "generator": "classtexture"}
    with pytest.raises(ValueError, match="^a segmentation stage: its record names"):
        run_params({"params": control, "metrics": {"synthetic_source": {"generator": "gan"}}})


def test_end_of_curve_boundaries() -> None:
    # last step 400: the tail is the steps above 300 (300 itself is not in it)
    assert end_of_curve([[100, 0.1], [200, 0.2], [300, 0.3], [400, 0.5]]) == 0.5
    assert end_of_curve([(301, 0.3), (400, 0.5), (100, 0.9)]) == pytest.approx(0.4)
    assert end_of_curve([("0", "0.25")]) == 0.25  # a single validation at step 0


def test_summary_rows_of_a_record() -> None:
    rec = {
        "params": {
            "ratio": 0.5,
            "mode": "replace",
            "copies": 1,
            "seed": 3,
            "lambda_div": 0.5,
            "steps": "720",
            "layouts": "shuffle",
        },
        "metrics": {
            "miou": 0.61,
            "pixel_accuracy": 0.9,
            "scored_val_miou": 0.6,
            "scored": "best",
            "scored_step": 480,
            "val_curve": [[240, 0.5], [480, 0.6], [720, 0.58]],
            "iou": {"water": 0.8, "road": 0.3},
            "classes": ["water", "road"],
            "scored_classes": [0, 1],
        },
    }
    (row,) = summary_rows([rec])
    assert row == {
        "lambda_div": 0.5,
        "generator": "gan",
        "ratio": 0.5,
        "mode": "replace",
        "copies": 1,
        "seed": 3,
        "label": "50% synthetic",
        "source": "lambda_div = 0.5, layouts = shuffle",
        "layouts": "shuffle",
        "miou": 0.61,
        "pixel_accuracy": 0.9,
        "val_miou": 0.6,
        "scored": "best",
        "scored_step": 480,
        "steps": 720,
        "val_end": 0.58,
        "val_curve": [[240, 0.5], [480, 0.6], [720, 0.58]],
        "iou/water": 0.8,
        "iou/road": 0.3,
    }
    real = {"params": {"ratio": 0, "mode": "replace", "seed": 1}, "metrics": {"miou": 0.4}}
    (row,) = summary_rows([real])
    assert row == {
        "lambda_div": None,
        "generator": "none",
        "ratio": 0,
        "mode": "replace",
        "copies": 0,
        "seed": 1,
        "label": "real-only",
        "source": "",
        "miou": 0.4,
        "pixel_accuracy": None,
        "val_miou": None,
        "scored": None,
        "scored_step": None,
        "val_end": None,
        "val_curve": None,
    }


def test_source_rank() -> None:
    assert source_rank("") == (0, 0.0, "")
    assert source_rank("lambda_div = 0.5") == (1, 0.5, "")
    assert source_rank("lambda_div = 2, layouts = shuffle") == (1, 2.0, "shuffle")
    assert source_rank("classtexture") == (2, 0.0, "classtexture")


def _row(label: str, source: str, ratio: float, mode: str, copies: int, seed: int) -> dict:
    return {
        "label": label,
        "source": source,
        "ratio": ratio,
        "mode": mode,
        "copies": copies,
        "seed": seed,
        "miou": 0.5 + 0.01 * seed,
    }


def test_arms_in_table_order() -> None:
    rows = [
        _row("real + x2 synthetic", "lambda_div = 0", 0.0, "add", 2, 0),
        _row("real + x1 synthetic", "lambda_div = 0", 0.0, "add", 1, 0),
        _row("50% synthetic", "classtexture", 0.5, "replace", 0, 0),
        _row("50% synthetic", "lambda_div = 2", 0.5, "replace", 0, 0),
        _row("50% synthetic", "lambda_div = 0.5, layouts = flip", 0.5, "replace", 0, 0),
        _row("50% synthetic", "lambda_div = 0.5", 0.5, "replace", 0, 0),
        _row("50% synthetic", "lambda_div = 0.5", 0.5, "replace", 0, 1),
        _row("25% synthetic", "lambda_div = 0.5", 0.25, "replace", 5, 0),
        _row("real-only", "", 0.0, "replace", 0, 0),
        _row("real-only", "", 0.0, "replace", 0, 1),
    ]
    groups = group_arms(rows)
    assert list(groups) == [
        ("real-only", ""),
        ("25% synthetic", "lambda_div = 0.5"),  # ratio 0.25 + 0.01 * 5 copies < 0.5
        ("50% synthetic", "lambda_div = 0.5"),
        ("50% synthetic", "lambda_div = 0.5, layouts = flip"),
        ("50% synthetic", "lambda_div = 2"),
        ("50% synthetic", "classtexture"),
        ("real + x1 synthetic", "lambda_div = 0"),
        ("real + x2 synthetic", "lambda_div = 0"),
    ]
    assert [r["seed"] for r in groups[("50% synthetic", "lambda_div = 0.5")]] == [0, 1]
    assert [r["seed"] for r in groups[("real-only", "")]] == [0, 1]


def test_by_seed() -> None:
    rows = [{"seed": "2", "miou": "0.5", "val_miou": 0.4}, {"seed": 0, "miou": 0.25}]
    assert by_seed(rows) == {2: 0.5, 0: 0.25}
    assert by_seed(rows[:1], "val_miou") == {2: 0.4}


def test_paired_comparisons_against_real_only() -> None:
    rows = [
        _row("real-only", "", 0.0, "replace", 0, s) | {"miou": m}
        for s, m in [(0, 0.50), (1, 0.52), (2, 0.48)]
    ]
    rows += [
        _row("50% synthetic", "gan", 0.5, "replace", 0, s) | {"miou": m}
        for s, m in [(0, 0.52), (1, 0.56), (2, 0.47)]
    ]
    rows += [_row("25% synthetic", "gan", 0.25, "replace", 0, 7)]  # no real-only seed 7
    groups = group_arms(rows)
    out = paired_comparisons(groups, n_boot=50, seed=1)
    assert list(out) == [("50% synthetic", "gan")]
    arm = {0: 0.52, 1: 0.56, 2: 0.47}
    expected = compare_paired(arm, {0: 0.50, 1: 0.52, 2: 0.48}, CI_LEVEL, n_boot=50, seed=1)
    assert out[("50% synthetic", "gan")] == expected
    assert (expected.ci_low, expected.ci_high) == pytest.approx((-0.0458494, 0.0791828), abs=1e-7)
    without_baseline = {k: v for k, v in groups.items() if k[0] != BASELINE}
    assert paired_comparisons(without_baseline) == {}


def test_paired_comparisons_hand_seed_and_resamples_to_the_bootstrap() -> None:
    """From ten paired seeds the bootstrap interval is added, drawn with ``n_boot`` and
    ``seed`` as given."""
    base = [_row("real-only", "", 0.0, "replace", 0, s) | {"miou": 0.5} for s in range(10)]
    arm = [
        _row("50% synthetic", "gan", 0.5, "replace", 0, s) | {"miou": 0.5 + 0.01 * (s % 4)}
        for s in range(10)
    ]
    groups = group_arms(base + arm)
    got = paired_comparisons(groups, n_boot=40, seed=3)[("50% synthetic", "gan")]
    diffs = {s: 0.5 + 0.01 * (s % 4) for s in range(10)}
    want = compare_paired(diffs, {s: 0.5 for s in range(10)}, 0.95, n_boot=40, seed=3)
    assert (got.boot_low, got.boot_high) == (want.boot_low, want.boot_high)
    other = compare_paired(diffs, {s: 0.5 for s in range(10)}, 0.95, n_boot=40, seed=4)
    default = compare_paired(diffs, {s: 0.5 for s in range(10)}, 0.95)
    assert (other.boot_low, other.boot_high) != (want.boot_low, want.boot_high)
    assert paired_comparisons(groups)[("50% synthetic", "gan")] == default
