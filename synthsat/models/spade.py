"""SPADE: spatially-adaptive normalisation and the mask-conditional generator.

Reimplemented from Park et al., "Semantic Image Synthesis with Spatially-Adaptive
Normalization" (CVPR 2019). The generator maps a one-hot land-cover mask and a style
code ``z`` to an image with any number of bands, in the datamodule's normalised space.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm


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
        # GroupNorm with one channel per group is instance norm, and much faster on CPUs
        return nn.GroupNorm(channels, channels, affine=False)
    if kind == "batch":
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
        """Normalise ``x`` (B, C, h, w) and modulate it by ``onehot`` (B, K, H, W)."""
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


class SPADEGenerator(nn.Module):
    """Mask-conditional SPADE generator.

    ``z -> linear -> (C0, s, s)`` feature map at the starting grid, then one SPADE
    residual block at that grid and one per up-sampling stage (nearest x2 up-sampling
    before each), halving channels towards full resolution, then LeakyReLU, a 3x3
    convolution to ``out_channels`` and ``output_scale * tanh``.

    The number of up-sampling stages is ``log2(patch_size / start_size)``. The forward
    pass works on any H x W that is a multiple of ``2**num_up``: the starting grid is
    ``(H, W) / 2**num_up`` and the z map is resized to it when it differs from
    ``start_size``.

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
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.out_channels = out_channels
        self.z_dim = z_dim
        self.start_size = start_size
        self.num_up = num_upsampling(patch_size, start_size)
        self.output_scale = output_scale
        chans = [
            ngf * min(2 ** (self.num_up - level), max_mult) for level in range(self.num_up + 1)
        ]
        self.fc = nn.Linear(z_dim, chans[0] * start_size * start_size)
        self.head = SPADEResBlock(chans[0], chans[0], num_classes, spade_hidden, norm, spectral)
        self.ups = nn.ModuleList(
            SPADEResBlock(chans[i], chans[i + 1], num_classes, spade_hidden, norm, spectral)
            for i in range(self.num_up)
        )
        self.out = nn.Conv2d(chans[-1], out_channels, 3, padding=1)

    def forward(self, onehot: Tensor, z: Tensor) -> Tensor:
        """Generate images.

        Args:
            onehot: one-hot mask (B, K, H, W), H and W multiples of ``2**num_up``.
            z: style codes (B, z_dim).

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
        s = self.start_size
        x = self.fc(z).view(b, -1, s, s)
        if (h // f, w // f) != (s, s):
            x = F.interpolate(x, size=(h // f, w // f), mode="bilinear", align_corners=False)
        x = self.head(x, onehot)
        for block in self.ups:
            x = block(F.interpolate(x, scale_factor=2, mode="nearest"), onehot)
        x = self.out(F.leaky_relu(x, 0.2))
        return self.output_scale * torch.tanh(x)
