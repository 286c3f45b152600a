"""Multiscale PatchGAN discriminator that returns its intermediate features."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (Isola et al. 2017) with spectral and instance norm.

    ``n_layers`` stride-2 4x4 convolutions (channels ``ndf`` doubling up to
    ``8 * ndf``), one stride-1 convolution, then a 1-channel 4x4 convolution that
    scores each patch.

    Args:
        in_channels: input channels (image bands + mask classes).
        ndf: channels of the first convolution.
        n_layers: stride-2 convolutions.
    """

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 4) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        self.layers.append(nn.Sequential(nn.Conv2d(in_channels, ndf, 4, 2, 2), nn.LeakyReLU(0.2)))
        cin = ndf
        for i in range(1, n_layers + 1):
            cout = ndf * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            self.layers.append(
                nn.Sequential(
                    spectral_norm(nn.Conv2d(cin, cout, 4, stride, 2)),
                    nn.GroupNorm(cout, cout, affine=False),
                    nn.LeakyReLU(0.2),
                )
            )
            cin = cout
        self.layers.append(nn.Conv2d(cin, 1, 4, 1, 2))

    def forward(self, x: Tensor) -> list[Tensor]:
        """All layer outputs; the last one is the patch score map (B, 1, h, w)."""
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats


class MultiscaleDiscriminator(nn.Module):
    """``num_D`` PatchGAN discriminators on the input at successively halved resolutions.

    Args:
        in_channels: input channels (image bands + mask classes).
        num_D: number of scales.
        ndf: channels of each discriminator's first convolution.
        n_layers: stride-2 convolutions per discriminator.
    """

    def __init__(
        self,
        in_channels: int,
        num_D: int = 2,
        ndf: int = 64,  # noqa: N803
        n_layers: int = 4,
    ) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            PatchDiscriminator(in_channels, ndf, n_layers) for _ in range(num_D)
        )

    def forward(self, x: Tensor) -> list[list[Tensor]]:
        """Features of every scale: ``out[scale][layer]``; ``out[scale][-1]`` is the score."""
        outs = []
        for i, disc in enumerate(self.discriminators):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outs.append(disc(x))
        return outs
