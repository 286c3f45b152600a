"""Callbacks that draw: the generator's sample grids during training and a segmentation
test's confusion matrix and panels (W&B)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L

from synthsat.atomic import write_with
from synthsat.tracking import log_confusion_matrix, log_images, wandb_loggers


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
