"""The ``debug`` config group of the training jobs (issue 28), as lightning-hydra-template's:
``debug=fdr | overfit | limit | profiler``, each also showing full tracebacks with no
experiment logger; a name that is not a preset fails as Hydra composes the config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_generator_overrides, tiny_segmentation_overrides
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException

CONF = Path(__file__).resolve().parents[1] / "conf"
TRAINING = ("train_segmentation", "train_generator")


def _compose(job: str, *overrides: str) -> object:
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(job, overrides=["paths.root=/tmp/x", *overrides])


@pytest.mark.parametrize("job", TRAINING)
def test_the_debug_presets_set_the_trainer(job: str) -> None:
    plain = _compose(job)
    assert plain.traceback is False and "fast_dev_run" not in plain.trainer
    fdr = _compose(job, "debug=fdr")
    assert fdr.trainer.fast_dev_run is True
    assert (fdr.traceback, dict(fdr.logger), fdr.data.num_workers) == (True, {}, 0)
    overfit = _compose(job, "debug=overfit")
    assert (overfit.trainer.overfit_batches, overfit.trainer.max_steps) == (3, 200)
    limit = _compose(job, "debug=limit")
    assert (limit.trainer.limit_train_batches, limit.trainer.limit_val_batches) == (4, 2)
    assert (limit.trainer.max_steps, limit.trainer.val_check_interval) == (12, 4)
    profiler = _compose(job, "debug=profiler")
    assert profiler.trainer.profiler._target_ == "lightning.pytorch.profilers.SimpleProfiler"


@pytest.mark.parametrize("job", TRAINING)
def test_an_unknown_debug_preset_fails_as_the_config_is_composed(job: str) -> None:
    with pytest.raises(MissingConfigException, match="Could not find 'debug/nope'"):
        _compose(job, "debug=nope")


def test_debug_fdr_runs_a_segmentation_job_on_the_toy_world(toy_root: Path, tmp_path: Path) -> None:
    """One training batch, one validation and one test batch: the run's budget checks and
    final checkpoint go through, and metrics.json says it took 1 step."""
    from synthsat.jobs.train_segmentation import train

    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(
            "train_segmentation",
            overrides=[*tiny_segmentation_overrides(toy_root, tmp_path, "seg"), "debug=fdr"],
        )
    metrics = train(cfg)
    assert (metrics["steps"], metrics["split"]) == (1, "test")
    assert json.loads((tmp_path / "seg" / "metrics.json").read_text())["steps"] == 1
    assert (tmp_path / "seg" / "checkpoints" / "last.ckpt").is_file()


def test_debug_fdr_runs_a_generator_job_on_the_toy_world(toy_root: Path, tmp_path: Path) -> None:
    from synthsat.jobs.train_generator import train

    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(
            "train_generator",
            overrides=[*tiny_generator_overrides(toy_root, tmp_path, "gen"), "debug=fdr"],
        )
    metrics = train(cfg)
    assert (metrics["steps"], metrics["max_steps"]) == (1, 1)
