"""The GAN's training step: manual optimisation with a two-time-scale update.

Every batch makes one discriminator step; every ``d_steps_per_g``-th batch also makes
one generator (+ encoder) step first. A non-finite loss term or gradient norm stops
training before the optimiser step. With ``ema``, the generator's exponential moving
average follows each generator step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from synthsat.errors import NonFiniteLoss
from synthsat.tasks.ema import ema_update, warmed_up_decay


class GANTrainingMixin:
    """``training_step`` of :class:`~synthsat.tasks.generator.GeneratorTask`.

    Mixed into that :class:`~lightning.LightningModule`, it uses the task's
    ``generator_losses``, ``discriminator_loss``, ``_generate_fakes``, ``generator``,
    ``generator_ema``, ``discriminator``, ``batches_seen`` and hyperparameters.
    """

    def _guard(self, terms: Mapping[str, Tensor]) -> None:
        """Stop on a non-finite loss term or gradient norm, before any optimiser step."""
        for name, value in terms.items():
            if not bool(torch.isfinite(value).all()):
                raise NonFiniteLoss(
                    f"non-finite {name} ({float(value.detach().float().mean())}) at generator "
                    f"step {self.global_step} (batch {int(self.batches_seen)}): training "
                    "stopped before the optimiser step; the last checkpoint holds the last "
                    "finite state"
                )

    def _grad_norm(self, params: Sequence[nn.Parameter], name: str) -> Tensor:
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        # under a gradient scaler, inf gradients are expected and the step is skipped
        if getattr(self.trainer.precision_plugin, "scaler", None) is None:
            self._guard({name: norm})
        return norm

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """One discriminator step, preceded by a generator step every ``d_steps_per_g`` batches."""
        hp = self.hparams
        opt_g, opt_d = self.optimizers()  # type: ignore[misc]
        image, mask = batch["image"], batch["mask"]
        onehot = self.onehot(mask)
        bs = image.shape[0]
        g_step = (int(self.batches_seen) + 1) % hp.d_steps_per_g == 0

        if g_step:
            with self.toggled_optimizer(opt_g):
                total, terms, fakes = self.generator_losses(image, onehot, mask)
                self._guard({"g_total": total, **terms})
                opt_g.zero_grad()
                self.manual_backward(total)
                g_norm = self._grad_norm(
                    [p for g in opt_g.param_groups for p in g["params"]], "generator gradient norm"
                )
                opt_g.step()
            self._update_ema(onehot)
            self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, batch_size=bs)
            self.log_dict(
                {"train/g_total": total.detach(), "train/g_grad_norm": g_norm}, batch_size=bs
            )
        else:
            with torch.no_grad():
                fakes, _ = self._generate_fakes(image, onehot)

        with self.toggled_optimizer(opt_d):
            d_loss, d_terms = self.discriminator_loss(image, onehot, fakes, mask)
            self._guard(d_terms)
            opt_d.zero_grad()
            self.manual_backward(d_loss)
            d_norm = self._grad_norm(
                list(self.discriminator.parameters()), "discriminator gradient norm"
            )
            # Through the strategy, not opt_d.step(): the precision plugin (AMP scaler, hooks)
            # applies, but the step does not count towards trainer.global_step (= G steps).
            self.trainer.strategy.optimizer_step(opt_d.optimizer, closure=lambda: None, model=self)
        self.batches_seen += 1
        self.log_dict({f"train/{k}": v.detach() for k, v in d_terms.items()}, batch_size=bs)
        self.log("train/d_grad_norm", d_norm, batch_size=bs)

    @torch.no_grad()
    def _update_ema(self, onehot: Tensor) -> None:
        """Move the EMA weights towards the generator's.

        With batch norm, the EMA generator's running statistics are its own: it runs on
        the batch's masks in training mode (statistics only, outputs unused), so the
        statistics it uses at inference belong to its weights, not the live generator's.
        Other buffers are copied.
        """
        if self.generator_ema is None:
            return
        decay = warmed_up_decay(self.hparams.ema_decay, self.global_step)
        own_statistics = self._batch_norm
        ema_update(self.generator_ema, self.generator, decay, buffers=not own_statistics)
        if own_statistics:
            b, _, h, w = onehot.shape
            self.generator_ema.train()
            self.generator_ema(onehot, self.sample_z(b), self.sample_noise(b, h, w))
            self.generator_ema.eval()
