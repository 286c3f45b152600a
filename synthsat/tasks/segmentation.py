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

The data's metadata (classes, bands, ignore index, scored classes, band normalisation)
is part of the hyperparameters, so a checkpoint alone says how to feed and read the
model. Given as ``metadata=`` (this project's jobs pass ``LandCoverDataModule.metadata()``)
or, when left out, read from the trainer's datamodule in :meth:`SegmentationTask.setup`:
this project's or a torchgeo ``NonGeoDataModule`` (which normalises its batches itself)::

    task = SegmentationTask.load_from_checkpoint(path)
    logits = task.predict_logits(task.normalize(raw_image))   # or an already-normalised batch
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.encoders import encoders as SMP_ENCODERS
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


def build_loss(
    name: str,
    num_classes: int,
    ignore_index: int | None,
    class_weights: Sequence[float] | None = None,
) -> nn.Module:
    """A multiclass segmentation loss on logits (B, K, H, W) and labels (B, H, W).

    Args:
        name: ``ce`` (cross-entropy), ``jaccard`` (soft IoU, the paper's) or ``focal``.
        num_classes: number of classes K.
        ignore_index: label value that contributes nothing to the loss (or None).
        class_weights: K per-class weights of the cross-entropy (``ce`` only).
    """
    if class_weights is not None and name != "ce":
        raise ValueError(f"class_weights weigh the cross-entropy (loss=ce), not loss={name}")
    if name == "ce":
        weight = None
        if class_weights is not None:
            weight = torch.as_tensor(class_weights, dtype=torch.float32)
            if weight.shape != (num_classes,):
                raise ValueError(f"class_weights needs {num_classes} values, got {weight.tolist()}")
        return nn.CrossEntropyLoss(
            weight=weight, ignore_index=-100 if ignore_index is None else ignore_index
        )
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


#: torchgeo's ``model`` values this task builds (a U-Net; the others are not offered).
MODELS = ("unet",)
#: Old argument names, still accepted (with a deprecation warning) -> torchgeo's names.
DEPRECATED = {"encoder_name": "backbone", "encoder_weights": "weights", "lr_patience": "patience"}
#: ``SemanticSegmentationTask`` settings this task does not offer (multilabel, FCN):
#: left out of the hyperparameters, so checkpoints load with this task's signature.
UNOFFERED = ("num_labels", "num_filters")

#: Set while :meth:`SegmentationTask.load_from_checkpoint` builds a task: the old argument
#: names of checkpoints written before torchgeo's names load without a warning.
_LOADING: ContextVar[bool] = ContextVar("synthsat_segmentation_loading", default=False)


def _deprecated(old: str, value: Any, new: str) -> Any:
    """``value``, with a warning that argument ``old`` is now ``new`` (quiet while a
    checkpoint that holds the old names loads)."""
    if not _LOADING.get():
        if old == "metadata":
            message = (
                "SegmentationTask(metadata, ...) is deprecated: the first argument is now "
                "torchgeo's model; pass SegmentationTask(metadata=...)"
            )
        else:
            message = (
                f"SegmentationTask({old}=...) is deprecated: use torchgeo's name {new}= "
                f"(in conf/segmentation: `{new}: ...` instead of `{old}: ...`)"
            )
        warnings.warn(message, FutureWarning, stacklevel=4)  # past task_arguments, __init__
    return value


def _agree(name: str, given: Any, data: Any) -> Any:
    """``given``, or the data's value when None; a ValueError when both are set and differ."""
    if given is None:
        return data
    if given != data:
        raise ValueError(f"SegmentationTask({name}={given!r}), but the data has {name} {data!r}")
    return given


def _classes_of(dataset: Any) -> list[str] | None:
    """The class names a (torchgeo) dataset declares, through Subset-like wrappers."""
    for _ in range(8):
        classes = getattr(dataset, "classes", None)
        if classes is not None:
            if isinstance(classes, Mapping):
                return [str(classes[k]) for k in sorted(classes)]
            return [str(c) for c in classes]
        dataset = getattr(dataset, "dataset", None)
        if dataset is None:
            return None
    return None


def datamodule_metadata(
    datamodule: Any, num_classes: int | None, in_channels: int | None, ignore_index: int | None
) -> dict[str, Any]:
    """The task's ``metadata`` (classes, bands, ignore index, scored classes, mean / std) read
    from a set-up datamodule: this project's ``metadata()``, or a torchgeo
    :class:`~torchgeo.datamodules.NonGeoDataModule` / ``GeoDataModule`` (its ``mean`` and
    ``std``, which its own ``aug`` applies to every batch; its dataset's ``classes`` when it
    declares them, else ``"0" .. "K-1"``; the bands of its first sample)."""
    if callable(getattr(datamodule, "metadata", None)):
        return plain(datamodule.metadata(), deep=True)
    mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
    if mean is None or std is None:
        raise ValueError(
            f"SegmentationTask: {type(datamodule).__name__} has neither metadata() nor "
            "torchgeo's mean / std; pass metadata= (classes, bands, ignore_index, "
            "scored_classes, mean, std)"
        )
    names = ("train_dataset", "dataset", "val_dataset", "test_dataset", "predict_dataset")
    dataset = next((d for n in names if (d := getattr(datamodule, n, None)) is not None), None)
    classes = _classes_of(dataset)
    if classes is None:
        if num_classes is None:
            raise ValueError(
                f"SegmentationTask: {type(datamodule).__name__}'s dataset declares no classes; "
                "pass num_classes="
            )
        classes = [str(c) for c in range(num_classes)]
    if num_classes is not None and len(classes) != num_classes:
        raise ValueError(
            f"SegmentationTask(num_classes={num_classes}), but the dataset of "
            f"{type(datamodule).__name__} declares {len(classes)} classes: {classes}"
        )
    bands = in_channels
    if bands is None:
        if dataset is None:
            raise ValueError("SegmentationTask: the datamodule has no dataset; pass in_channels=")
        bands = int(torch.as_tensor(dataset[0]["image"]).shape[-3])
    stats = []
    for name, value in (("mean", mean), ("std", std)):
        values = torch.as_tensor(value, dtype=torch.float64).flatten()
        if values.numel() == 1:
            values = values.repeat(bands)
        if values.numel() != bands:
            raise ValueError(
                f"the datamodule's {name} has {values.numel()} values for {bands} bands"
            )
        stats.append(values.tolist())
    band_names = getattr(dataset, "bands", None)
    if not (isinstance(band_names, Sequence) and len(band_names) == bands):
        band_names = [f"band{i + 1}" for i in range(bands)]
    return {
        "classes": classes,
        "bands": bands,
        "band_names": [str(b) for b in band_names],
        "rgb_bands": list(range(min(3, bands))),
        "ignore_index": ignore_index,
        "scored_classes": [c for c in range(len(classes)) if c != ignore_index],
        "mean": stats[0],
        "std": stats[1],
        "scale": 1.0,
    }


def _plain_weights(weights: Any) -> bool | str | None:
    """torchgeo's ``weights`` as a plain value: a weight enum becomes its full name."""
    if weights is None or isinstance(weights, bool):
        return weights
    if isinstance(weights, Enum):
        return f"{type(weights).__name__}.{weights.name}"
    return str(weights)


def encoder_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The encoder weights of a file: a Lightning checkpoint of this task or of a torchgeo
    task (``model.encoder.*``, ``model.backbone.model.*`` or ``model.*``), a U-Net state
    dict (``encoder.*``) or an encoder's own state dict."""
    obj = torch.load(Path(path).expanduser(), map_location="cpu", weights_only=True)
    if not isinstance(obj, Mapping):
        raise ValueError(f"weights={path}: not a state dict or a Lightning checkpoint")
    state = obj.get("state_dict", obj)
    for prefix in ("model.encoder.", "model.backbone.model.", "encoder.", "model."):
        if any(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return dict(state)


def pretrained(weights: bool | str | None, backbone: str) -> tuple[str | None, Any]:
    """How to initialise the encoder from torchgeo's ``weights``: (segmentation-models-pytorch
    variant, None) for True / ``imagenet`` (from the local cache only, see
    :func:`~synthsat.models.segmentation.cached_encoder_weights`), (None, encoder state dict)
    for a file, or a torchgeo weight enum's name (downloaded by torchgeo), (None, None) for
    random weights."""
    if weights is None or weights is False:
        return None, None
    if weights is True:
        return "imagenet", None
    settings = SMP_ENCODERS.get(backbone, {}).get("pretrained_settings", {})
    if weights in settings:
        return weights, None
    if Path(weights).expanduser().is_file():
        return None, encoder_state(weights)
    from torchgeo.models import get_weight

    # torchgeo's pretrained weights (e.g. ResNet18_Weights.SENTINEL2_ALL_MOCO): downloaded
    return None, get_weight(weights).get_state_dict(progress=True)


def task_arguments(
    *,
    model: Any,
    backbone: str,
    weights: Any,
    in_channels: int | None,
    task: str,
    num_classes: int | None,
    loss: str,
    class_weights: Any,
    ignore_index: int | None,
    patience: int,
    metadata: Any,
    decoder_channels: Any,
    scheduler: str,
    encoder_name: str | None,
    encoder_weights: str | None,
    lr_patience: int | None,
) -> dict[str, Any]:
    """:class:`SegmentationTask`'s arguments checked and made plain: the deprecated names
    folded into torchgeo's, containers made plain (so checkpoints load with
    ``torch.load(weights_only=True)``), a weight enum made its name, and ``in_channels``,
    ``num_classes`` and ``ignore_index`` taken from (and checked against) the metadata.

    Returns:
        ``model``, ``backbone``, ``weights``, ``in_channels``, ``num_classes``,
        ``class_weights``, ``ignore_index``, ``patience``, ``metadata`` and
        ``decoder_channels`` as the task saves them.

    Raises:
        ValueError: a model, task, scheduler or loss this task does not offer, class
            weights with a loss other than ``ce``, or metadata that lacks a key or
            disagrees with ``in_channels`` / ``num_classes`` / ``ignore_index``.
    """
    if isinstance(model, Mapping):  # the signature before torchgeo's: metadata first
        model, metadata = "unet", _deprecated("metadata", model, "metadata")
    if encoder_name is not None:
        backbone = _deprecated("encoder_name", encoder_name, "backbone")
    if encoder_weights is not None:
        weights = _deprecated("encoder_weights", encoder_weights, "weights")
    if lr_patience is not None:
        patience = _deprecated("lr_patience", lr_patience, "patience")
    if model not in MODELS:
        raise ValueError(f"SegmentationTask builds a U-Net: model='{model}', expected 'unet'")
    if task != "multiclass":
        raise ValueError(f"SegmentationTask is multiclass: task='{task}'")
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler '{scheduler}', expected one of {SCHEDULERS}")
    if loss not in LOSSES:
        raise ValueError(f"unknown segmentation loss '{loss}', expected one of {LOSSES}")
    metadata = plain(metadata, deep=True)
    if isinstance(class_weights, torch.Tensor):
        class_weights = class_weights.tolist()
    class_weights = plain(class_weights, deep=True)
    if class_weights is not None and loss != "ce":
        raise ValueError(f"class_weights weigh the cross-entropy (loss=ce), not loss={loss}")
    if metadata is not None:
        missing = [k for k in METADATA_KEYS if k not in metadata]
        if missing:
            raise ValueError(
                f"SegmentationTask metadata lacks {missing}; pass the datamodule's "
                "metadata(), or none (read from the trainer's datamodule)"
            )
        in_channels = _agree("in_channels", in_channels, int(metadata["bands"]))
        num_classes = _agree("num_classes", num_classes, len(metadata["classes"]))
        ignore_index = _agree("ignore_index", ignore_index, metadata["ignore_index"])
    return {
        "model": model,
        "backbone": backbone,
        "weights": _plain_weights(weights),
        "in_channels": in_channels,
        "num_classes": num_classes,
        "class_weights": class_weights,
        "ignore_index": ignore_index,
        "patience": patience,
        "metadata": metadata,
        "decoder_channels": plain(decoder_channels, deep=True),
    }


class SegmentationTask(RankRandomStreams, SemanticSegmentationTask):
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
        hp = self.hparams
        variant, state = pretrained(hp.weights, hp.backbone)
        network = build_unet(
            int(hp.in_channels),
            int(hp.num_classes),
            hp.backbone,
            variant,
            hp.encoder_depth,
            hp.decoder_channels,
        )
        #: encoder stages the network never runs, dropped by build_unet (state-dict prefixes)
        self.unused_stages = tuple(f"model.{name}" for name in unused_stages(network))
        if state is not None:
            dropped = [name.split(".", 1)[1] for name in unused_stages(network)]
            network.encoder.load_state_dict(drop_unused_stage_keys(state, dropped))
        for part, frozen in (("encoder", hp.freeze_backbone), ("decoder", hp.freeze_decoder)):
            if frozen:
                getattr(network, part).requires_grad_(False)
        if self.channels_last:
            network = network.to(memory_format=torch.channels_last)
        self.model = network

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
