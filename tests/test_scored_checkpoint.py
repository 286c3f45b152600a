"""Which weights a segmentation run scores on the test tiles, and that ``metrics.json``
names them: the best validation checkpoint (``test_ckpt=best``) or the final weights
(``test_ckpt=last``), in a run whose two validations score differently."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from conftest import compose_job, tiny_segmentation_overrides

from synthsat.jobs.train_segmentation import train

STEPS, EVERY = 6, 3  # validations at steps 3 and 6


class SpoilFinalWeights(L.Callback):
    """After the last training step, every weight of the model is set to 0: the final
    weights predict one class everywhere, so the final validation scores below the first
    one and the best checkpoint is not the last."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        if trainer.global_step == trainer.max_steps:
            with torch.no_grad():
                for tensor in [*pl_module.parameters(), *pl_module.buffers()]:
                    if tensor.is_floating_point():
                        tensor.zero_()


def _run(toy_root: Path, tmp_path: Path, test_ckpt: str) -> dict[str, Any]:
    run = tmp_path / test_ckpt
    cfg = compose_job(
        "train_segmentation",
        [
            *tiny_segmentation_overrides(toy_root, tmp_path, test_ckpt),
            "data.batch_size=8",
            f"trainer.max_steps={STEPS}",
            f"trainer.val_check_interval={EVERY}",
            "trainer.check_val_every_n_epoch=null",
            "+callbacks.spoil._target_=test_scored_checkpoint.SpoilFinalWeights",
            f"test_ckpt={test_ckpt}",
            "seed=0",
        ],
    )
    train(cfg)
    return json.loads((run / "metrics.json").read_text())


@pytest.fixture(scope="module")
def runs(toy_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The same seeded run twice, scoring the best checkpoint and the last weights."""
    tmp = tmp_path_factory.mktemp("scored")
    return {which: _run(toy_root, tmp, which) for which in ("best", "last")}


def test_the_two_validations_differ(runs: dict[str, dict[str, Any]]) -> None:
    """The premise of the other tests: the same curve in both runs, best at step 3."""
    curve = runs["best"]["val_curve"]
    assert [s for s, _ in curve] == [EVERY, STEPS]
    assert curve[0][1] > curve[1][1]
    assert runs["last"]["val_curve"] == curve


def test_best_scores_the_best_validation_checkpoint(runs: dict[str, dict[str, Any]]) -> None:
    """``test_ckpt=best``: the checkpoint of step 3 is scored, and the record names it,
    its step and its validation mIoU; the file holds the weights of that step."""
    best, curve = runs["best"], runs["best"]["val_curve"]
    ckpt = Path(best["checkpoint"])
    assert ckpt.name == f"best-step{EVERY}.ckpt"
    assert (best["scored"], best["scored_step"]) == ("best", EVERY)
    assert best["scored_val_miou"] == pytest.approx(curve[0][1])
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"] == EVERY


def test_last_scores_the_final_weights(runs: dict[str, dict[str, Any]]) -> None:
    """``test_ckpt=last``: the final (spoilt) weights are scored, ``last.ckpt`` is named,
    and their test score differs from the best checkpoint's."""
    best, last, curve = runs["best"], runs["last"], runs["last"]["val_curve"]
    assert Path(last["checkpoint"]).name == "last.ckpt"
    assert (last["scored"], last["scored_step"]) == ("last", STEPS)
    assert last["scored_val_miou"] == pytest.approx(curve[1][1])
    assert last["miou"] < best["miou"]
    state = torch.load(last["checkpoint"], map_location="cpu", weights_only=True)
    assert state["global_step"] == STEPS
    assert all(not v.any() for v in state["state_dict"].values() if v.is_floating_point())
