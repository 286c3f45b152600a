"""What a segmentation task trains with and saves (:class:`OptimiserAndCheckpoints`, a
mixin of :class:`~synthsat.tasks.segmentation.SegmentationTask`): Adam with a plateau or
warm-up + cosine learning-rate schedule, and checkpoints that load without a pretrained
encoder and without the encoder stages the network never runs."""

from __future__ import annotations

import math
from typing import Any

import torch

from synthsat.models.segmentation import build_unet, drop_unused_stage_keys


class OptimiserAndCheckpoints:
    """The optimiser, its schedule and the checkpoint hooks of a segmentation task (a
    mixin: ``self`` is the :class:`~synthsat.tasks.segmentation.SegmentationTask`, its
    ``hparams``, ``trainer`` and ``unused_stages``)."""

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.scheduler == "cosine":
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": self._cosine(optimizer), "interval": "step"},
            }
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=hp.lr_factor, patience=hp.patience, min_lr=hp.min_lr
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "monitor": hp.monitor,
                "interval": "epoch",
                "strict": False,
            },
        }

    def _cosine(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        """Linear warm-up, then cosine decay from ``lr`` to ``min_lr`` at ``max_steps``."""
        hp = self.hparams
        total = int(self.trainer.max_steps) if self.trainer is not None else -1
        if total <= 0:
            raise ValueError("scheduler=cosine needs trainer.max_steps > 0 (its decay length)")
        warmup = max(0, min(int(hp.warmup_steps), total - 1))
        floor = hp.min_lr / hp.lr

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Checkpoints written before the unused encoder stages were dropped (e.g. resnet18's
        layer3 / layer4 at ``encoder_depth: 3``) load too: their weights are left out of the
        state dict and, for a resumed run, out of the optimiser states."""
        state = checkpoint.get("state_dict", {})
        heads = tuple(f"{p}." for p in self.unused_stages)
        if not any(k.startswith(heads) for k in state):
            return
        checkpoint["state_dict"] = drop_unused_stage_keys(state, self.unused_stages)
        if checkpoint.get("optimizer_states"):
            self._drop_unused_optimizer_state(checkpoint["optimizer_states"], heads)

    def _drop_unused_optimizer_state(self, states: list[dict[str, Any]], heads: tuple) -> None:
        """Remove the unused stages' parameters from optimiser states saved with them (their
        ids follow the untrimmed network's parameter order)."""
        hp = self.hparams
        full = build_unet(
            int(hp.in_channels),
            int(hp.num_classes),
            hp.backbone,
            None,
            hp.encoder_depth,
            hp.decoder_channels,
            keep_unused_stages=True,
        )
        names = [f"model.{n}" for n, _ in full.named_parameters()]
        names += [n for n, _ in self.named_parameters() if not n.startswith("model.")]
        for state in states:
            groups = state.get("param_groups", [])
            ids = [i for g in groups for i in g["params"]]
            if len(ids) != len(names):
                continue  # not this network's optimiser: left to torch to report
            unused = {i for i, n in zip(ids, names, strict=True) if n.startswith(heads)}
            for group in groups:
                group["params"] = [i for i in group["params"] if i not in unused]
            state["state"] = {i: v for i, v in state.get("state", {}).items() if i not in unused}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Checkpoints hold trained weights: reloading needs no pretrained encoder."""
        checkpoint["hyper_parameters"]["weights"] = None
