"""A SIGTERM stops fit with the step reached on its exception, wherever it lands (in a
training step or between validation batches), and the job exits 143 naming that step
(:mod:`synthsat.interrupts`, :class:`synthsat.callbacks.StopOnSigterm`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.utilities.exceptions import SIGTERMException

from synthsat.callbacks import StopOnSigterm
from synthsat.interrupts import INTERRUPTED_EXIT, exit_status


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


def _fit(tmp_path: Path, marker: SigtermAt) -> SIGTERMException:
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_steps=20,
        limit_train_batches=10,
        val_check_interval=3,
        limit_val_batches=4,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[marker, StopOnSigterm()],
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
