"""VAE style encoder: image -> (mu, logvar) of the generator's style code."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm


class StyleEncoder(nn.Module):
    """Convolutional encoder of the image style (Park et al. 2019, VAE variant).

    Stride-2 3x3 convolutions (spectral norm, instance norm, LeakyReLU) double the
    channels from ``nef`` up to ``8 * nef`` while halving the resolution down to about
    4 px, an adaptive average pool to 4 x 4 makes any input size work, and two linear
    heads give ``mu`` and ``logvar``.

    Args:
        in_channels: image bands.
        z_dim: style code length.
        patch_size: typical input side, to choose the number of down-sampling stages.
        nef: channels of the first convolution.
        max_layers: cap on the number of down-sampling stages.
    """

    def __init__(
        self,
        in_channels: int,
        z_dim: int,
        patch_size: int = 256,
        nef: int = 64,
        max_layers: int = 6,
    ) -> None:
        super().__init__()
        n_layers = max(1, min(max_layers, int(math.log2(max(patch_size, 8) // 4))))
        layers: list[nn.Module] = []
        cin = in_channels
        for i in range(n_layers):
            cout = nef * min(2**i, 8)
            layers += [
                spectral_norm(nn.Conv2d(cin, cout, 3, stride=2, padding=1)),
                nn.GroupNorm(cout, cout, affine=False),
                nn.LeakyReLU(0.2),
            ]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.mu = nn.Linear(cin * 16, z_dim)
        self.logvar = nn.Linear(cin * 16, z_dim)

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Encode normalised images (B, C, H, W) into ``(mu, logvar)``, each (B, z_dim)."""
        x = self.pool(F.leaky_relu(self.features(image), 0.2)).flatten(1)
        return self.mu(x), self.logvar(x)
