"""SPADE: spatially-adaptive normalisation and the mask-conditional generator.

Reimplemented from Park et al., "Semantic Image Synthesis with Spatially-Adaptive
Normalization" (CVPR 2019), with the OASIS options of Sushko et al., "You Only Need
Adversarial Supervision for Semantic Image Synthesis" (ICLR 2021): the generator maps a
one-hot land-cover mask, a style code ``z`` and an optional spatial noise field to an image
with any number of bands, in the datamodule's normalised space.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from synthsat import schemas
from synthsat.models.noise import random_noise


def mask_to_onehot(mask: Tensor, num_classes: int) -> Tensor:
    """One-hot encode a batch of class-index masks.

    Args:
        mask: integer tensor (B, H, W) of class indices.
        num_classes: number of classes K.

    Returns:
        float tensor (B, K, H, W); pixels whose value is outside ``0..K-1`` (e.g. an
        ignore index of 255) get an all-zero vector.
    """
    if mask.dim() != 3:
        raise ValueError(f"mask_to_onehot expects a (B, H, W) mask, got shape {tuple(mask.shape)}")
    mask = mask.long()
    valid = (mask >= 0) & (mask < num_classes)
    onehot = F.one_hot(torch.where(valid, mask, 0), num_classes)
    onehot = onehot * valid.unsqueeze(-1)
    return onehot.permute(0, 3, 1, 2).float()


def _sn(module: nn.Module, enabled: bool) -> nn.Module:
    return spectral_norm(module) if enabled else module


def _param_free_norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        # GroupNorm with one channel per group is instance norm, and much faster on CPUs.
        # Its statistics are those of each chip: tiles made chip by chip show seams.
        return nn.GroupNorm(channels, channels, affine=False)
    if kind == "batch":
        # batch statistics in training, running statistics at inference: chip-independent
        return nn.BatchNorm2d(channels, affine=False)
    raise ValueError(f"unknown normalisation '{kind}' (use 'instance' or 'batch')")


class SPADE(nn.Module):
    """Spatially-adaptive (de)normalisation.

    Normalises ``x`` without learned affine parameters, then modulates it with a
    per-pixel scale and bias predicted from the mask: ``norm(x) * (1 + gamma) + beta``.

    Args:
        channels: channels of the normalised activation.
        label_channels: channels of the one-hot mask.
        hidden: channels of the shared mask embedding.
        norm: parameter-free normalisation, ``instance`` or ``batch``.
    """

    def __init__(
        self, channels: int, label_channels: int, hidden: int = 128, norm: str = "instance"
    ) -> None:
        super().__init__()
        self.norm = _param_free_norm(norm, channels)
        self.shared = nn.Sequential(nn.Conv2d(label_channels, hidden, 3, padding=1), nn.ReLU())
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: Tensor, onehot: Tensor) -> Tensor:
        """Normalise ``x`` (B, C, h, w) and modulate it by the conditioning map ``onehot``
        (B, K, H, W): the one-hot mask, possibly with noise channels."""
        if onehot.shape[-2:] != x.shape[-2:]:
            onehot = F.interpolate(onehot, size=x.shape[-2:], mode="nearest")
        emb = self.shared(onehot)
        return self.norm(x) * (1 + self.gamma(emb)) + self.beta(emb)


class SPADEResBlock(nn.Module):
    """Residual block of two SPADE -> LeakyReLU -> 3x3 conv units.

    A learned 1x1 shortcut (with its own SPADE) is used when the channel count changes.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        label_channels: channels of the one-hot mask.
        hidden: channels of the SPADE mask embeddings.
        norm: parameter-free normalisation inside SPADE.
        spectral: spectral normalisation of the convolutions.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        label_channels: int,
        hidden: int = 128,
        norm: str = "instance",
        spectral: bool = True,
    ) -> None:
        super().__init__()
        middle = min(in_channels, out_channels)
        self.norm_0 = SPADE(in_channels, label_channels, hidden, norm)
        self.conv_0 = _sn(nn.Conv2d(in_channels, middle, 3, padding=1), spectral)
        self.norm_1 = SPADE(middle, label_channels, hidden, norm)
        self.conv_1 = _sn(nn.Conv2d(middle, out_channels, 3, padding=1), spectral)
        self.learned_shortcut = in_channels != out_channels
        if self.learned_shortcut:
            self.norm_s = SPADE(in_channels, label_channels, hidden, norm)
            self.conv_s = _sn(nn.Conv2d(in_channels, out_channels, 1, bias=False), spectral)

    def forward(self, x: Tensor, onehot: Tensor) -> Tensor:
        """Apply the block to ``x`` conditioned on ``onehot``."""
        shortcut = self.conv_s(self.norm_s(x, onehot)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, onehot), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, onehot), 0.2))
        return shortcut + dx


def num_upsampling(patch_size: int, start_size: int) -> int:
    """Up-sampling stages from a ``start_size`` grid to ``patch_size`` (a power-of-two ratio)."""
    ratio = patch_size / start_size
    n_up = round(math.log2(ratio)) if ratio >= 1 else -1
    if n_up < 0 or start_size * 2**n_up != patch_size:
        raise ValueError(
            f"patch_size {patch_size} must be start_size {start_size} times a power of two"
        )
    return n_up


START_MODES = schemas.START_MODES  # one list: the schema checks it when composed


class SPADEGenerator(nn.Module):
    """Mask-conditional SPADE generator.

    A starting feature map ``(C0, H / 2**num_up, W / 2**num_up)``, then one SPADE
    residual block at that grid and one per up-sampling stage (nearest x2 up-sampling
    before each), halving channels towards full resolution, then LeakyReLU, a 3x3
    convolution to ``out_channels`` and ``output_scale * tanh``.

    Every SPADE layer is conditioned on the one-hot mask plus, with ``noise_dim > 0``, a
    spatial noise field (:mod:`synthsat.models.noise`), and with ``start="cond"`` also
    the style code ``z`` broadcast over the image (the OASIS "3D noise"). The starting map
    is either

    * ``fc`` (SPADE, Park et al. 2019): ``linear(z)`` reshaped to ``start_size`` px and
      resized to other grids, so the map is tied to the chip; or
    * ``cond`` (OASIS): a 3x3 convolution of the conditioning map down-sampled to the
      starting grid, so the whole network is convolutional and a chip's output depends
      only on its mask, code and noise, not on where the chip lies.

    With ``norm="batch"`` the normalisation statistics at inference are running averages
    from training, the same for every chip of a tile; instance norm (the SPADE default)
    normalises each chip by its own statistics.

    The output lives in the datamodule's normalised space (per-band ``(x - mean) / std``);
    ``output_scale * tanh`` bounds it to ``(-output_scale, output_scale)`` standard
    deviations, which must cover the data range (5 is plenty for 8-bit imagery).

    Args:
        num_classes: mask classes K (one-hot input channels).
        out_channels: image bands.
        patch_size: training patch side in pixels.
        ngf: channels at full resolution; the base of the channel schedule.
        z_dim: style code length.
        start_size: side of the starting grid for ``patch_size`` inputs.
        max_mult: cap on the channel multiplier (channels = ngf * min(2**level, max_mult)).
        spade_hidden: channels of the SPADE mask embeddings.
        norm: parameter-free normalisation inside SPADE (``instance`` or ``batch``).
        spectral: spectral normalisation of the convolutions.
        output_scale: bound of the output, in standard deviations.
        start: starting map, ``fc`` or ``cond`` (see above).
        noise_dim: channels of the spatial noise field (0: none).
        noise_cell: lattice spacing of the noise field in pixels.
    """

    def __init__(
        self,
        num_classes: int,
        out_channels: int,
        patch_size: int,
        ngf: int = 64,
        z_dim: int = 256,
        start_size: int = 8,
        max_mult: int = 16,
        spade_hidden: int = 128,
        norm: str = "instance",
        spectral: bool = True,
        output_scale: float = 5.0,
        start: str = "fc",
        noise_dim: int = 0,
        noise_cell: int = 8,
    ) -> None:
        super().__init__()
        if start not in START_MODES:
            raise ValueError(f"start must be one of {START_MODES}, got '{start}'")
        if noise_dim < 0 or noise_cell < 1:
            raise ValueError(
                f"need noise_dim >= 0 and noise_cell >= 1, got {noise_dim}, {noise_cell}"
            )
        self.num_classes = num_classes
        self.out_channels = out_channels
        self.z_dim = z_dim
        self.start_size = start_size
        self.start = start
        self.noise_dim = noise_dim
        self.noise_cell = noise_cell
        self.num_up = num_upsampling(patch_size, start_size)
        self.output_scale = output_scale
        chans = [
            ngf * min(2 ** (self.num_up - level), max_mult) for level in range(self.num_up + 1)
        ]
        cond = num_classes + noise_dim + (z_dim if start == "cond" else 0)
        if start == "fc":
            self.fc = nn.Linear(z_dim, chans[0] * start_size * start_size)
        else:
            self.fc = nn.Conv2d(cond, chans[0], 3, padding=1)
        self.head = SPADEResBlock(chans[0], chans[0], cond, spade_hidden, norm, spectral)
        self.ups = nn.ModuleList(
            SPADEResBlock(chans[i], chans[i + 1], cond, spade_hidden, norm, spectral)
            for i in range(self.num_up)
        )
        self.out = nn.Conv2d(chans[-1], out_channels, 3, padding=1)

    def sample_noise(
        self, batch: int, height: int, width: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """Random noise windows ``(batch, noise_dim, height, width)`` on this module's device."""
        device = next(self.parameters()).device
        return random_noise(
            batch, self.noise_dim, height, width, self.noise_cell, device, generator
        )

    def forward(self, onehot: Tensor, z: Tensor, noise: Tensor | None = None) -> Tensor:
        """Generate images.

        Args:
            onehot: one-hot mask (B, K, H, W), H and W multiples of ``2**num_up``.
            z: style codes (B, z_dim).
            noise: noise field (B, noise_dim, H, W); None draws a random one (ignored
                when ``noise_dim`` is 0).

        Returns:
            images (B, out_channels, H, W) in normalised space.
        """
        b, k, h, w = onehot.shape
        f = 2**self.num_up
        if k != self.num_classes:
            raise ValueError(f"generator expects {self.num_classes} mask channels, got {k}")
        if h % f or w % f:
            raise ValueError(f"mask size {h}x{w} must be a multiple of {f}")
        if z.shape != (b, self.z_dim):
            raise ValueError(f"z must have shape ({b}, {self.z_dim}), got {tuple(z.shape)}")
        parts = [onehot]
        if self.noise_dim:
            if noise is None:
                noise = self.sample_noise(b, h, w).to(onehot.dtype)
            if noise.shape != (b, self.noise_dim, h, w):
                raise ValueError(
                    f"noise must have shape ({b}, {self.noise_dim}, {h}, {w}), "
                    f"got {tuple(noise.shape)}"
                )
            parts.append(noise)
        if self.start == "cond":
            parts.append(z[:, :, None, None].expand(-1, -1, h, w))
        cond = torch.cat(parts, dim=1) if len(parts) > 1 else onehot
        pyramid = self._pyramid(cond, k)
        s = self.start_size
        if self.start == "fc":
            x = self.fc(z).view(b, -1, s, s)
            if (h // f, w // f) != (s, s):
                x = F.interpolate(x, size=(h // f, w // f), mode="bilinear", align_corners=False)
        else:
            x = self.fc(pyramid[0])
        x = self.head(x, pyramid[0])
        for level, block in enumerate(self.ups, start=1):
            x = block(F.interpolate(x, scale_factor=2, mode="nearest"), pyramid[level])
        x = self.out(F.leaky_relu(x, 0.2))
        return self.output_scale * torch.tanh(x)

    def _pyramid(self, cond: Tensor, num_classes: int) -> list[Tensor]:
        """The conditioning map at every block's grid, coarsest first.

        The mask is down-sampled by nearest neighbour (classes stay one-hot), noise and
        style by area averaging (a chip's coarse noise then matches its neighbours').
        """
        h, w = cond.shape[-2:]
        levels = []
        for level in range(self.num_up + 1):
            f = 2 ** (self.num_up - level)
            if f == 1:
                levels.append(cond)
                continue
            size = (h // f, w // f)
            mask = F.interpolate(cond[:, :num_classes], size=size, mode="nearest")
            if cond.shape[1] == num_classes:
                levels.append(mask)
            else:
                rest = F.avg_pool2d(cond[:, num_classes:], f)
                levels.append(torch.cat([mask, rest], dim=1))
        return levels
