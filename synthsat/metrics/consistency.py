"""Segmentation consistency: does a real-trained segmenter recover the conditioning mask?

The standard check in semantic image synthesis: a segmentation model trained on *real*
imagery is applied to synthetic images, and its prediction is scored (mIoU, as in
:mod:`synthsat.metrics.segmentation`) against the masks the images were generated from.
A perfect generator (synthetic == real) scores the model's real-imagery mIoU; lower values
mean the synthetic imagery does not show the classes it was asked for, or shows them in a
way the real-trained model does not recognise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from synthsat.metrics.segmentation import SegmentationScores


class SegmentationConsistency(SegmentationScores):
    """A real-trained segmenter's scores of images against their masks, accumulated.

    The scores of :class:`~synthsat.metrics.segmentation.SegmentationScores` (same
    arguments), fed with logits that must have one channel per class; batches are scored
    on the CPU, wherever the segmenter ran.
    """

    def update(self, logits: Tensor, masks: Tensor) -> None:
        """Add the ``(B, num_classes, H, W)`` logits of a batch and its ``(B, H, W)`` masks.

        Raises:
            ValueError: if the logits have another number of classes.
        """
        num_classes = self.confmat.num_classes
        if logits.shape[1] != num_classes:
            raise ValueError(
                f"model gives {logits.shape[1]} class logits, data has {num_classes} classes"
            )
        super().update(logits.cpu(), masks.long().cpu())


def consistency_miou(
    model: Callable[[Tensor], Tensor],
    images: Tensor,
    masks: Tensor,
    num_classes: int,
    scored_classes: Sequence[int],
    ignore_index: int | None,
    class_names: Sequence[str] | None = None,
    batch_size: int = 8,
) -> dict[str, Any]:
    """mIoU of ``model`` on (synthetic) ``images`` against the ``masks`` they came from.

    Args:
        model: maps normalised ``(B, C, H, W)`` images to ``(B, num_classes, H, W)`` logits
            (e.g. ``SegmentationTask.predict_logits``).
        images: normalised images ``(N, C, H, W)``.
        masks: the conditioning masks ``(N, H, W)``.
        num_classes: number of classes.
        scored_classes: classes averaged into the mIoU.
        ignore_index: mask value that is not scored.
        class_names: names for the per-class IoU keys.
        batch_size: images per forward pass.

    Returns:
        the scores of :func:`~synthsat.metrics.segmentation.scores_from_confusion`
        (``miou``, ``iou``, ``pixel_accuracy``, ...).
    """
    if images.shape[0] != masks.shape[0] or images.shape[-2:] != masks.shape[-2:]:
        raise ValueError(
            f"images {tuple(images.shape)} and masks {tuple(masks.shape)} do not match"
        )
    scores = SegmentationConsistency(num_classes, scored_classes, ignore_index, class_names)
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            batch = slice(start, start + batch_size)
            scores.update(model(images[batch]), masks[batch])
    return scores.compute()
