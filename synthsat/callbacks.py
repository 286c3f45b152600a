"""Lightning callbacks of the training jobs (configured in ``conf/callbacks/``).

* :class:`GeneratorSamples` — the generator's sample grids during training.
* :class:`SegmentationTestReport` — a segmentation test's confusion matrix and panels (W&B).
* :class:`ProgressLog` — a log line every N training steps when there is no progress bar.
* :func:`step_progress_bar` — the progress bar on a terminal, counting steps under a step
  budget (:class:`StepRichProgressBar`, or :class:`StepTQDMProgressBar` without rich).
* :class:`ValidationCurve` — every validation's score by step (a run's learning curve).
* :class:`StopOnSigterm` — training stops after the step in progress on SIGTERM (added
  to every job's trainer by :func:`synthsat.runtime.build_trainer`).

The checkpoint callbacks live in :mod:`synthsat.tasks.checkpoints`.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

from synthsat.atomic import write_with
from synthsat.tracking import log_confusion_matrix, log_images, wandb_loggers

log = logging.getLogger(__name__)

#: The clock of :class:`ProgressLog`'s steps per second (a test replaces it).
_clock = time.perf_counter


class GeneratorSamples(L.Callback):
    """Write a :class:`~synthsat.tasks.generator.GeneratorTask`'s sample grid at the start
    of training (after the first generator step), every ``every_n_steps`` generator steps
    and at the end of training to ``<run dir>/<dirname>/step_NNNNNN.png`` and to the image
    loggers (W&B, key ``samples``), on the global-zero rank.

    A grid is drawn after the training batch whose generator update reached the step
    (with ``d_steps_per_g > 1`` some batches update only the discriminator), from that
    batch's masks (:func:`synthsat.figures.generator_grid`); the grid at the end, unless
    the last step already had one, from the masks of the last batch that updated the
    generator. Drawing changes neither the weights nor the global random state, so runs
    train the same with or without it.

    Args:
        every_n_steps: generator steps between grids (0: no grids at all).
        rows: masks shown, one per row.
        samples: samples per mask (columns after the mask and the real image).
        seed: seed of the samples' style codes and noise (the same in every grid).
        dirname: folder of the grids in the run directory.
    """

    def __init__(
        self,
        every_n_steps: int = 250,
        rows: int = 4,
        samples: int = 3,
        seed: int = 0,
        dirname: str = "samples",
    ) -> None:
        if every_n_steps < 0 or rows < 1 or samples < 1:
            raise ValueError(
                f"need every_n_steps >= 0, rows >= 1 and samples >= 1, got "
                f"{every_n_steps}, {rows}, {samples}"
            )
        self.every_n_steps = every_n_steps
        self.rows = rows
        self.samples = samples
        self.seed = seed
        self.dirname = dirname
        self._last_step = -1
        self._drawn = -1  # the step of the last grid (-1: none yet in this fit)
        self._batch: Mapping[str, Any] | None = None  # the last batch that reached a step

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step
        self._drawn = -1
        self._batch = None

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Mapping[str, Any],
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        if step == self._last_step:  # no generator update in this batch
            return
        self._last_step = step
        if not self.every_n_steps or not trainer.is_global_zero:
            return
        self._batch = batch
        if self._drawn < 0 or step % self.every_n_steps == 0:
            self.save(trainer, pl_module, batch)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._batch is not None and self._drawn != trainer.global_step:
            self.save(trainer, pl_module, self._batch)
        self._batch = None

    def save(self, trainer: L.Trainer, task: Any, batch: Mapping[str, Any]) -> Path:
        """Write the grid of ``batch`` for the current step; returns its path."""
        from torchvision.utils import save_image

        from synthsat.figures import generator_grid

        grid = generator_grid(task, batch, self.rows, self.samples, self.seed)
        out = Path(trainer.default_root_dir) / self.dirname
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"step_{trainer.global_step:06d}.png"
        write_with(path, lambda tmp: save_image(grid, tmp, format="png"))
        self._drawn = trainer.global_step
        for logger in trainer.loggers:
            log_images(logger, "samples", [str(path)], step=trainer.global_step)
        return path


class SegmentationTestReport(L.Callback):
    """Log a segmentation test to W&B: the confusion matrix of the test scores (a W&B
    confusion-matrix chart, key ``test/confusion_matrix``) and ``panels`` image | truth |
    prediction panels of the first test chips in loader order (key ``test/panels``).

    Without a W&B logger (``logger=csv``, ``logger=none``) it does nothing. The panels'
    predictions are one more forward pass of the test chips in eval mode, under no_grad:
    the scores and the random state are untouched.

    Args:
        panels: test chips shown (0: none).
    """

    def __init__(self, panels: int = 4) -> None:
        if panels < 0:
            raise ValueError(f"need panels >= 0, got {panels}")
        self.panels = panels
        self._images: list[Any] = []
        self._active = False

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._images = []
        self._active = bool(wandb_loggers(trainer)) and trainer.is_global_zero

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Mapping[str, Any],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        need = self.panels - len(self._images)
        if not self._active or need <= 0:
            return
        import torch

        from synthsat.figures import prediction_panel

        image, mask = batch["image"][:need], batch["mask"][:need]
        with torch.no_grad():
            pred = pl_module.predict_logits(image).argmax(1)  # type: ignore[operator]
        metadata = pl_module.hparams["metadata"]
        for i in range(image.shape[0]):
            self._images.append(prediction_panel(image[i], mask[i], pred[i], metadata))

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._active:
            return
        results = getattr(pl_module, "test_results", None) or {}
        classes = list(pl_module.hparams["metadata"]["classes"])
        for logger in wandb_loggers(trainer):
            if "confusion_matrix" in results:
                log_confusion_matrix(logger, results["confusion_matrix"], classes)
            if self._images:
                captions = [
                    f"test chip {i}: image | truth | prediction" for i in range(len(self._images))
                ]
                log_images(logger, "test/panels", self._images, caption=captions)
        self._images = []


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
    :func:`synthsat.runtime.progress_bar`), on the global-zero rank.

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


class ValidationCurve(L.Callback):
    """Record ``monitor`` (e.g. ``val/miou``) after every validation, by the global step
    it was reached at (sanity checks left out): the run's learning curve on validation
    data, written to its ``metrics.json`` (``val_curve``) beside the step of the scored
    checkpoint.

    Args:
        monitor: the logged metric to record.
    """

    def __init__(self, monitor: str = "val/miou") -> None:
        self.monitor = monitor
        self.curve: list[tuple[int, float]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None:
            return
        step = int(trainer.global_step)
        self.curve = [(s, v) for s, v in self.curve if s != step]  # a resumed run's repeat
        self.curve.append((step, float(value)))

    def state_dict(self) -> dict[str, Any]:
        return {"curve": [list(p) for p in self.curve]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.curve = [(int(s), float(v)) for s, v in state_dict.get("curve", [])]


class StopOnSigterm(L.Callback):
    """Stop training after the step in progress once the job received SIGTERM.

    Lightning notes a SIGTERM (``trainer.received_sigterm``) but trains on to the end of
    the epoch before it raises its ``SIGTERMException``; this raises it after the step,
    carrying the step reached (``.step``), so the job exits at once as interrupted
    (:mod:`synthsat.interrupts`), leaving its ``last.ckpt`` to resume from. Under DDP
    Lightning itself checks after every step, on every rank at once: left to it. When
    Lightning raises first (a SIGTERM during validation stops it between evaluation
    batches), :meth:`on_exception` stamps the step reached on its exception as well.
    """

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.received_sigterm and trainer.world_size == 1:
            from lightning.pytorch.utilities.exceptions import SIGTERMException

            stop = SIGTERMException()
            stop.step = int(trainer.global_step)  # type: ignore[attr-defined]
            raise stop

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(exception, SIGTERMException) and getattr(exception, "step", None) is None:
            exception.step = int(trainer.global_step)  # type: ignore[attr-defined]


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
    """The training jobs' progress bar (added by :func:`synthsat.runtime.build_trainer`
    when ``trainer.enable_progress_bar`` is on and ``callbacks`` holds no bar): Rich's where
    rich is installed (as Lightning's default), else TQDM's; either counts steps under a
    step budget."""
    from lightning.pytorch.utilities.imports import _RICH_AVAILABLE

    if _RICH_AVAILABLE:
        return StepRichProgressBar(leave=leave)
    return StepTQDMProgressBar(leave=leave)
