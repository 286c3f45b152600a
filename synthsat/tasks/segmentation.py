"""``SegmentationTask``: a U-Net trained on land-cover masks, scored per split.

A subclass of torchgeo's :class:`~torchgeo.trainers.SemanticSegmentationTask` that takes
its arguments (``SegmentationTask(model="unet", backbone="resnet50", weights=True,
num_classes=..., loss="ce", class_weights=..., ignore_index=..., lr=..., patience=...)``)
with this project's settings on top. It subclasses rather than copies the names because
torchgeo's construction order (hyperparameters, :meth:`configure_models`,
:meth:`configure_losses`, :meth:`configure_metrics`), its ``isinstance`` and its
checkpoint layout are what torchgeo users and tools rely on; its step hooks are replaced
because this project's features need their own: whole-tile padding at test and predict,
macro mIoU over the scored classes (torchgeo's is micro), the ``<split>/<metric>`` log
names the callbacks and the validation curve read, channels-last inputs, and Adam with a
plateau or warm-up + cosine schedule.

Its arguments, loss, metadata and encoder weights are resolved in
:mod:`synthsat.tasks.segmentation_setup`; its optimiser, schedule and checkpoint hooks are
:mod:`synthsat.tasks.segmentation_state`'s.

The data's metadata (classes, bands, ignore index, scored classes, band normalisation)
is part of the hyperparameters, so a checkpoint alone says how to feed and read the
model. Given as ``metadata=`` (this project's jobs pass ``LandCoverDataModule.metadata()``)
or, when left out, read from the trainer's datamodule in :meth:`SegmentationTask.setup`:
this project's or a torchgeo ``NonGeoDataModule`` (which normalises its batches itself)::

    task = SegmentationTask.load_from_checkpoint(path)
    logits = task.predict_logits(task.normalize(raw_image))   # or an already-normalised batch
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torchgeo.trainers import SemanticSegmentationTask

from synthsat.data.datasets import Normalizer
from synthsat.errors import NonFiniteLoss
from synthsat.metrics.segmentation import SegmentationScores
from synthsat.models.segmentation import (
    native_logits,
)
from synthsat.tasks.distributed import RankRandomStreams
from synthsat.tasks.segmentation_setup import (
    _LOADING,
    DEPRECATED,
    UNOFFERED,
    _agree,
    build_loss,
    build_network,
    datamodule_metadata,
    task_arguments,
)
from synthsat.tasks.segmentation_state import OptimiserAndCheckpoints


class SegmentationTask(OptimiserAndCheckpoints, RankRandomStreams, SemanticSegmentationTask):
    """Semantic segmentation with a U-Net, Adam and ReduceLROnPlateau on validation loss.

    Takes torchgeo's :class:`~torchgeo.trainers.SemanticSegmentationTask` arguments (``model``,
    ``backbone``, ``weights``, ``in_channels``, ``task``, ``num_classes``, ``loss``,
    ``class_weights``, ``ignore_index``, ``lr``, ``patience``, ``freeze_backbone``,
    ``freeze_decoder``) and this project's on top. Without ``metadata`` the data's classes,
    bands, ignore index and band normalisation are read from the trainer's datamodule in
    :meth:`setup` (:func:`datamodule_metadata`): this project's ``LandCoverDataModule`` or
    torchgeo's own datamodules, which normalise each batch in their ``aug`` (the task never
    normalises a batch itself, so nothing is normalised twice).

    Differences from torchgeo's defaults: ``backbone`` resnet18 (a CPU project), Adam (not
    AdamW), the plateau scheduler's factor / floor / monitor below, the focal loss not
    normalised, ``class_weights`` with ``loss="ce"`` only, and only ``model="unet"``,
    ``task="multiclass"``.

    Args:
        model: ``unet``.
        backbone: segmentation-models-pytorch encoder (``resnet18`` on CPU, ``resnet50`` as
            in the paper).
        weights: None / False (random init), True or ``imagenet`` (only from the local
            cache), the path of a checkpoint or state dict holding encoder weights, or a
            torchgeo weight enum (or its name; downloaded by torchgeo).
        in_channels: image bands (default: the data's).
        task: ``multiclass``.
        num_classes: number of classes (default: the data's).
        loss: ``ce``, ``jaccard`` or ``focal``; the ignore index never contributes.
        class_weights: per-class weights of the cross-entropy (``loss="ce"``).
        ignore_index: label left out of the loss and scores (default: the data's).
        lr: Adam learning rate.
        patience: validation epochs without improvement before the learning rate drops
            (the paper: 10).
        freeze_backbone: keep the encoder's weights fixed.
        freeze_decoder: keep the decoder's weights fixed.
        metadata: the data's metadata (classes, bands, ignore index, scored classes, band
            mean / std, as ``LandCoverDataModule.metadata()``); default: read from the
            trainer's datamodule in :meth:`setup`.
        encoder_depth: encoder stages (3..5).
        decoder_channels: decoder widths (default: smp's, truncated to the depth).
        weight_decay: Adam weight decay.
        lr_factor: learning-rate multiplier on a plateau.
        min_lr: lowest learning rate.
        monitor: metric watched by the plateau scheduler.
        channels_last: keep the network in channels-last memory format (on 1 CPU thread:
            about 1.3x faster training steps and 1.5x faster whole-tile inference).
        scheduler: ``plateau`` (ReduceLROnPlateau on ``monitor``, the paper's) or
            ``cosine``: a linear warm-up over ``warmup_steps``, then cosine decay to
            ``min_lr`` at the trainer's ``max_steps`` (stable final weights for a fixed
            step budget, e.g. short CPU studies).
        warmup_steps: warm-up steps of the cosine schedule.
        encoder_name: deprecated name of ``backbone``.
        encoder_weights: deprecated name of ``weights``.
        lr_patience: deprecated name of ``patience``.
    """

    ignore = (*UNOFFERED, *DEPRECATED)
    mode = "min"

    def __init__(
        self,
        model: str = "unet",
        backbone: str = "resnet18",
        weights: Any = None,
        in_channels: int | None = None,
        task: str = "multiclass",
        num_classes: int | None = None,
        loss: str = "ce",
        class_weights: Sequence[float] | None = None,
        ignore_index: int | None = None,
        lr: float = 1e-3,
        patience: int = 10,
        freeze_backbone: bool = False,
        freeze_decoder: bool = False,
        metadata: dict[str, Any] | None = None,
        encoder_depth: int = 5,
        decoder_channels: Sequence[int] | None = None,
        weight_decay: float = 0.0,
        lr_factor: float = 0.1,
        min_lr: float = 1e-6,
        monitor: str = "val/loss",
        channels_last: bool = True,
        scheduler: str = "plateau",
        warmup_steps: int = 0,
        encoder_name: str | None = None,
        encoder_weights: str | None = None,
        lr_patience: int | None = None,
    ) -> None:  # pragma: no mutate block (torchgeo saves the hyperparameters from this frame)
        args = task_arguments(
            model=model,
            backbone=backbone,
            weights=weights,
            in_channels=in_channels,
            task=task,
            num_classes=num_classes,
            loss=loss,
            class_weights=class_weights,
            ignore_index=ignore_index,
            patience=patience,
            metadata=metadata,
            decoder_channels=decoder_channels,
            scheduler=scheduler,
            encoder_name=encoder_name,
            encoder_weights=encoder_weights,
            lr_patience=lr_patience,
        )
        # the hyperparameters are these locals as they are when torchgeo saves them below
        model, backbone, weights = args["model"], args["backbone"], args["weights"]
        in_channels, num_classes = args["in_channels"], args["num_classes"]
        class_weights, ignore_index = args["class_weights"], args["ignore_index"]
        patience, metadata = args["patience"], args["metadata"]
        decoder_channels = args["decoder_channels"]
        super().__init__(
            model=model,  # type: ignore[arg-type]
            backbone=backbone,
            weights=weights,
            in_channels=in_channels,  # type: ignore[arg-type]
            task=task,  # type: ignore[arg-type]
            num_classes=num_classes,
            loss=loss,  # type: ignore[arg-type]
            class_weights=class_weights,
            ignore_index=ignore_index,
            lr=lr,
            patience=patience,
            freeze_backbone=freeze_backbone,
            freeze_decoder=freeze_decoder,
        )

    @classmethod
    def load_from_checkpoint(cls, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Lightning's, with checkpoints that hold the old argument names loading quietly."""
        token = _LOADING.set(True)
        try:
            return super().load_from_checkpoint(*args, **kwargs)
        finally:
            _LOADING.reset(token)

    # -- torchgeo's construction hooks -----------------------------------------------------
    def configure_models(self) -> None:
        """The U-Net of :func:`~synthsat.models.segmentation.build_unet` and the data's
        class list, ignore index, scored classes, band normalisation and scale (when the
        metadata, or ``in_channels`` and ``num_classes``, are not given: in :meth:`setup`)."""
        hp = self.hparams
        self.channels_last = bool(hp.channels_last)
        self.pad_multiple = 2**hp.encoder_depth
        self.monitor = hp.monitor
        self.ignore_index: int | None = hp.ignore_index
        self.num_classes: int | None = hp.num_classes
        self.model = None
        self.unused_stages: tuple[str, ...] = ()
        if hp.metadata is not None:
            self._configure_data(hp.metadata)
        if hp.in_channels is not None and hp.num_classes is not None:
            self._build_network()

    def _configure_data(self, metadata: dict[str, Any]) -> None:
        self.classes: list[str] = list(metadata["classes"])
        self.num_classes = len(self.classes)
        self.ignore_index = metadata["ignore_index"]
        self.scored_classes: list[int] = list(metadata["scored_classes"])
        self.normalize = Normalizer(np.asarray(metadata["mean"]), np.asarray(metadata["std"]))
        #: the data's resolution factor (``data.scale``): inputs of predict_logits are
        #: resampled by it and the logits brought back to the input's size
        self.scale = float(metadata.get("scale", 1.0))

    def _build_network(self) -> None:
        #: encoder stages the network never runs, dropped by build_unet (state-dict prefixes)
        self.model, self.unused_stages = build_network(self.hparams, self.channels_last)

    def configure_losses(self) -> None:
        """The loss of :func:`build_loss` (the ignore index contributes nothing)."""
        if self.num_classes is None:
            return  # in setup, with the data's classes
        hp = self.hparams
        self.criterion = build_loss(hp.loss, self.num_classes, self.ignore_index, hp.class_weights)

    def configure_metrics(self) -> None:
        """A confusion matrix per split, scored over the scored classes."""
        if self.hparams.metadata is None:
            return  # in setup, with the data's classes
        # keyed "<split>_scores": a ModuleDict key may not shadow nn.Module.train
        self.scores = nn.ModuleDict(
            {
                f"{split}_scores": SegmentationScores(
                    self.num_classes, self.scored_classes, self.ignore_index, self.classes
                )
                for split in ("train", "val", "test")
            }
        )

    def setup(self, stage: str) -> None:
        """Without ``metadata``: read it from the trainer's datamodule
        (:func:`datamodule_metadata`; saved in the hyperparameters, so checkpoints hold it),
        then build what needs it (network, loss, scores)."""
        super().setup(stage)
        hp = self.hparams
        if hp.metadata is not None:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            raise ValueError(
                "SegmentationTask without metadata reads the data's classes, bands, ignore "
                "index and normalisation from the datamodule: pass datamodule= to the trainer, "
                "or metadata= to the task"
            )
        metadata = datamodule_metadata(datamodule, hp.num_classes, hp.in_channels, hp.ignore_index)
        hp.in_channels = _agree("in_channels", hp.in_channels, int(metadata["bands"]))
        hp.num_classes = _agree("num_classes", hp.num_classes, len(metadata["classes"]))
        hp.ignore_index = _agree("ignore_index", hp.ignore_index, metadata["ignore_index"])
        hp.metadata = metadata
        self._configure_data(metadata)
        if self.model is None:
            self._build_network()
        self.configure_losses()
        self.configure_metrics()

    # -- inference -------------------------------------------------------------------
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Logits (B, K, H, W) of normalised images whose sides fit the encoder depth."""
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        return self.model(image)

    def predict_logits(self, image_norm: torch.Tensor) -> torch.Tensor:
        """Logits (B, K, H, W) of normalised images (B, C, H, W) or (C, H, W) of any size,
        at native resolution (:func:`~synthsat.models.segmentation.native_logits`: resampled
        by ``data.scale`` and padded to the encoder's multiple, the logits brought back)."""
        squeeze = image_norm.ndim == 3
        x = image_norm.unsqueeze(0) if squeeze else image_norm
        if x.shape[1] != self.hparams.metadata["bands"]:
            raise ValueError(
                f"image has {x.shape[1]} bands, the model was trained on "
                f"{self.hparams.metadata['bands']}"
            )
        x = x.to(self.device, torch.float32)
        logits = native_logits(self.model, x, self.scale, self.pad_multiple, self.channels_last)
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
