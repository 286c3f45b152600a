"""A segmentation model trained on real imagery, and the metrics it scores synthetic chips by.

:class:`Segmenter` wraps the model as the metrics use it (logits, band normalisation,
encoder). :class:`SegmenterMetrics` feeds it real chips and their synthetic samples, one
forward pass per chip, into three accumulators: the segmentation consistency of the
samples (:mod:`synthsat.metrics.consistency`), the same scores on the real chips (the
reference a perfect generator reaches) and the domain Fréchet distance between their
pooled encoder features (:mod:`synthsat.metrics.frechet`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from synthsat.data.datasets import Normalizer
from synthsat.metrics.consistency import SegmentationConsistency
from synthsat.metrics.frechet import FrechetDistance, pooled_features


@dataclass
class Segmenter:
    """A segmentation model trained on real imagery, as the metrics use it.

    Attributes:
        logits: normalised ``(B, C, H, W)`` images -> ``(B, K, H, W)`` logits.
        normalizer: the band normalisation the model was trained with.
        encoder: normalised images -> deepest feature map ``(B, D, h, w)`` (or a list of
            feature maps, deepest last); None skips the domain Fréchet distance.
    """

    logits: Callable[[Tensor], Tensor]
    normalizer: Normalizer
    encoder: Callable[[Tensor], Any] | None = None

    def predict(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Logits and pooled deepest encoder features (None without an encoder).

        An ``nn.Module`` encoder that runs inside :attr:`logits` is read with a forward
        hook, so the encoder runs once per image; any other encoder is called separately.
        """
        captured: list[Any] = []
        hook = None
        if isinstance(self.encoder, nn.Module):
            hook = self.encoder.register_forward_hook(lambda m, i, out: captured.append(out))
        try:
            with torch.no_grad():
                logits = self.logits(images)
        finally:
            if hook is not None:
                hook.remove()
        if self.encoder is None:
            return logits, None
        if len(captured) == 1:
            return logits, pooled_features(lambda _: captured[0], images)
        return logits, pooled_features(self.encoder, images)

    @classmethod
    def from_task(cls, task: nn.Module) -> Segmenter:
        """From a :class:`~synthsat.tasks.segmentation.SegmentationTask` (or look-alike).

        Uses ``task.predict_logits``, the band statistics of the data metadata in its
        hparams and the encoder of its U-Net, ``task.model.encoder``.
        """
        hparams = task.hparams
        meta = hparams.get("metadata", hparams.get("data"))
        if meta is None:
            raise ValueError(
                "the segmentation task's hparams hold no data metadata "
                "('metadata': classes, bands, mean, std, ...)"
            )
        task.eval()
        encoder = getattr(getattr(task, "model", None), "encoder", None)
        return cls(
            task.predict_logits,
            Normalizer(np.asarray(meta["mean"]), np.asarray(meta["std"])),
            encoder,
        )


class SegmenterMetrics:
    """Segmentation consistency, its real reference and the domain Fréchet distance.

    Args:
        segmenter: the real-trained model.
        metadata: the data metadata (``classes``, ``scored_classes``, ``ignore_index``).
        samples: synthetic samples per real chip.
        batch_size: images per forward pass.
        device: where the model runs.
    """

    def __init__(
        self,
        segmenter: Segmenter,
        metadata: Mapping[str, Any],
        samples: int,
        batch_size: int = 8,
        device: torch.device | str = "cpu",
    ) -> None:
        classes = list(metadata["classes"])
        scoring = (len(classes), list(metadata["scored_classes"]), metadata["ignore_index"])
        self.segmenter = segmenter
        self.samples = samples
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.real = SegmentationConsistency(*scoring, classes)
        self.synthetic = SegmentationConsistency(*scoring, classes)
        self.domain = FrechetDistance(samples)

    def _predict(
        self, images: Tensor, masks: Tensor, scores: SegmentationConsistency
    ) -> Tensor | None:
        """Score the predictions of raw ``images`` against ``masks``; their pooled features
        (None without an encoder)."""
        images = self.segmenter.normalizer.normalize(images)
        features = []
        for start in range(0, images.shape[0], self.batch_size):
            batch = slice(start, start + self.batch_size)
            logits, pooled = self.segmenter.predict(images[batch].to(self.device))
            scores.update(logits, masks[batch])
            if pooled is not None:
                features.append(pooled.cpu())
        return torch.cat(features) if features else None

    def update(self, real: Tensor, synthetic: Tensor, masks: Tensor) -> None:
        """Add ``(N, C, H, W)`` real chips, their ``(N, samples, C, H, W)`` synthetic
        samples (raw values) and the ``(N, H, W)`` masks they were generated from."""
        real_features = self._predict(real, masks, self.real)
        synthetic_features = self._predict(
            synthetic.flatten(0, 1), masks.repeat_interleave(self.samples, 0), self.synthetic
        )
        if real_features is not None and synthetic_features is not None:
            self.domain.update(real_features, synthetic_features)

    def compute(self) -> tuple[dict[str, float | None], dict[str, Any]]:
        """Headline numbers (``consistency_miou``, ``real_miou``, ``domain_fd``: None
        without an encoder or with fewer than two chips) and per-class IoUs
        (``consistency_iou``, ``real_iou``)."""
        synthetic, real = self.synthetic.compute(), self.real.compute()
        domain_fd = self.domain.compute() if self.domain.count >= 2 else None
        headline = {
            "consistency_miou": synthetic["miou"],
            "real_miou": real["miou"],
            "domain_fd": domain_fd,
        }
        return headline, {"consistency_iou": synthetic["iou"], "real_iou": real["iou"]}
