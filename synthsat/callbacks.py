"""Lightning callbacks of the training jobs (configured in ``conf/callbacks/``).

* :class:`GeneratorSamples` — the generator's sample grids during training.

The checkpoint callbacks live in :mod:`synthsat.tasks.checkpoints`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L

from synthsat.atomic import write_with


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
