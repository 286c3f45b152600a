"""What a :class:`~synthsat.tasks.segmentation.SegmentationTask` is built from: its
arguments checked (torchgeo's names, the deprecated ones, the data's agreement), the loss
each name builds, the data's metadata read from a datamodule, and the encoder weights a
file or a name gives."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from enum import Enum
from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.encoders import encoders as SMP_ENCODERS
from torch import nn

from synthsat.models.segmentation import build_unet, drop_unused_stage_keys, unused_stages
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


def build_network(hp: Any, channels_last: bool) -> tuple[nn.Module, tuple[str, ...]]:
    """The task's U-Net (:func:`~synthsat.models.segmentation.build_unet`) from its
    hyperparameters ``hp``, with its pretrained encoder weights (:func:`pretrained`) and its
    frozen parts, and the state-dict prefixes of the encoder stages it never runs."""
    variant, state = pretrained(hp.weights, hp.backbone)
    network = build_unet(
        int(hp.in_channels),
        int(hp.num_classes),
        hp.backbone,
        variant,
        hp.encoder_depth,
        hp.decoder_channels,
    )
    unused = tuple(f"model.{name}" for name in unused_stages(network))
    if state is not None:
        dropped = [name.split(".", 1)[1] for name in unused_stages(network)]
        network.encoder.load_state_dict(drop_unused_stage_keys(state, dropped))
    for part, frozen in (("encoder", hp.freeze_backbone), ("decoder", hp.freeze_decoder)):
        if frozen:
            getattr(network, part).requires_grad_(False)
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
    return network, unused
