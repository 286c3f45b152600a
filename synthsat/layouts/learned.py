"""``method=learned``: a small convolutional VAE of one-hot land-cover masks.

Trained on the training masks only: random crops of side ``crop`` (default: the
layout's shorter side), taken from random training masks under a random flip / quarter
turn and shrunk (nearest pixel) to ``resolution``, one-hot over the values present (the
classes, and the ignore index as one more). The encoder is three stride-2 convolutions
and a linear layer to the latent mean and log-variance; the decoder mirrors it. Loss:
cross-entropy of the reconstruction plus ``beta`` times the KL divergence to N(0, I).
A layout is the per-pixel arg-max of the decoded ``z ~ N(0, I)``, enlarged (nearest) to
the layout's shape. With ``calibrate`` the arg-max is taken over the logits plus one offset
per value (:func:`share_offsets`), fitted on a batch of decoded draws so that each value
takes its training share of the pixels: a VAE's decoder is blurry, so a plain arg-max
hands thin, rare classes (roads) to their neighbours (on Dubai: roads 0.4 % of the
pixels against 8.5 % in the training masks). Training is seeded (``torch.manual_seed``)
and sampling uses one generator per layout, so a seed gives the same masks on the same
machine.
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
KEYS = (
    "resolution", "crop", "channels", "latent", "beta", "steps", "batch_size", "lr", "calibrate"
)  # fmt: skip

#: Decoded draws the calibration's offsets are fitted on, and the fit's iterations.
CALIBRATION_DRAWS = 64
CALIBRATION_ITERATIONS = 200


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
    if not isinstance(out["calibrate"], bool):
        raise ConfigError(f"learned.calibrate={out['calibrate']}: must be true or false")
    return out


def value_shares(training: TrainingMasks, values: np.ndarray) -> np.ndarray:
    """The share of the training masks' pixels that hold each of ``values``."""
    counts = np.zeros(len(values), np.float64)
    for mask in training.masks:
        found, n = np.unique(mask, return_counts=True)
        counts[np.searchsorted(values, found)] += n
    return counts / counts.sum()


def share_offsets(
    logits: torch.Tensor, target: np.ndarray, iterations: int = CALIBRATION_ITERATIONS
) -> torch.Tensor:
    """Per-value offsets ``b`` (K,) such that the per-pixel arg-max of ``logits + b``
    over ``logits`` (B, K, H, W) gives each value about its ``target`` share of the pixels.

    A multiplicative fit in share space: each iteration moves ``b_k`` by the log-ratio of
    the target share to the share it has, times a step in the logits' own scale (their
    spread over the pixels) that shrinks (an arg-max share is a step function of ``b``,
    so a fixed step oscillates); the offsets with the smallest share error are returned.
    Values the target never holds keep no pixels (their offset is -inf).
    """
    k = logits.shape[1]
    want = torch.as_tensor(target, dtype=torch.float64)
    live = want > 0
    flat = logits.detach().double().permute(0, 2, 3, 1).reshape(-1, k)
    scale = float(flat.std(0).mean()) or 1.0
    offsets = torch.zeros(k, dtype=torch.float64)
    offsets[~live] = -torch.inf
    best, best_error = offsets.clone(), float("inf")
    for i in range(iterations):
        have = torch.bincount((flat + offsets).argmax(1), minlength=k).double() / len(flat)
        error = float((have - want).abs().sum())
        if error < best_error:
            best, best_error = offsets.clone(), error
        step = scale / (1.0 + 0.05 * i)
        offsets[live] += step * (torch.log(want[live]) - torch.log(have[live].clamp_min(1e-6)))
        offsets[live] -= offsets[live].mean()
    return best.float()


def shares_of(logits: torch.Tensor, offsets: torch.Tensor) -> np.ndarray:
    """The pixel share of each value in the arg-max of ``logits + offsets``."""
    k = logits.shape[1]
    won = (logits + offsets.view(1, k, 1, 1)).argmax(1).flatten()
    return (torch.bincount(won, minlength=k).double() / won.numel()).numpy()


@torch.no_grad()
def calibration_logits(model: MaskVAE, seed: int) -> torch.Tensor:
    """The decoded logits of :data:`CALIBRATION_DRAWS` draws ``z ~ N(0, I)`` (seeded,
    apart from the layouts' own draws)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1 << 21]))
    generator = torch.Generator().manual_seed(int(rng.integers(1 << 62)))
    return model.decode(torch.randn(CALIBRATION_DRAWS, model.latent, generator=generator))


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
    model: MaskVAE,
    values: np.ndarray,
    seed: int,
    index: int,
    shape: tuple[int, int],
    dtype: Any,
    offsets: torch.Tensor | None = None,
) -> np.ndarray:
    """Layout ``index`` of a run seeded ``seed``: the arg-max of a decoded ``z ~ N(0, I)``
    (plus per-value ``offsets``, :func:`share_offsets`), enlarged (nearest) to ``shape``,
    as mask values of ``dtype``."""
    generator = torch.Generator().manual_seed(int(layout_rng(seed, index).integers(1 << 62)))
    z = torch.randn(1, model.latent, generator=generator)
    logits = model.decode(z)[0]
    if offsets is not None:
        logits = logits + offsets.view(-1, 1, 1)
    small = logits.argmax(0).numpy()
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
    info: dict[str, Any] = {"final_loss": float(np.mean(tail)), "steps": checked["steps"]}
    offsets = None
    if checked["calibrate"]:
        logits = calibration_logits(model, seed)
        target = value_shares(training, values)
        offsets = share_offsets(logits, target)
        info["calibration"] = {
            "values": values.tolist(),
            "training_shares": np.round(target, 4).tolist(),
            "argmax_shares": np.round(shares_of(logits, torch.zeros_like(offsets)), 4).tolist(),
            "calibrated_shares": np.round(shares_of(logits, offsets), 4).tolist(),
            "offsets": [round(float(b), 4) for b in offsets],
        }
    layouts = [sample(model, values, seed, i, shape, training.dtype, offsets) for i in range(n)]
    return layouts, [dict(info) for _ in range(n)]
