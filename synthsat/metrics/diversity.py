"""Intra-mask diversity: how different are the ``K`` samples generated from one mask?

Two measures over all ``K (K - 1) / 2`` pairs of samples of the same mask:

- mean pairwise L1 distance (mean absolute pixel difference), and
- ``1 - MS-SSIM`` (multi-scale structural similarity, via torchmetrics).

Both are zero when all samples are identical (mode collapse onto the mask).
:class:`IntraMaskDiversity` averages them over the sample sets of many masks.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

#: MS-SSIM scale weights of Wang et al. (2003), finest scale first.
MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _pairs(samples: Tensor) -> tuple[Tensor, Tensor]:
    if samples.ndim != 4:
        raise ValueError(f"samples must be (K, C, H, W), got shape {tuple(samples.shape)}")
    if samples.shape[0] < 2:
        raise ValueError(f"diversity needs at least 2 samples per mask, got {samples.shape[0]}")
    index = torch.combinations(torch.arange(samples.shape[0], device=samples.device), r=2)
    return samples[index[:, 0]], samples[index[:, 1]]


def pairwise_l1(samples: Tensor) -> float:
    """Mean absolute difference between the ``(K, C, H, W)`` samples, over all pairs."""
    a, b = _pairs(samples.float())
    return float((a - b).abs().mean())


def ms_ssim_betas(size: int, kernel_size: int = 11) -> tuple[float, ...]:
    """The largest prefix of :data:`MS_SSIM_BETAS` (renormalised) that ``size`` px allow.

    torchmetrics needs ``size >= 2**n`` and ``size // (n - 1)**2 > kernel_size - 1`` for
    ``n`` scales; small chips get fewer scales instead of an error.
    """
    for n in range(len(MS_SSIM_BETAS), 0, -1):
        if size >= 2**n and size // max(1, n - 1) ** 2 > kernel_size - 1:
            betas = MS_SSIM_BETAS[:n]
            return tuple(b / sum(betas) for b in betas)
    raise ValueError(
        f"images of {size} px are too small for MS-SSIM with a {kernel_size} px "
        f"kernel (need at least {kernel_size} px)"
    )


def ms_ssim_diversity(samples: Tensor, data_range: float = 1.0) -> float:
    """``1 - MS-SSIM`` averaged over all pairs of the ``(K, C, H, W)`` samples.

    Args:
        samples: the samples of one mask, scaled to ``[0, data_range]``.
        data_range: value range of ``samples``.
    """
    a, b = _pairs(samples.float())
    betas = ms_ssim_betas(min(samples.shape[-2:]))
    similarity = multiscale_structural_similarity_index_measure(
        a, b, data_range=data_range, betas=betas, reduction="none"
    )
    return float(1 - similarity.mean())


class IntraMaskDiversity:
    """Mean pairwise L1 and ``1 - MS-SSIM`` over the sample sets of many masks.

    Each set is scored on its own (:func:`pairwise_l1`, :func:`ms_ssim_diversity`) and
    the scores are averaged over sets: L1 on values standardised per band
    (``(x - mean) / std``), MS-SSIM on values mapped per band from ``[low, high]`` to
    ``[0, 1]`` (and clipped there).

    Args:
        mean: per-band ``(C,)`` mean of the L1 standardisation.
        std: per-band ``(C,)`` standard deviation of the L1 standardisation.
        low: per-band ``(C,)`` value mapped to 0 for MS-SSIM.
        high: per-band ``(C,)`` value mapped to 1 for MS-SSIM.
    """

    def __init__(self, mean: Tensor, std: Tensor, low: Tensor, high: Tensor) -> None:
        self.mean, self.std = mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)
        self.low, self.span = low.view(1, 1, -1, 1, 1), (high - low).view(1, 1, -1, 1, 1)
        self.l1: list[float] = []
        self.ms_ssim: list[float] = []

    def update(self, samples: Tensor) -> None:
        """Add the sample sets ``(N, K, C, H, W)`` (raw values, ``K >= 2``) of ``N`` masks."""
        unit = (samples - self.low) / self.span
        for i in range(samples.shape[0]):
            self.l1.append(pairwise_l1((samples[i] - self.mean) / self.std))
            self.ms_ssim.append(ms_ssim_diversity(unit[i].clamp(0, 1)))

    def compute(self) -> dict[str, float | None]:
        """``diversity_l1`` and ``diversity_ms_ssim``, means over the sets (None without any)."""
        return {
            "diversity_l1": float(np.mean(self.l1)) if self.l1 else None,
            "diversity_ms_ssim": float(np.mean(self.ms_ssim)) if self.ms_ssim else None,
        }
