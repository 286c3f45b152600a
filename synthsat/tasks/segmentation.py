"""``SegmentationTask``: a U-Net trained on land-cover masks, scored per split.

A subclass of torchgeo's :class:`~torchgeo.trainers.SemanticSegmentationTask` whose
construction hooks build this project's network, loss and scores.

The data's :meth:`~synthsat.data.LandCoverDataModule.metadata` (classes, bands,
ignore index, scored classes, band normalisation) is part of the hyperparameters,
so a checkpoint alone says how to feed and read the model::

    task = SegmentationTask.load_from_checkpoint(path)
    logits = task.predict_logits(task.normalize(raw_image))   # or an already-normalised batch
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn
from torchgeo.trainers import SemanticSegmentationTask

from synthsat.data.cache import scaled_shape
from synthsat.data.datasets import Normalizer
from synthsat.errors import NonFiniteLoss
from synthsat.metrics.segmentation import SegmentationScores
from synthsat.models.segmentation import build_unet, drop_unused_stage_keys, unused_stages
from synthsat.tasks.distributed import RankRandomStreams
from synthsat.tasks.hparams import plain

LOSSES = ("ce", "jaccard", "focal")
SCHEDULERS = ("plateau", "cosine")
METADATA_KEYS = ("classes", "bands", "ignore_index", "scored_classes", "mean", "std")


def build_loss(name: str, num_classes: int, ignore_index: int | None) -> nn.Module:
    """A multiclass segmentation loss on logits (B, K, H, W) and labels (B, H, W).

    Args:
        name: ``ce`` (cross-entropy), ``jaccard`` (soft IoU, the paper's) or ``focal``.
        num_classes: number of classes K.
        ignore_index: label value that contributes nothing to the loss (or None).
    """
    if name == "ce":
        return nn.CrossEntropyLoss(ignore_index=-100 if ignore_index is None else ignore_index)
    # smp's multiclass Jaccard and focal losses mask ignored pixels out of both the
    # labels and the predictions; an ignore index that is itself a class is also left
    # out of the Jaccard class mean.
    if name == "jaccard":
        classes = [c for c in range(num_classes) if c != ignore_index]
        return smp.losses.JaccardLoss(
            "multiclass", classes=classes, from_logits=True, ignore_index=ignore_index
        )
    if name == "focal":
        return smp.losses.FocalLoss("multiclass", ignore_index=ignore_index)
    raise ValueError(f"unknown segmentation loss '{name}', expected one of {LOSSES}")


#: ``SemanticSegmentationTask`` settings that this task derives from its own (``metadata``,
#: ``encoder_name``, ``lr_patience``, ...) or does not offer: left out of the hyperparameters,
#: so checkpoints hold exactly this task's settings and load with its signature.
TORCHGEO_SETTINGS = (
    "model",
    "backbone",
    "weights",
    "in_channels",
    "task",
    "num_classes",
    "num_labels",
    "num_filters",
    "class_weights",
    "ignore_index",
    "patience",
    "freeze_backbone",
    "freeze_decoder",
)


class SegmentationTask(RankRandomStreams, SemanticSegmentationTask):
    """Semantic segmentation with a U-Net, Adam and ReduceLROnPlateau on validation loss.

    A torchgeo :class:`~torchgeo.trainers.SemanticSegmentationTask` (its construction
    order: hyperparameters, then :meth:`configure_models`, :meth:`configure_losses`,
    :meth:`configure_metrics`) that keeps what torchgeo lacks: the data metadata in the
    hyperparameters, offline-only pretrained encoders with a chosen depth and decoder,
    losses and scores that leave out the ignore index, mIoU over the scored classes
    (macro, torchgeo's is micro), whole-tile padding at test and predict, Adam with a
    plateau or warm-up + cosine schedule, and the ``<split>/<metric>`` log names.

    Args:
        metadata: the datamodule's ``metadata()`` (classes, bands, ignore index, scored
            classes, band mean / std).
        encoder_name: segmentation-models-pytorch encoder (``resnet18`` on CPU,
            ``resnet50`` as in the paper).
        encoder_weights: None (random init) or ``imagenet`` (only from the local cache).
        encoder_depth: encoder stages (3..5).
        decoder_channels: decoder widths (default: smp's, truncated to the depth).
        loss: ``ce``, ``jaccard`` or ``focal``; the ignore index never contributes.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        lr_patience: validation epochs without improvement before the learning rate drops
            (the paper: 10).
        lr_factor: learning-rate multiplier on a plateau.
        min_lr: lowest learning rate.
        monitor: metric watched by the plateau scheduler.
        scheduler: ``plateau`` (ReduceLROnPlateau on ``monitor``, the paper's) or
            ``cosine``: a linear warm-up over ``warmup_steps``, then cosine decay to
            ``min_lr`` at the trainer's ``max_steps`` (stable final weights for a fixed
            step budget, e.g. short CPU studies).
        warmup_steps: warm-up steps of the cosine schedule.
        channels_last: keep the network in channels-last memory format (on 1 CPU thread:
            about 1.3x faster training steps and 1.5x faster whole-tile inference).
    """

    ignore = TORCHGEO_SETTINGS
    mode = "min"

    def __init__(
        self,
        metadata: dict[str, Any],
        encoder_name: str = "resnet18",
        encoder_weights: str | None = None,
        encoder_depth: int = 5,
        decoder_channels: Sequence[int] | None = None,
        loss: str = "ce",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_patience: int = 10,
        lr_factor: float = 0.1,
        min_lr: float = 1e-6,
        monitor: str = "val/loss",
        channels_last: bool = True,
        scheduler: str = "plateau",
        warmup_steps: int = 0,
    ) -> None:
        missing = [k for k in METADATA_KEYS if k not in metadata]
        if missing:
            raise ValueError(
                f"SegmentationTask metadata lacks {missing}; pass the datamodule's metadata()"
            )
        if scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler '{scheduler}', expected one of {SCHEDULERS}")
        if loss not in LOSSES:
            raise ValueError(f"unknown segmentation loss '{loss}', expected one of {LOSSES}")
        # plain containers, so checkpoints load with torch.load(weights_only=True); the
        # hyperparameters are these locals as they are when torchgeo saves them below
        metadata = plain(metadata, deep=True)
        decoder_channels = plain(decoder_channels, deep=True)
        super().__init__(
            model="unet",
            backbone=encoder_name,
            weights=None,  # pretrained encoders: configure_models, from the local cache only
            in_channels=int(metadata["bands"]),
            task="multiclass",
            num_classes=len(metadata["classes"]),
            loss=loss,  # type: ignore[arg-type]
            ignore_index=metadata["ignore_index"],
            lr=lr,
            patience=lr_patience,
        )

    # -- torchgeo's construction hooks -----------------------------------------------------
    def configure_models(self) -> None:
        """The U-Net of :func:`~synthsat.models.segmentation.build_unet` and the data's
        class list, ignore index, scored classes, band normalisation and scale."""
        hp = self.hparams
        metadata = hp.metadata
        self.classes: list[str] = list(metadata["classes"])
        self.num_classes = len(self.classes)
        self.ignore_index: int | None = metadata["ignore_index"]
        self.scored_classes: list[int] = list(metadata["scored_classes"])
        self.normalize = Normalizer(np.asarray(metadata["mean"]), np.asarray(metadata["std"]))
        self.model = build_unet(
            int(metadata["bands"]),
            self.num_classes,
            hp.encoder_name,
            hp.encoder_weights,
            hp.encoder_depth,
            hp.decoder_channels,
        )
        #: encoder stages the network never runs, dropped by build_unet (state-dict prefixes)
        self.unused_stages = tuple(f"model.{name}" for name in unused_stages(self.model))
        self.channels_last = bool(hp.channels_last)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.pad_multiple = 2**hp.encoder_depth
        #: the data's resolution factor (``data.scale``): inputs of predict_logits are
        #: resampled by it and the logits brought back to the input's size
        self.scale = float(metadata.get("scale", 1.0))
        self.monitor = hp.monitor

    def configure_losses(self) -> None:
        """The loss of :func:`build_loss` (the ignore index contributes nothing)."""
        self.criterion = build_loss(self.hparams.loss, self.num_classes, self.ignore_index)

    def configure_metrics(self) -> None:
        """A confusion matrix per split, scored over the scored classes."""
        # keyed "<split>_scores": a ModuleDict key may not shadow nn.Module.train
        self.scores = nn.ModuleDict(
            {
                f"{split}_scores": SegmentationScores(
                    self.num_classes, self.scored_classes, self.ignore_index, self.classes
                )
                for split in ("train", "val", "test")
            }
        )

    # -- inference -------------------------------------------------------------------
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Logits (B, K, H, W) of normalised images whose sides fit the encoder depth."""
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        return self.model(image)

    def predict_logits(self, image_norm: torch.Tensor) -> torch.Tensor:
        """Logits (B, K, H, W) of normalised images (B, C, H, W) or (C, H, W) of any size,
        at native resolution.

        A model trained at ``data.scale`` < 1 sees the image area-resampled by that
        factor, and its logits are resized back (bilinear) to (H, W). Images are padded
        at the bottom-right (reflect, or replicate for tiny ones) to a multiple of
        ``2 ** encoder_depth`` and the logits cropped back.
        """
        squeeze = image_norm.ndim == 3
        x = image_norm.unsqueeze(0) if squeeze else image_norm
        if x.shape[1] != self.hparams.metadata["bands"]:
            raise ValueError(
                f"image has {x.shape[1]} bands, the model was trained on "
                f"{self.hparams.metadata['bands']}"
            )
        x = x.to(self.device, torch.float32)
        native = x.shape[-2:]
        if self.scale != 1:
            size = scaled_shape(int(native[0]), int(native[1]), self.scale)
            x = F.interpolate(x, size=size, mode="area")
        h, w = x.shape[-2:]
        m = self.pad_multiple
        ph, pw = math.ceil(h / m) * m - h, math.ceil(w / m) * m - w
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = self.model(x)[..., :h, :w]
        if self.scale != 1:
            logits = F.interpolate(logits, size=native, mode="bilinear", align_corners=False)
        return logits[0] if squeeze else logits

    # -- training ---------------------------------------------------------------------
    def _step(self, batch: dict[str, Any], split: str) -> torch.Tensor:
        image, mask = batch["image"], batch["mask"]
        # test tiles are whole and native: padded to the encoder's multiple (and resampled
        # by a model trained at a reduced scale), the logits cropped back
        logits = self.predict_logits(image) if split == "test" else self(image)
        loss = self.criterion(logits, mask)
        bs = image.shape[0]
        self.log(
            f"{split}/loss",
            loss,
            on_step=split == "train",
            on_epoch=True,
            batch_size=bs,
            prog_bar=split != "test",
            sync_dist=True,
        )
        self.scores[f"{split}_scores"].update(logits.detach(), mask)
        if split == "train" and "synthetic" in batch:
            self.log(
                "train/synthetic_share",
                batch["synthetic"].float().mean(),
                on_step=False,
                on_epoch=True,
                batch_size=bs,
                sync_dist=True,
            )
        return loss

    def training_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> torch.Tensor:
        """The loss of a batch of patches; logs ``train/loss`` and the synthetic share.

        Raises:
            NonFiniteLoss: the loss is NaN or infinite (training stops before the step).
        """
        loss = self._step(batch, "train")
        if not bool(torch.isfinite(loss)):
            raise NonFiniteLoss(
                f"non-finite training loss ({float(loss.detach())}) at step {self.global_step}: "
                "training stopped before the optimiser step; check the imagery and "
                "data.mean / data.std (the last checkpoint holds the last finite state)"
            )
        return loss

    def validation_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Logs ``val/loss`` and adds the batch to the validation scores."""
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        """Logs ``test/loss`` and adds the batch (whole tiles, any size) to the test scores."""
        self._step(batch, "test")

    def predict_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> torch.Tensor:
        """Class probabilities (B, K, H, W) of normalised images of any size (torchgeo's
        output), through :meth:`predict_logits`."""
        return self.predict_logits(batch["image"]).softmax(1)

    def _log_scores(self, split: str) -> None:
        result = self.scores[f"{split}_scores"].compute()
        self.scores[f"{split}_scores"].reset()
        values = {f"{split}/miou": result["miou"], f"{split}/acc": result["pixel_accuracy"]}
        for name, iou in result["iou"].items():
            values[f"{split}/iou_{re.sub(r'[^0-9A-Za-z]+', '_', name)}"] = iou
        # the confusion matrix is summed over the processes (DDP) before the scores
        values_t = {k: torch.tensor(v, dtype=torch.float32) for k, v in values.items()}
        self.log_dict(values_t, sync_dist=True)
        if split == "test":
            self.test_results = result

    def on_train_epoch_end(self) -> None:
        self._log_scores("train")

    def on_validation_epoch_end(self) -> None:
        self._log_scores("val")

    def on_test_epoch_start(self) -> None:
        self.scores["test_scores"].reset()

    def on_test_epoch_end(self) -> None:
        self._log_scores("test")

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.scheduler == "cosine":
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": self._cosine(optimizer), "interval": "step"},
            }
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=hp.lr_factor, patience=hp.lr_patience, min_lr=hp.min_lr
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
            int(hp.metadata["bands"]),
            self.num_classes,
            hp.encoder_name,
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
        checkpoint["hyper_parameters"]["encoder_weights"] = None
