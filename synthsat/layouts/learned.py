"""``method=learned``: a small convolutional VAE of one-hot land-cover masks.

Trained on the training masks only: random crops of side ``crop`` (default: the
layout's shorter side), taken from random training masks under a random flip / quarter
turn and shrunk (nearest pixel) to ``resolution``, one-hot over the values present (the
classes, and the ignore index as one more). The encoder is three stride-2 convolutions
and a linear layer to the latent mean and log-variance; the decoder mirrors it. Loss:
cross-entropy of the reconstruction plus ``beta`` times the KL divergence to N(0, I).
A layout is the per-pixel arg-max of the decoded ``z ~ N(0, I)``, enlarged (nearest) to
the layout's shape. Training is seeded (``torch.manual_seed``) and sampling uses one
generator per layout, so a seed gives the same masks on the same machine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from synthsat.errors import ConfigError
from synthsat.layouts.geometry import random_piece
from synthsat.layouts.recombine import layout_rng
from synthsat.layouts.training import TrainingMasks

#: The settings of ``conf/layouts/learned.yaml`` and their checks.
KEYS = ("resolution", "crop", "channels", "latent", "beta", "steps", "batch_size", "lr")


class MaskVAE(nn.Module):
    """A convolutional VAE of ``(K, r, r)`` one-hot masks (``r`` a multiple of 8).

    Args:
        values: the distinct mask values (``K`` of them).
        resolution: the side ``r`` of the masks it models.
        channels: the first layer's channels (doubled twice deeper).
        latent: latent dimensions.
    """

    def __init__(self, values: int, resolution: int, channels: int = 32, latent: int = 32) -> None:
        super().__init__()
        c, self.side = channels, resolution // 8
        self.deep = 4 * c
        self.encoder = nn.Sequential(
            nn.Conv2d(values, c, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(c, 2 * c, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * c, 4 * c, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Flatten(),
        )  # fmt: skip
        flat = 4 * c * self.side * self.side
        self.to_stats = nn.Linear(flat, 2 * latent)
        self.from_z = nn.Linear(latent, flat)
        self.decoder = nn.Sequential(
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(4 * c, 2 * c, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(2 * c, c, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(c, values, 4, 2, 1),
        )  # fmt: skip
        self.latent = latent

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The latent mean and log-variance of one-hot masks ``x``."""
        mean, logvar = self.to_stats(self.encoder(x)).chunk(2, dim=1)
        return mean, logvar.clamp(-10, 10)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Per-pixel logits of the values, ``(B, K, r, r)``."""
        return self.decoder(self.from_z(z).view(-1, self.deep, self.side, self.side))

    def loss(self, labels: torch.Tensor, beta: float) -> torch.Tensor:
        """Cross-entropy of the reconstruction plus ``beta`` x KL, per pixel, for value
        indices ``labels`` (B, r, r)."""
        x = F.one_hot(labels, self.decoder[-1].out_channels).permute(0, 3, 1, 2).float()
        mean, logvar = self.encode(x)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        recon = F.cross_entropy(self.decode(z), labels)
        kl = -0.5 * (1 + logvar - mean**2 - logvar.exp()).sum(1).mean()
        return recon + beta * kl / labels[0].numel()


def check_settings(settings: Mapping[str, Any], shape: tuple[int, int]) -> dict[str, Any]:
    """The checked ``learned`` settings, ``crop`` filled in.

    Raises:
        ConfigError: naming the key, its value and the rule.
    """
    out = {k: settings[k] for k in KEYS}
    resolution = out["resolution"]
    if isinstance(resolution, bool) or int(resolution) < 8 or int(resolution) % 8:
        raise ConfigError(f"learned.resolution={resolution}: must be a multiple of 8, >= 8")
    if out["crop"] is None:
        out["crop"] = min(shape)
    for key in ("crop", "channels", "latent", "steps", "batch_size"):
        if isinstance(out[key], bool) or int(out[key]) < 1:
            raise ConfigError(f"learned.{key}={out[key]}: must be a whole number >= 1")
        out[key] = int(out[key])
    for key in ("beta", "lr"):
        if not float(out[key]) > 0:
            raise ConfigError(f"learned.{key}={out[key]}: must be a number > 0")
        out[key] = float(out[key])
    out["resolution"] = int(resolution)
    return out


def _shrink(mask: np.ndarray, side: int) -> np.ndarray:
    """``mask`` resampled (nearest pixel) to ``side`` x ``side``."""
    rows = (np.arange(side) * mask.shape[0] // side).astype(np.int64)
    cols = (np.arange(side) * mask.shape[1] // side).astype(np.int64)
    return mask[np.ix_(rows, cols)]


def train_vae(
    training: TrainingMasks, settings: Mapping[str, Any], seed: int
) -> tuple[MaskVAE, np.ndarray, list[float]]:
    """Train a :class:`MaskVAE` on crops of the training masks.

    Returns:
        the model (eval mode), the mask value of each of its channels, and the loss of
        each step.

    Raises:
        ConfigError: ``crop`` larger than every training mask.
    """
    values = np.unique(np.concatenate([np.unique(m) for m in training.masks]))
    lookup = np.zeros(int(values.max()) + 1, np.int64)
    lookup[values] = np.arange(len(values))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1 << 20]))
    torch.manual_seed(int(seed))
    side, crop = settings["resolution"], settings["crop"]
    model = MaskVAE(len(values), side, settings["channels"], settings["latent"])
    optimiser = torch.optim.Adam(model.parameters(), lr=settings["lr"])
    losses = []
    for _ in range(settings["steps"]):
        batch = []
        for _ in range(settings["batch_size"]):
            piece = random_piece(rng, training.masks, (crop, crop))
            if piece is None:
                raise ConfigError(
                    f"learned.crop={crop}: larger than every training mask (sizes "
                    f"{sorted({m.shape for m in training.masks})[:5]})"
                )
            batch.append(lookup[_shrink(piece, side)])
        labels = torch.from_numpy(np.stack(batch))
        loss = model.loss(labels, settings["beta"])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return model.eval(), values, losses


@torch.no_grad()
def sample(
    model: MaskVAE, values: np.ndarray, seed: int, index: int, shape: tuple[int, int], dtype: Any
) -> np.ndarray:
    """Layout ``index`` of a run seeded ``seed``: the arg-max of a decoded ``z ~ N(0, I)``,
    enlarged (nearest) to ``shape``, as mask values of ``dtype``."""
    generator = torch.Generator().manual_seed(int(layout_rng(seed, index).integers(1 << 62)))
    z = torch.randn(1, model.latent, generator=generator)
    small = model.decode(z)[0].argmax(0).numpy()
    rows = np.arange(shape[0]) * small.shape[0] // shape[0]
    cols = np.arange(shape[1]) * small.shape[1] // shape[1]
    return values[small[np.ix_(rows, cols)]].astype(dtype)


def learned_layouts(
    training: TrainingMasks, settings: Mapping[str, Any], shape: tuple[int, int], n: int, seed: int
) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """``n`` layouts of ``shape`` from a VAE trained on ``training`` (see the module)."""
    checked = check_settings(settings, shape)
    model, values, losses = train_vae(training, checked, seed)
    tail = losses[-max(1, len(losses) // 10) :]
    info = {"final_loss": float(np.mean(tail)), "steps": checked["steps"]}
    layouts = [sample(model, values, seed, i, shape, training.dtype) for i in range(n)]
    return layouts, [dict(info) for _ in range(n)]
