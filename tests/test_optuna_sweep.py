"""The Optuna search of conf/hparams_search/segmentation_optuna.yaml, as the README gives it:
trials are train_segmentation jobs whose main() returns the validation mIoU of the tested
checkpoint, maximised: the test mIoU never chooses."""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml
from conftest import real_as_synthetic, segmentation_multirun


def test_optuna_search_maximises_the_validation_miou(toy_root: Path, tmp_path: Path) -> None:
    synthetic = real_as_synthetic(toy_root, tmp_path / "synthetic")
    work = tmp_path / "work"
    work.mkdir()
    sweep, runs = segmentation_multirun(
        work,
        toy_root,
        "hparams_search=segmentation_optuna",
        f"mix.source={synthetic}",
        "hydra.sweeper.n_trials=2",
    )
    assert [r.parent.name for r in runs] == ["0", "1"]
    trials = []
    for run in runs:
        overrides = yaml.safe_load((run.parent / ".hydra" / "overrides.yaml").read_text())
        params = dict(o.split("=", 1) for o in overrides if o.split("=")[0] in PARAMS)
        metrics = json.loads(run.read_text())
        assert float(params["mix.ratio"]) == metrics["mix"]["ratio"]  # the trial's own value
        assert metrics["scored_val_miou"] == max(v for _, v in metrics["val_curve"])
        trials.append(({k: float(v) for k, v in params.items()}, metrics["scored_val_miou"]))
    for params, _ in trials:
        assert set(params) == set(PARAMS)
        assert 1e-4 <= params["segmentation.lr"] <= 1e-2 and 0 <= params["mix.ratio"] <= 1
    assert trials[0][0] != trials[1][0]  # two points of the search space

    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna"
    mious = [miou for _, miou in trials]
    assert mious[0] != mious[1]  # distinct objectives: maximising and minimising differ
    best_params, best = max(trials, key=lambda t: t[1])
    assert math.isclose(results["best_value"], max(mious), rel_tol=1e-9)
    assert {k: float(v) for k, v in results["best_params"].items()} == best_params


#: The search space of conf/hparams_search/segmentation_optuna.yaml.
PARAMS = ("segmentation.lr", "mix.ratio")
