"""Fréchet distance between Gaussian fits of feature sets.

The Fréchet (2-Wasserstein) distance between ``N(mu1, S1)`` and ``N(mu2, S2)`` is::

    d^2 = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)

(the squared distance, as in FID). The *domain* Fréchet distance applies it to the
global-average-pooled deepest encoder features of a segmentation model trained on real
imagery: it measures how far synthetic imagery is from real imagery in the feature space
that matters for the downstream task, for any number of bands.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from synthsat.metrics.accumulator import MatchedFeatures


def gaussian_fit(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and (unbiased) covariance of an ``(N, D)`` feature matrix, in float64.

    Raises:
        ValueError: if ``features`` is not 2-D or has fewer than two rows.
    """
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {tuple(features.shape)}")
    if features.shape[0] < 2:
        raise ValueError(
            f"a Gaussian fit needs at least 2 feature vectors, got {features.shape[0]}"
        )
    x = features.detach().to(torch.float64)
    mu = x.mean(0)
    centred = x - mu
    sigma = centred.T @ centred / (x.shape[0] - 1)
    return mu, sigma


def _sqrt_psd(matrix: Tensor) -> Tensor:
    """Square root of a symmetric positive semi-definite matrix (eigenvalues clamped at 0)."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """Squared Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    Uses the symmetric form ``tr((S1^1/2 S2 S1^1/2)^1/2)`` of the cross term, which is
    stable for singular covariances (fewer samples than feature dimensions).
    """
    mu1, mu2 = mu1.to(torch.float64), mu2.to(torch.float64)
    sigma1, sigma2 = sigma1.to(torch.float64), sigma2.to(torch.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"feature dimensions differ: {tuple(mu1.shape)} vs {tuple(mu2.shape)}")
    root1 = _sqrt_psd(sigma1)
    cross = torch.linalg.eigvalsh(root1 @ sigma2 @ root1).clamp(min=0).sqrt().sum()
    value = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * cross
    return float(value.clamp(min=0))


class FrechetDistance:
    """Squared Fréchet distance of real features to matched synthetic ones, accumulated.

    With ``samples`` synthetic samples per real item, the distance of the real features
    to those of the ``k``-th sample of every item, averaged over ``k``
    (:class:`~synthsat.metrics.accumulator.MatchedFeatures`).

    Args:
        samples: synthetic samples per real item.
    """

    def __init__(self, samples: int = 1) -> None:
        self.features = MatchedFeatures(samples)

    def update(self, real: Tensor, synthetic: Tensor) -> None:
        """Add ``(N, D)`` real features and the ``(N * samples, D)`` synthetic ones."""
        self.features.add(real, synthetic)

    @property
    def count(self) -> int:
        """Real feature vectors added so far."""
        return self.features.count

    def compute(self) -> float:
        """The mean squared Fréchet distance over the synthetic sets."""
        real, synthetic = self.features.sets()
        fit = gaussian_fit(real)
        return float(np.mean([frechet_distance(*fit, *gaussian_fit(s)) for s in synthetic]))


def feature_frechet_distance(real: Tensor, synthetic: Tensor) -> float:
    """Squared Fréchet distance between Gaussian fits of two ``(N, D)`` feature sets."""
    distance = FrechetDistance()
    distance.update(real, synthetic)
    return distance.compute()


def pooled_features(
    encoder: Callable[[Tensor], Tensor | Sequence[Tensor]], images: Tensor
) -> Tensor:
    """Global-average-pooled deepest features of ``encoder`` for a batch of images.

    Args:
        encoder: maps ``(B, C, H, W)`` images to a feature map ``(B, D, h, w)``, a list of
            feature maps (shallow to deep, as segmentation-models-pytorch encoders return;
            the last is used) or already pooled ``(B, D)`` features.
        images: normalised images ``(B, C, H, W)``.

    Returns:
        ``(B, D)`` float32 features.
    """
    with torch.no_grad():
        out = encoder(images)
    if isinstance(out, (list, tuple)):
        out = out[-1]
    if out.ndim == 4:
        out = out.mean(dim=(2, 3))
    if out.ndim != 2:
        raise ValueError(f"encoder output must be (B, D) or (B, D, h, w), got {tuple(out.shape)}")
    return out.float()
