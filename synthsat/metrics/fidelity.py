"""FID and KID of synthetic imagery (torchmetrics), with Inception weights from a local file.

torchmetrics computes FID and KID with torch-fidelity's InceptionV3
(``pip install -e ".[fid]"``), whose weights it otherwise downloads on first use. synthsat
never downloads: the weights file :data:`INCEPTION_WEIGHTS_FILE` must be in torch's hub cache
(``$TORCH_HOME/hub/checkpoints/``, by default ``~/.cache/torch/hub/checkpoints/``) or at
a configured path; otherwise :func:`inception_extractor` raises
:class:`FidelityUnavailableError` saying what to install or where to put which file.

Images are compared as 8-bit, 3-band (RGB or configured) composites. Features are
extracted once per image and fed to torchmetrics' ``FrechetInceptionDistance`` and
``KernelInceptionDistance``; any ``nn.Module`` mapping uint8 images to ``(B, D)`` features
can stand in for Inception.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from synthsat.metrics.accumulator import MatchedFeatures

#: torch-fidelity's InceptionV3 weights (converted from the TensorFlow FID network).
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
#: Where torch-fidelity publishes :data:`INCEPTION_WEIGHTS_FILE`.
INCEPTION_WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_WEIGHTS_FILE
)
#: Feature layers torchmetrics' InceptionV3 offers.
INCEPTION_FEATURES = (64, 192, 768, 2048)
#: Settings of FID / KID; ``enabled`` is true (required), false (skipped) or "auto"
#: (computed when torch-fidelity and the weights are there, else noted in the result).
FID_DEFAULTS: dict[str, Any] = {
    "enabled": "auto",
    "bands": None,
    "feature": 2048,
    "weights_path": None,
    "kid_subsets": 100,
    "kid_subset_size": 1000,
}


class FidelityUnavailableError(RuntimeError):
    """FID / KID cannot run here: torch-fidelity or the Inception weights are missing."""


def default_weights_path() -> Path:
    """Where torch's hub cache keeps :data:`INCEPTION_WEIGHTS_FILE`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE


def find_inception_weights(weights_path: str | Path | None = None) -> Path:
    """The Inception weights file to use, checking that it and torch-fidelity are there.

    Args:
        weights_path: a configured weights file; None looks in torch's hub cache.

    Raises:
        FidelityUnavailableError: naming the missing package and / or file and how to
            provide them.
    """
    problems = []
    if importlib.util.find_spec("torch_fidelity") is None:
        problems.append(
            "the package torch-fidelity is not installed (pip install "
            "torch-fidelity, or torchmetrics[image])"
        )
    path = Path(weights_path).expanduser() if weights_path else default_weights_path()
    if not path.is_file():
        where = (
            "the configured Inception weights file"
            if weights_path
            else "the Inception weights are not in torch's hub cache:"
        )
        problems.append(
            f"{where} {path} does not exist; download {INCEPTION_WEIGHTS_URL} on "
            f"a machine with internet access and copy it to {default_weights_path()}"
            f" (or anywhere, and set fid.weights_path=/path/to/"
            f"{INCEPTION_WEIGHTS_FILE})"
        )
    if problems:
        raise FidelityUnavailableError(
            "FID/KID need torch-fidelity's InceptionV3: "
            + "; ".join(problems)
            + ". Or set fid.enabled=false; the weight-free metrics do not need it."
        )
    return path


def inception_extractor(feature: int = 2048, weights_path: str | Path | None = None) -> nn.Module:
    """torchmetrics' InceptionV3 feature extractor, loaded from a local weights file.

    Args:
        feature: feature layer width, one of :data:`INCEPTION_FEATURES`.
        weights_path: the weights file; None looks in torch's hub cache.

    Returns:
        a module mapping ``(B, 3, H, W)`` uint8 images to ``(B, feature)`` features.
    """
    if feature not in INCEPTION_FEATURES:
        raise ValueError(f"fid.feature must be one of {INCEPTION_FEATURES}, got {feature}")
    path = find_inception_weights(weights_path)
    from torchmetrics.image.fid import NoTrainInceptionV3

    return NoTrainInceptionV3(
        name="inception-v3-compat",
        features_list=[str(feature)],
        feature_extractor_weights_path=str(path),
    )


def resolve_fid_extractor(
    settings: Mapping[str, Any], extractor: nn.Module | None, device: torch.device
) -> tuple[nn.Module | None, str | None]:
    """The FID feature extractor the settings ask for, or None and the reason there is none.

    Args:
        settings: FID settings (:data:`FID_DEFAULTS`; ``enabled``, ``feature``,
            ``weights_path`` are read).
        extractor: a module to use instead of Inception (put in eval mode on ``device``).
        device: where the extractor runs.

    Raises:
        ValueError: if ``enabled`` is not true, false or "auto".
        FidelityUnavailableError: if ``enabled`` is true and Inception is unavailable
            (with "auto" this is a warning and the reason is returned).
    """
    enabled = settings["enabled"]
    if enabled not in (True, False, "auto"):
        raise ValueError(f"fid.enabled must be true, false or auto, got {enabled!r}")
    if enabled is False:
        return None, "disabled (fid.enabled=false)"
    if extractor is not None:
        return extractor.to(device).eval(), None
    try:
        feature, weights = int(settings["feature"]), settings["weights_path"]
        return inception_extractor(feature, weights).to(device), None
    except FidelityUnavailableError as err:
        if enabled is True:
            raise
        warnings.warn(f"skipping FID/KID: {err}", stacklevel=3)
        return None, str(err)


def to_uint8(images: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """Scale raw ``(N, C, H, W)`` values linearly from per-band ``[low, high]`` to uint8."""
    low = low.to(images).view(1, -1, 1, 1)
    high = high.to(images).view(1, -1, 1, 1)
    scaled = (images.float() - low) / (high - low).clamp(min=1e-12)
    return (scaled.clamp(0, 1) * 255).round().to(torch.uint8)


class _Precomputed(nn.Module):
    """Hands already extracted features to a torchmetrics metric unchanged."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def extract_features(extractor: nn.Module, images: Tensor, batch_size: int = 16) -> Tensor:
    """``(N, D)`` features of ``extractor`` for ``(N, 3, H, W)`` images, in batches."""
    device = next(extractor.parameters(), torch.empty(0)).device
    with torch.no_grad():
        out = [
            extractor(images[i : i + batch_size].to(device)).flatten(1).double().cpu()
            for i in range(0, images.shape[0], batch_size)
        ]
    return torch.cat(out)


def fid_kid_from_features(
    real: Tensor,
    synthetic: Tensor,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """FID and KID (mean, std) between two ``(N, D)`` feature sets via torchmetrics.

    KID's subset size is capped at the smaller set size; its random subsets are drawn
    from a generator seeded with ``seed``.
    """
    n = min(real.shape[0], synthetic.shape[0])
    if n < 2:
        raise ValueError(
            f"FID/KID need at least 2 real and 2 synthetic images, got "
            f"{real.shape[0]} and {synthetic.shape[0]}"
        )
    dim = real.shape[1]
    fid = FrechetInceptionDistance(feature=_Precomputed(dim))
    kid = KernelInceptionDistance(
        feature=_Precomputed(dim), subsets=kid_subsets, subset_size=min(kid_subset_size, n)
    )
    for metric in (fid, kid):
        metric.update(real.double(), real=True)
        metric.update(synthetic.double(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return {
        "fid": float(fid.compute().clamp(min=0)),
        "kid_mean": float(kid_mean),
        "kid_std": float(kid_std),
    }


class FidKid:
    """FID and KID of real images against matched synthetic ones, accumulated.

    Features are extracted at each :meth:`update`. With ``samples`` synthetic samples per
    real image, FID and KID compare the real images with the ``k``-th sample of every
    image (:class:`~synthsat.metrics.accumulator.MatchedFeatures`) and are averaged over
    ``k``.

    Args:
        extractor: feature extractor, e.g. :func:`inception_extractor`.
        samples: synthetic samples per real image.
        batch_size: images per forward pass.
        kid_subsets: number of KID subsets.
        kid_subset_size: KID subset size (capped at the smaller set size).
        seed: seed of KID's subsets.
    """

    def __init__(
        self,
        extractor: nn.Module,
        samples: int = 1,
        batch_size: int = 16,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        seed: int = 0,
    ) -> None:
        self.extractor = extractor
        self.batch_size = batch_size
        self.kid_subsets = kid_subsets
        self.kid_subset_size = kid_subset_size
        self.seed = seed
        self.features = MatchedFeatures(samples)

    def update(self, real: Tensor, synthetic: Tensor) -> None:
        """Add ``(N, 3, H, W)`` real images and their ``(N * samples, 3, H, W)`` samples
        (uint8 for Inception; whatever the extractor takes otherwise)."""
        self.features.add(
            extract_features(self.extractor, real, self.batch_size),
            extract_features(self.extractor, synthetic, self.batch_size),
        )

    @property
    def count(self) -> int:
        """Real images added so far."""
        return self.features.count

    def compute(self) -> dict[str, float]:
        """``{"fid", "kid_mean", "kid_std"}``, each the mean over the synthetic sets."""
        real, synthetic = self.features.sets()
        per_set = [
            fid_kid_from_features(real, s, self.kid_subsets, self.kid_subset_size, self.seed)
            for s in synthetic
        ]
        return {key: float(np.mean([r[key] for r in per_set])) for key in per_set[0]}


def fid_kid(
    real: Tensor,
    synthetic: Tensor,
    extractor: nn.Module,
    batch_size: int = 16,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """FID and KID between real and synthetic ``(N, 3, H, W)`` uint8 images.

    Args:
        real: real images (uint8 for Inception; whatever ``extractor`` takes otherwise).
        synthetic: synthetic images, same format.
        extractor: feature extractor, e.g. :func:`inception_extractor`.
        batch_size: images per forward pass.
        kid_subsets: number of KID subsets.
        kid_subset_size: KID subset size (capped at the smaller set size).
        seed: seed of KID's subsets.

    Returns:
        ``{"fid", "kid_mean", "kid_std"}``.
    """
    scores = FidKid(extractor, 1, batch_size, kid_subsets, kid_subset_size, seed)
    scores.update(real, synthetic)
    return scores.compute()
