"""OASIS segmentation discriminator (Sushko et al., ICLR 2021), reimplemented from the paper.

The discriminator is a U-Net that segments an image into the ``K`` land-cover classes
plus one extra class, "fake": it judges every pixel, sees no mask (the mask enters only
through its per-pixel targets) and needs no pretrained network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm


def _conv(cin: int, cout: int, k: int = 3) -> nn.Module:
    return spectral_norm(nn.Conv2d(cin, cout, k, padding=k // 2))


class _ResBlock(nn.Module):
    """Pre-activation residual block: (LeakyReLU -> 3x3 conv) x 2, 1x1 shortcut if needed."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv_0, self.conv_1 = _conv(cin, cout), _conv(cout, cout)
        self.shortcut = _conv(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        dx = self.conv_1(F.leaky_relu(self.conv_0(F.leaky_relu(x, 0.2)), 0.2))
        return self.shortcut(x) + dx


class SegmentationDiscriminator(nn.Module):
    """U-Net discriminator with ``num_classes + 1`` output channels (the last is "fake").

    ``n_layers`` encoder stages (residual block, 2x average-pool down-sampling; channels
    ``ndf * min(2**i, 8)``), a residual block at the bottom, then as many decoder stages
    (2x nearest up-sampling, concatenated skip connection, residual block), and a 1x1
    convolution to per-pixel logits at the input resolution. Spectral norm throughout.

    Args:
        in_channels: image bands.
        num_classes: land-cover classes K (the output has K + 1 channels).
        ndf: channels of the first stage.
        n_layers: down-sampling stages (inputs must be multiples of ``2**n_layers``).
    """

    def __init__(self, in_channels: int, num_classes: int, ndf: int = 32, n_layers: int = 4):
        super().__init__()
        chans = [ndf * min(2**i, 8) for i in range(n_layers + 1)]
        self.stem = _conv(in_channels, chans[0])
        self.down = nn.ModuleList(_ResBlock(chans[i], chans[i + 1]) for i in range(n_layers))
        self.bottom = _ResBlock(chans[-1], chans[-1])
        self.up = nn.ModuleList(
            _ResBlock(chans[i + 1] + chans[i + 1], chans[i]) for i in reversed(range(n_layers))
        )
        self.head = _conv(chans[0], num_classes + 1, 1)
        self.num_classes = num_classes
        self.n_layers = n_layers

    def forward(self, image: Tensor) -> Tensor:
        """Per-pixel logits (B, K + 1, H, W) of normalised images (B, C, H, W)."""
        return self.features(image)[-1]

    def features(self, image: Tensor) -> list[Tensor]:
        """The decoder stages' activations, coarse to fine, then the logits (last): the
        features that feature matching compares (:func:`~synthsat.losses.feature_matching_loss`
        takes them as one scale)."""
        f = 2**self.n_layers
        if image.shape[-2] % f or image.shape[-1] % f:
            raise ValueError(f"image size {tuple(image.shape[-2:])} must be a multiple of {f}")
        x = self.stem(image)
        skips = []
        for block in self.down:
            x = F.avg_pool2d(block(x), 2)
            skips.append(x)
        x = self.bottom(x)
        out = []
        for block, skip in zip(self.up, reversed(skips)):
            x = F.interpolate(block(torch.cat([x, skip], dim=1)), scale_factor=2, mode="nearest")
            out.append(x)
        return [*out, self.head(F.leaky_relu(x, 0.2))]
