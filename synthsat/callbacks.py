"""Lightning callbacks of the training jobs (configured in ``conf/callbacks/``).

* :class:`GeneratorSamples` — the generator's sample grids during training.
* :class:`ProgressLog` — a log line every N training steps when there is no progress bar.

The checkpoint callbacks live in :mod:`synthsat.tasks.checkpoints`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L

from synthsat.atomic import write_with

log = logging.getLogger(__name__)

#: The clock of :class:`ProgressLog`'s steps per second (a test replaces it).
_clock = time.perf_counter


class GeneratorSamples(L.Callback):
    """Write a :class:`~synthsat.tasks.generator.GeneratorTask`'s sample grid every
    ``every_n_steps`` generator steps to ``<run dir>/<dirname>/step_NNNNNN.png`` and to
    the image loggers (W&B), on the global-zero rank.

    A grid is drawn after the training batch whose generator update reached the step
    (with ``d_steps_per_g > 1`` some batches update only the discriminator), from that
    batch's masks (:func:`synthsat.figures.generator_grid`); drawing changes neither the
    weights nor the global random state, so runs train the same with or without it.

    Args:
        every_n_steps: generator steps between grids (0: never).
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

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step

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
        if self.every_n_steps and step % self.every_n_steps == 0 and trainer.is_global_zero:
            self.save(trainer, pl_module, batch)

    def save(self, trainer: L.Trainer, task: Any, batch: Mapping[str, Any]) -> Path:
        """Write the grid of ``batch`` for the current step; returns its path."""
        from torchvision.utils import save_image

        from synthsat.figures import generator_grid

        grid = generator_grid(task, batch, self.rows, self.samples, self.seed)
        out = Path(trainer.default_root_dir) / self.dirname
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"step_{trainer.global_step:06d}.png"
        write_with(path, lambda tmp: save_image(grid, tmp, format="png"))
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="samples", images=[str(path)], step=trainer.global_step)
        return path


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
