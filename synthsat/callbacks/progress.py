"""Training progress: a log line every N steps when there is no progress bar
(:class:`ProgressLog`), and the progress bar on a terminal counting steps under a step
budget (:func:`step_progress_bar`: :class:`StepRichProgressBar`, or
:class:`StepTQDMProgressBar` without rich)."""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

log = logging.getLogger(__name__)

#: The clock of :class:`ProgressLog`'s steps per second (a test replaces it).
_clock = time.perf_counter


def progress_line(
    step: int, max_steps: int, metrics: Mapping[str, float], steps_per_s: float
) -> str:
    """``step 120/520, train/loss 0.4312, 3.21 it/s`` (``step 120`` when ``max_steps`` < 0)."""
    parts = [f"step {step}/{max_steps}" if max_steps > 0 else f"step {step}"]
    parts += [f"{name} {value:.4g}" for name, value in metrics.items()]
    parts.append(f"{steps_per_s:.3g} it/s")
    return ", ".join(parts)


class ProgressLog(L.Callback):
    """Log a line every ``every_n_steps`` training steps, when Lightning shows no progress
    bar (``trainer.enable_progress_bar``: null shows one only on a terminal; see
    :func:`synthsat.jobs.runtime.progress_bar`), on the global-zero rank.

    A line reads ``step k/max_steps, <metric> <value>, ..., <rate> it/s``
    (:func:`progress_line`): the metrics are the last logged values of ``metrics``
    (a metric logged per step and per epoch is read as ``<name>_step``); ``it/s`` is
    training steps (``trainer.global_step``) per second since the previous line, or
    since training started.

    Args:
        every_n_steps: training steps between lines (0: never).
        metrics: names of the logged metrics shown (those not logged yet are left out).
    """

    def __init__(self, every_n_steps: int = 50, metrics: Sequence[str] = ("train/loss",)) -> None:
        if every_n_steps < 0:
            raise ValueError(f"need every_n_steps >= 0, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.metrics = list(metrics)
        self._active = False
        self._last: tuple[int, float] = (0, 0.0)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._active = bool(
            self.every_n_steps and trainer.progress_bar_callback is None and trainer.is_global_zero
        )
        self._last = (trainer.global_step, _clock())

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        if not self._active or step == self._last[0] or step % self.every_n_steps:
            return
        now = _clock()
        rate = (step - self._last[0]) / max(now - self._last[1], 1e-9)
        self._last = (step, now)
        log.info("%s", progress_line(step, trainer.max_steps, self.values(trainer), rate))

    def values(self, trainer: L.Trainer) -> dict[str, float]:
        """The last logged values of :attr:`metrics` (by name; missing ones left out)."""
        found = trainer.callback_metrics
        values = {}
        for name in self.metrics:
            for key in (f"{name}_step", name):
                if key in found:
                    values[name] = float(found[key])
                    break
        return values


def step_budget(trainer: L.Trainer) -> int | None:
    """The trainer's step budget (``max_steps`` > 0), or None when training is bounded by
    epochs (or time) alone."""
    steps = int(trainer.max_steps)
    return steps if steps > 0 else None


def train_description(trainer: L.Trainer) -> str:
    """The training bar's label: ``Step`` under a step budget (the bar counts training
    steps up to ``max_steps``), else ``Epoch k/last`` (``Epoch k`` without an epoch
    limit: Lightning's reads ``Epoch 0/-2`` under ``max_epochs: -1``)."""
    if step_budget(trainer) is not None:
        return "Step"
    epochs = trainer.max_epochs
    last = f"/{epochs - 1}" if epochs is not None and epochs > 0 else ""
    return f"Epoch {trainer.current_epoch}{last}"


class _StepBudgetBar(L.Callback, ABC):
    """What the step bars share: after each training batch under a step budget
    (``max_steps`` > 0) the bar shows the fit's step (:meth:`show_step`); under an epoch
    budget it is the Lightning bar's own update (the bar class that follows this one in
    the subclass's bases)."""

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if step_budget(trainer) is None:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        self.show_step(trainer, pl_module)

    @abstractmethod
    def show_step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Shows ``trainer.global_step`` of the step budget, with the metrics."""


class StepRichProgressBar(_StepBudgetBar, RichProgressBar):
    """Lightning's Rich bar whose training bar, under a step budget (``max_steps`` > 0),
    counts the training steps of the whole fit up to ``max_steps`` (``Step 37/360``) instead
    of the batches of each epoch under ``Epoch k/-2``; under an epoch budget it is
    Lightning's bar, labelled by :func:`train_description`."""

    def _get_train_description(self, current_epoch: int) -> str:
        return train_description(self.trainer)

    @property
    def total_train_batches(self) -> int | float:
        budget = step_budget(self.trainer)
        return budget if budget is not None else super().total_train_batches

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if step_budget(trainer) is not None and self.train_progress_bar_id is not None:
            return  # one bar for the whole fit: not reset at each epoch
        super().on_train_epoch_start(trainer, pl_module)
        if step_budget(trainer) is not None:
            self._update(self.train_progress_bar_id, trainer.global_step)  # a resumed fit

    def show_step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.is_disabled and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()


class StepTQDMProgressBar(_StepBudgetBar, TQDMProgressBar):
    """Lightning's TQDM bar counting training steps under a step budget, as
    :class:`StepRichProgressBar` (for environments without rich)."""

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        budget = step_budget(trainer)
        if budget is None:
            super().on_train_epoch_start(trainer, *args)
            self.train_progress_bar.set_description(train_description(trainer))
            return
        if self.train_progress_bar.total != budget:  # once per fit
            self.train_progress_bar.reset(total=budget)
            self.train_progress_bar.n = trainer.global_step
            self.train_progress_bar.set_description(train_description(trainer))

    def show_step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        bar = self.train_progress_bar
        if self._should_update(trainer.global_step, bar.total):
            bar.n = trainer.global_step
            bar.refresh()
            bar.set_postfix(self.get_metrics(trainer, pl_module))


def step_progress_bar(leave: bool = False) -> RichProgressBar | TQDMProgressBar:
    """The training jobs' progress bar (added by :func:`synthsat.jobs.runtime.build_trainer`
    when ``trainer.enable_progress_bar`` is on and ``callbacks`` holds no bar): Rich's where
    rich is installed (as Lightning's default), else TQDM's; either counts steps under a
    step budget."""
    from lightning.pytorch.utilities.imports import _RICH_AVAILABLE

    if _RICH_AVAILABLE:
        return StepRichProgressBar(leave=leave)
    return StepTQDMProgressBar(leave=leave)
