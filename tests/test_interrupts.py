"""A SIGTERM stops fit with the step reached on its exception, wherever it lands (in a
training step or between validation batches), and the job exits 143 naming that step
(:mod:`synthsat.jobs.interrupts`, :class:`synthsat.callbacks.StopOnSigterm`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.utilities.exceptions import SIGTERMException

from synthsat.callbacks import StopOnSigterm
from synthsat.jobs.interrupts import INTERRUPTED_EXIT, exit_status


class SigtermAt(L.Callback):
    """Marks the trainer as having received SIGTERM at a chosen point (as Lightning's
    signal handler does)."""

    def __init__(self, *, train_step: int | None = None, in_validation: bool = False) -> None:
        self.train_step = train_step
        self.in_validation = in_validation

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.train_step:
            trainer._signal_connector.received_sigterm = True

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.in_validation and not trainer.sanity_checking and trainer.global_step >= 3:
            trainer._signal_connector.received_sigterm = True


def _trainer(tmp_path: Path, callbacks: list[L.Callback], **budget: Any) -> L.Trainer:
    """A quiet CPU trainer of 10 batches per epoch, validating as ``budget`` says."""
    return L.Trainer(
        default_root_dir=tmp_path,
        limit_train_batches=10,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        **budget,
    )


def _fit(tmp_path: Path, marker: SigtermAt) -> SIGTERMException:
    trainer = _trainer(
        tmp_path,
        [marker, StopOnSigterm()],
        max_steps=20,
        val_check_interval=3,
        limit_val_batches=4,
        enable_checkpointing=False,
    )
    with pytest.raises(SIGTERMException) as caught:
        trainer.fit(BoringModel())
    return caught.value


def test_a_sigterm_in_a_training_step_stops_after_it_with_its_step(tmp_path: Path) -> None:
    stop = _fit(tmp_path, SigtermAt(train_step=5))
    assert stop.step == 6  # the step in progress finished, not the epoch (10 steps)


def test_a_sigterm_during_validation_carries_the_step_too(tmp_path: Path) -> None:
    """Lightning raises its own exception between evaluation batches; the callback stamps
    the step on it (a CI run once printed "interrupted by SIGTERM" with no step)."""
    stop = _fit(tmp_path, SigtermAt(in_validation=True))
    assert stop.step == 3  # the validation after step 3


def test_the_job_exits_143_naming_the_step(capsys: pytest.CaptureFixture[str]) -> None:
    stop = SIGTERMException()
    stop.step = 7  # type: ignore[attr-defined]
    ended = exit_status(stop)
    assert ended.code == INTERRUPTED_EXIT == 143
    assert capsys.readouterr().err == (
        "error: interrupted by SIGTERM at step 7: the job did not finish (exit 143); "
        "rerun it to resume from its last checkpoint\n"
    )
    other = SystemExit(3)
    assert exit_status(other) is other  # any other exit is kept


class FlatScore(BoringModel):
    """A model whose validation score never improves after its first validation."""

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val/score", 1.0)


class LastStep(L.Callback):
    """The step held by ``last.ckpt`` at the start of each training step."""

    def __init__(self, path: Path) -> None:
        self.path, self.seen = path, []

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if self.path.exists():
            step = torch.load(self.path, map_location="cpu", weights_only=True)["global_step"]
            self.seen.append((trainer.global_step, step))


@pytest.mark.parametrize("resumable", [True, False], ids=["resumable", "lightning"])
def test_last_ckpt_follows_every_validation(tmp_path: Path, resumable: bool) -> None:
    """A run stopped after validations that did not improve resumes from the last of
    them: last.ckpt holds the latest validation's step, not the best one's (Lightning's
    own ModelCheckpoint keeps step 2, the only improvement)."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from omegaconf import OmegaConf

    from synthsat.jobs.runtime import build_callbacks

    target = "lightning.pytorch.callbacks.ModelCheckpoint"
    settings = {"dirpath": str(tmp_path), "save_last": True, "save_top_k": 1}
    conf = {**settings, "monitor": "val/score", "mode": "max", "_target_": target}
    (checkpoint,) = build_callbacks(OmegaConf.create({"callbacks": {"checkpoint": conf}}))
    if not resumable:
        checkpoint = ModelCheckpoint(**settings, monitor="val/score", mode="max")
    recorder = LastStep(tmp_path / "last.ckpt")
    trainer = _trainer(
        tmp_path, [recorder, checkpoint], max_steps=7, val_check_interval=2, limit_val_batches=1
    )
    trainer.fit(FlatScore())
    if resumable:
        assert type(checkpoint).__name__ == "ResumableCheckpoint"
        assert recorder.seen == [(2, 2), (3, 2), (4, 4), (5, 4), (6, 6)]
    else:
        assert recorder.seen == [(2, 2), (3, 2), (4, 2), (5, 2), (6, 2)]
