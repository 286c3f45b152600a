"""Callbacks that keep a training's record and its end: every validation's score by step
(a run's learning curve) and a stop after the step in progress on SIGTERM."""

from __future__ import annotations

from typing import Any

import lightning as L


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
    (:mod:`synthsat.jobs.interrupts`), leaving its ``last.ckpt`` to resume from. Under DDP
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
