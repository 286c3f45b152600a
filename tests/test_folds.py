"""The Dubai folds (``experiment=dubai_folds*``, issue 24 deliverable 6): each fold tests
on its own tile group, validates on another, trains everything else on the rest, and its
every stage (the generator and the controls included) sees only that fold's split."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from synthsat import config_dir
from synthsat.study.grid import seg_label
from synthsat.study.plan import study_plan

FOLDS = ("dubai_folds", "dubai_folds_test4", "dubai_folds_test5")
GROUPS = {f"tile{g}" for g in range(1, 9)}


def _plan(experiment: str, tmp_path: Path):  # noqa: ANN202 (a StudyPlan and its config)
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("pipeline", overrides=[f"experiment={experiment}", f"paths.root={tmp_path}"])
        return study_plan(cfg, "dubai"), cfg


def _splits(overrides: list[str]) -> dict[str, set[str]]:
    """The split the stage's overrides give (the data's own splits.json without one)."""
    given = [o for o in overrides if o.startswith("data.source.splits=")]
    if not given:
        return {"train": GROUPS - {"tile3", "tile8"}, "val": {"tile3"}, "test": {"tile8"}}
    (override,) = given
    splits = OmegaConf.from_dotlist([override]).data.source.splits
    return {k: set(v) for k, v in splits.items()}


@pytest.mark.parametrize("experiment", FOLDS)
def test_every_stage_of_a_fold_sees_its_own_split(experiment: str, tmp_path: Path) -> None:
    plan, _ = _plan(experiment, tmp_path)
    stages = [s for wave in plan.waves.values() for s in wave]
    kinds = sorted({s.kind for s in stages})
    assert kinds == ["generator", "segmentation", "synthesis"]
    splits = {str(_splits(list(s.overrides))) for s in stages}
    assert len(splits) == 1  # one split for the generator, syntheses and every run
    split = _splits(list(stages[0].overrides))
    assert split["train"] | split["val"] | split["test"] == GROUPS
    assert len(split["val"]) == len(split["test"]) == 1 and len(split["train"]) == 6
    assert not (split["train"] & split["val"] or split["train"] & split["test"])
    assert not split["val"] & split["test"]
    # the headline arms with 5 paired seeds, under the bf16 preset at the capped budget
    labels = {seg_label(**r) for r in plan.runs}
    for seed in range(5):
        assert {
            f"r0-replace-steps11520-seed{seed}",
            f"r0.5-replace-lambda0-steps11520-seed{seed}",
            f"r0.5-replace-classcolour-steps11520-seed{seed}",
        } <= labels
    assert len(labels) == 15
    assert "trainer.precision=bf16-mixed" in plan.waves["segmentation"][0].overrides


def test_the_folds_test_different_groups_into_their_own_results(tmp_path: Path) -> None:
    tests, names = set(), set()
    for experiment in FOLDS:
        plan, cfg = _plan(experiment, tmp_path)
        (test,) = _splits(list(plan.waves["generator"][0].overrides))["test"]
        tests.add(test)
        names.add(plan.results.name)
        assert cfg.experiment_name == plan.results.name
    assert tests == {"tile8", "tile4", "tile5"}
    assert names == set(FOLDS)  # each fold's results under its own experiment name
