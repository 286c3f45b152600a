"""Segmentation scores from a confusion matrix: mIoU, per-class IoU, pixel accuracy.

The confusion matrix is accumulated by torchmetrics
(:class:`~torchmetrics.classification.MulticlassConfusionMatrix`, rows = true class,
columns = predicted class) with the ignore index excluded, so unlabelled pixels
count nowhere. From it:

* IoU of class ``c`` = ``TP / (TP + FP + FN)``; NaN when ``c`` occurs neither in the
  labels nor in the predictions (nothing to score).
* mIoU = mean IoU over ``scored_classes`` (macro), NaN classes left out.
* pixel accuracy = correct pixels / pixels whose label is a scored class.

Predictions of unscored classes (e.g. Dubai's ``unlabeled``) count as errors on
scored pixels, so they lower the scores of the classes they are confused with.

The per-class IoU is torchmetrics' ``MulticlassJaccardIndex(average="none")`` of the
same pixels, computed here from the matrix in float64 (torchmetrics reduces in float32,
which differs from it in the 8th digit and rounds pixel counts above 2**24). Its
``macro`` mean is not the mIoU: it averages every class but the ignore index, so an
unscored class would count.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix

from synthsat.atomic import write_text


def scores_from_confusion(
    confmat: torch.Tensor, scored_classes: Sequence[int], class_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """mIoU, per-class IoU and pixel accuracy from a confusion matrix.

    Args:
        confmat: (K, K) counts, rows = true class, columns = predicted class.
        scored_classes: classes averaged into mIoU and counted in pixel accuracy.
        class_names: names for the per-class IoU keys (default: the class indices).

    Returns:
        ``{"miou": float, "iou": {name: float}, "pixel_accuracy": float,
        "confusion_matrix": list of lists, "scored_pixels": int}``; per-class IoU
        is given for every class, NaN where undefined.
    """
    cm = confmat.detach().to(torch.float64).cpu()
    k = cm.shape[0]
    if cm.shape != (k, k):
        raise ValueError(f"confusion matrix must be square, got shape {tuple(cm.shape)}")
    bad = [c for c in scored_classes if not 0 <= c < k]
    if bad:
        raise ValueError(f"scored classes {bad} outside 0..{k - 1}")
    names = list(class_names) if class_names is not None else [str(c) for c in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for a {k}-class confusion matrix")
    tp = cm.diagonal()
    union = cm.sum(0) + cm.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
    scored = torch.as_tensor(list(scored_classes), dtype=torch.long)
    scored_iou = iou[scored]
    valid = ~scored_iou.isnan()
    miou = float(scored_iou[valid].mean()) if bool(valid.any()) else float("nan")
    scored_pixels = cm[scored].sum()
    acc = float(tp[scored].sum() / scored_pixels) if scored_pixels > 0 else float("nan")
    return {
        "miou": miou,
        "iou": {names[c]: float(iou[c]) for c in range(k)},
        "pixel_accuracy": acc,
        "confusion_matrix": cm.to(torch.int64).tolist(),
        "scored_pixels": int(scored_pixels),
    }


class SegmentationScores(nn.Module):
    """Accumulates a confusion matrix over batches and turns it into scores.

    Args:
        num_classes: number of classes (logit channels).
        scored_classes: classes averaged into mIoU.
        ignore_index: label value excluded everywhere (may be a class index, e.g. no-data 0,
            or a value outside the classes, e.g. 255).
        class_names: names for the per-class IoU keys.
    """

    def __init__(
        self,
        num_classes: int,
        scored_classes: Sequence[int],
        ignore_index: int | None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.confmat = MulticlassConfusionMatrix(
            num_classes, ignore_index=ignore_index, validate_args=False
        )
        self.scored_classes = list(scored_classes)
        self.class_names = list(class_names) if class_names is not None else None

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``preds`` are logits (B, K, H, W) or class indices (B, H, W)."""
        if preds.ndim == target.ndim + 1:
            preds = preds.argmax(1)
        self.confmat.update(preds, target)

    def compute(self) -> dict[str, Any]:
        """Scores of everything added since the last :meth:`reset`."""
        return scores_from_confusion(self.confmat.compute(), self.scored_classes, self.class_names)

    def reset(self) -> None:
        """Start a new accumulation."""
        self.confmat.reset()


def _logit_fn(model_or_task: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    predict = getattr(model_or_task, "predict_logits", None)
    return predict if callable(predict) else model_or_task


@torch.inference_mode()
def evaluate_model(
    model_or_task: nn.Module,
    dataloader: Iterable[dict[str, Any]],
    num_classes: int,
    scored_classes: Sequence[int],
    ignore_index: int | None,
    class_names: Sequence[str] | None = None,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Score a segmentation model on every batch of ``dataloader``.

    Args:
        model_or_task: a module mapping normalised images (B, C, H, W) to logits
            (B, num_classes, H, W), or anything with such a ``predict_logits`` method
            (e.g. :class:`~synthsat.tasks.segmentation.SegmentationTask`).
        dataloader: batches of the sample format (``image``, ``mask``).
        num_classes: number of classes.
        scored_classes: classes averaged into mIoU.
        ignore_index: label value excluded from all scores.
        class_names: names for the per-class IoU keys.
        device: where to run (default: the model's device).

    Returns:
        the dict of :func:`scores_from_confusion`.
    """
    if device is None:
        param = next(model_or_task.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    was_training = model_or_task.training
    model_or_task.eval()
    predict = _logit_fn(model_or_task)
    scores = SegmentationScores(num_classes, scored_classes, ignore_index, class_names)
    scores.to(device)
    try:
        for batch in dataloader:
            logits = predict(batch["image"].to(device))
            if logits.shape[1] != num_classes:
                raise ValueError(
                    f"model gives {logits.shape[1]} class logits, data has {num_classes} classes"
                )
            scores.update(logits, batch["mask"].to(device))
    finally:
        model_or_task.train(was_training)
    return scores.compute()


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_metrics(path: str | Path, metrics: dict[str, Any]) -> Path:
    """Write ``metrics`` as indented JSON, NaN as null, atomically (:mod:`synthsat.atomic`)."""
    return write_text(path, json.dumps(_json_safe(metrics), indent=2, allow_nan=False))
