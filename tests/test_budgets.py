"""Budgets are steps: a ``trainer.max_time`` that stops a training job short of its
``trainer.max_steps`` fails the job (``BudgetNotMet``), so that every generator of a
study trains for the same number of steps on a busy machine as on an idle one; the
report lists each generator's steps against its budget."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from conftest import compose_job, tiny_generator_overrides, tiny_segmentation_overrides
from hydra import compose, initialize_config_dir

from synthsat.errors import USER_ERRORS, BudgetNotMet
from synthsat.report import summarise

CONF = Path(__file__).resolve().parents[1] / "conf"


class SlowSteps(L.Callback):
    """Each training step lasts at least 1.2 s, so a 1 s ``max_time`` surely runs out
    within the first two steps."""

    def on_train_batch_end(self, *_: Any) -> None:
        time.sleep(1.2)


SLOW = "+callbacks.slow._target_=test_budgets.SlowSteps"


def _generator(toy_root: Path, tmp_path: Path, *overrides: str) -> Any:
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(
            "train_generator",
            overrides=[
                *tiny_generator_overrides(toy_root, tmp_path, "gen"),
                "callbacks.samples.every_n_steps=0",
                *overrides,
            ],
        )


def test_a_time_cap_that_cuts_the_step_budget_fails_the_generator(
    toy_root: Path, tmp_path: Path
) -> None:
    """max_time 1 s, max_steps 5, steps of >= 1.2 s: BudgetNotMet names both settings and
    the step reached; no metrics.json (the stage is not done), last.ckpt kept to resume."""
    from synthsat.jobs.train_generator import train

    cfg = _generator(
        toy_root, tmp_path, "trainer.max_steps=5", "trainer.max_time=00:00:00:01", SLOW
    )
    with pytest.raises(BudgetNotMet) as stopped:
        train(cfg)
    message = str(stopped.value)
    step = torch.load(
        tmp_path / "gen" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )["global_step"]
    assert 1 <= step < 5
    assert f"ran out at step {step} of trainer.max_steps=5" in message
    assert message.startswith("trainer.max_time=1 s") and "raise trainer.max_time" in message
    assert not (tmp_path / "gen" / "metrics.json").exists()
    assert BudgetNotMet in USER_ERRORS  # the entry points print it as one line, exit 2


def test_the_step_budget_governs_when_the_cap_is_not_reached(
    toy_root: Path, tmp_path: Path
) -> None:
    """The same job with a cap of an hour trains its 3 steps and records the budget."""
    from synthsat.jobs.train_generator import train

    metrics = train(
        _generator(toy_root, tmp_path, "trainer.max_steps=3", "trainer.max_time=00:01:00:00")
    )
    assert (metrics["steps"], metrics["max_steps"]) == (3, 3)


def test_a_time_cap_that_cuts_a_segmentation_run_fails_it(toy_root: Path, tmp_path: Path) -> None:
    from synthsat.jobs.train_segmentation import train

    cfg = compose_job(
        "train_segmentation",
        [
            *tiny_segmentation_overrides(toy_root, tmp_path, "seg"),
            "trainer.max_steps=6",
            "trainer.max_time=00:00:00:01",
            SLOW,
        ],
    )
    with pytest.raises(BudgetNotMet, match="of trainer.max_steps=6: the step budget was not met"):
        train(cfg)
    assert not (tmp_path / "seg" / "metrics.json").exists()


def test_the_report_lists_each_generators_steps_and_budget(tmp_path: Path) -> None:
    for lam, steps, fit in ((2.0, 700, 1500.0), (0.0, 700, 1020.0)):
        d = tmp_path / "generator" / f"lambda{lam:g}"
        d.mkdir(parents=True)
        (d / "done.json").write_text(json.dumps({"kind": "generator", "params": {}}))
        metrics = {"lambda_div": lam, "steps": steps, "max_steps": 700, "fit_time_s": fit}
        (d / "metrics.json").write_text(json.dumps(metrics))
    report = summarise(tmp_path).read_text()
    table = report[report.index("## Generators") :].splitlines()
    assert table[2:6] == [
        "| lambda_div | steps | budget | fit time (min) |",
        "|---|---|---|---|",
        "| 0 | 700 | 700 | 17.0 |",
        "| 2 | 700 | 700 | 25.0 |",
    ]
