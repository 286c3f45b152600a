"""Generator training losses: hinge GAN, feature matching, KL, VGG perceptual, DSGAN
diversity, and the OASIS (N+1)-class segmentation losses with LabelMix.

Patch discriminator outputs follow :class:`synthsat.models.MultiscaleDiscriminator`: a list
over scales of lists of layer features, the last feature of each scale being the
patch score map.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Features = Sequence[Sequence[Tensor]]


def _scores(outputs: Features) -> list[Tensor]:
    return [scale[-1] for scale in outputs]


def hinge_d_loss(real: Features, fake: Features) -> Tensor:
    """Discriminator hinge loss ``relu(1 - D(real)) + relu(1 + D(fake))``, averaged over scales."""
    losses = [
        F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(_scores(real), _scores(fake))
    ]
    return torch.stack(losses).mean()


def hinge_g_loss(fake: Features) -> Tensor:
    """Generator hinge loss ``-D(fake)``, averaged over scales."""
    return torch.stack([-f.mean() for f in _scores(fake)]).mean()


def feature_matching_loss(real: Features, fake: Features) -> Tensor:
    """L1 between discriminator features of real and fake images (Wang et al. 2018).

    Summed over the intermediate layers (all but the score map) and averaged over
    scales; real features are treated as constants.
    """
    losses = []
    for r_scale, f_scale in zip(real, fake):
        losses.append(sum(F.l1_loss(f, r.detach()) for r, f in zip(r_scale[:-1], f_scale[:-1])))
    return torch.stack(losses).mean()


def kl_loss(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over code dimensions, averaged over the batch."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


def diversity_loss(
    fake1: Tensor,
    fake2: Tensor,
    z1: Tensor | Sequence[Tensor],
    z2: Tensor | Sequence[Tensor],
    tau: float | None = None,
    eps: float = 1e-8,
) -> Tensor:
    """DSGAN diversity-sensitive loss (Yang et al. 2019).

    ``-mean_b(min(|G(z1) - G(z2)|_1 / |z1 - z2|_1, tau))`` with both norms taken as mean
    absolute differences per sample (so the ratio does not depend on image or code size).
    When the latent input has several parts (a style code and a noise field), the code
    distance is the mean of the parts' distances, so each part counts equally whatever
    its size.

    Args:
        fake1: images generated from ``z1`` (B, C, H, W).
        fake2: images generated from ``z2`` for the same masks.
        z1: first codes (B, z_dim), or a sequence of latent parts (B, ...).
        z2: second codes, like ``z1``.
        tau: clamp of the ratio; None leaves it unbounded (the original code).
        eps: guards against identical codes.

    Returns:
        the loss (minimising it increases the diversity).
    """
    parts1 = [z1] if isinstance(z1, Tensor) else list(z1)
    parts2 = [z2] if isinstance(z2, Tensor) else list(z2)
    if len(parts1) != len(parts2) or not parts1:
        raise ValueError("z1 and z2 must have the same, non-zero number of parts")
    image_dist = (fake1 - fake2).abs().flatten(1).mean(dim=1)
    code_dist = torch.stack(
        [(a - b).abs().flatten(1).mean(dim=1) for a, b in zip(parts1, parts2)]
    ).mean(dim=0)
    ratio = image_dist / (code_dist + eps)
    if tau is not None:
        ratio = ratio.clamp(max=tau)
    return -ratio.mean()


def class_statistics_loss(fake: Tensor, real: Tensor, onehot: Tensor, eps: float = 1e-6) -> Tensor:
    """L1 between the per-image, per-class band means and standard deviations of two images.

    For every image and every class present in its mask, the mean and the standard
    deviation of each band over the class's pixels are compared between ``fake`` and
    ``real``. It tells the generator each class's colour and contrast from the first
    steps on, long before an adversary can, and leaves the arrangement of the texture free.

    Args:
        fake: generated images (B, C, H, W).
        real: real images of the same masks (B, C, H, W).
        onehot: one-hot masks (B, K, H, W); all-zero (ignored) pixels do not count.

    Returns:
        the mean over present (image, class, band) of |mean difference| + |std difference|.
    """
    counts = onehot.sum(dim=(2, 3))
    present = counts > 0
    if not bool(present.any()):
        return fake.new_zeros(())
    weights = onehot / counts.clamp(min=1)[:, :, None, None]

    def moments(x: Tensor) -> tuple[Tensor, Tensor]:
        mean = torch.einsum("bkhw,bchw->bkc", weights, x)
        sq = torch.einsum("bkhw,bchw->bkc", weights, x * x)
        return mean, (sq - mean * mean).clamp(min=0).add(eps).sqrt()

    (mf, sf), (mr, sr) = moments(fake), moments(real)
    return ((mf - mr).abs() + (sf - sr).abs())[present].mean()


def class_texture_loss(
    fake: Tensor, real: Tensor, onehot: Tensor, scales: Sequence[int] = (1, 2)
) -> Tensor:
    """L1 between per-image, per-class texture statistics of two images, at ``scales``.

    Beyond :func:`class_statistics_loss`'s band mean and std: at each scale ``s`` (the
    images average-pooled by ``s``, the masks taken every ``s``-th pixel), for every image
    and every class present, the mean absolute horizontal and vertical difference of each
    band (the class's high-frequency energy at that scale, a two-band summary of its
    spectrum) and the covariance of the bands (its colour correlation, a Gram term of
    the centred bands) are compared between ``fake`` and ``real``. Only pixels whose
    neighbour (right, below) is of the same class count, so class borders add nothing.

    Args:
        fake: generated images (B, C, H, W).
        real: real images of the same masks (B, C, H, W).
        onehot: one-hot masks (B, K, H, W); all-zero (ignored) pixels do not count.
        scales: pooling factors (each >= 1 and smaller than the image).

    Returns:
        the mean over scales of the mean |difference| over present (image, class,
        statistic); 0 where no class is present.
    """
    total = fake.new_zeros(())
    for s in scales:
        f = F.avg_pool2d(fake, s) if s > 1 else fake
        r = F.avg_pool2d(real, s) if s > 1 else real
        m = onehot[:, :, s // 2 :: s, s // 2 :: s][:, :, : f.shape[2], : f.shape[3]]
        total = total + _texture_gap(f, r, m)
    return total / len(scales)


def _texture_gap(fake: Tensor, real: Tensor, onehot: Tensor) -> Tensor:
    """:func:`class_texture_loss` at one scale."""
    right = onehot[..., :, :-1] * onehot[..., :, 1:]  # the pixel and its right neighbour
    below = onehot[..., :-1, :] * onehot[..., 1:, :]
    counts = onehot.sum(dim=(2, 3))
    present = counts > 0
    if not bool(present.any()):
        return fake.new_zeros(())

    def stats(x: Tensor) -> Tensor:
        dx = (x[..., :, 1:] - x[..., :, :-1]).abs()
        dy = (x[..., 1:, :] - x[..., :-1, :]).abs()
        gx = torch.einsum("bkhw,bchw->bkc", right, dx) / right.sum((2, 3)).clamp(min=1)[..., None]
        gy = torch.einsum("bkhw,bchw->bkc", below, dy) / below.sum((2, 3)).clamp(min=1)[..., None]
        w = onehot / counts.clamp(min=1)[:, :, None, None]
        mean = torch.einsum("bkhw,bchw->bkc", w, x)
        second = torch.einsum("bkhw,bchw,bdhw->bkcd", w, x, x)
        cov = second - mean[..., :, None] * mean[..., None, :]
        return torch.cat([gx, gy, cov.flatten(2)], dim=2)

    return (stats(fake) - stats(real)).abs()[present].mean()


def balanced_cross_entropy(logits: Tensor, target: Tensor, ignore_index: int) -> Tensor:
    """Class-balanced per-pixel cross-entropy (OASIS, Sushko et al. 2021).

    Each class present in ``target`` is weighted by the inverse of its pixel count in
    the batch, so the loss is the mean over the present classes of their mean pixel loss:
    a small class counts as much as a large one.

    Args:
        logits: (B, K + 1, H, W) per-pixel logits.
        target: (B, H, W) class indices; ``ignore_index`` pixels do not count.
        ignore_index: target value of pixels to ignore.
    """
    n = logits.shape[1]
    valid = (target >= 0) & (target < n) & (target != ignore_index)
    counts = torch.bincount(target[valid], minlength=n).to(logits.dtype)
    weight = torch.where(counts > 0, 1.0 / counts.clamp(min=1), torch.zeros_like(counts))
    safe = torch.where(valid, target, torch.full_like(target, -100))
    return F.cross_entropy(logits, safe, weight=weight, ignore_index=-100)


def oasis_d_loss(
    real_logits: Tensor, fake_logits: Tensor, mask: Tensor, ignore_index: int
) -> tuple[Tensor, Tensor]:
    """OASIS discriminator loss: real pixels -> their classes, fake pixels -> class K.

    Returns:
        the balanced cross-entropy on real pixels and the cross-entropy of fake pixels
        against the "fake" class (the last channel); ignored pixels count in neither.
    """
    fake_class = fake_logits.shape[1] - 1
    real = balanced_cross_entropy(real_logits, mask, ignore_index)
    valid = (mask >= 0) & (mask < fake_class) & (mask != ignore_index)
    fake_target = torch.where(valid, torch.full_like(mask, fake_class), torch.full_like(mask, -100))
    fake = F.cross_entropy(fake_logits, fake_target, ignore_index=-100)
    return real, fake


def labelmix(
    real: Tensor, fake: Tensor, mask: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """LabelMix (OASIS): mix real and fake images along the classes of the mask.

    Each class of each sample's mask is taken from the real image or the fake with
    probability 1/2.

    Returns:
        the mixed images (B, C, H, W) and the binary map M (B, 1, H, W), 1 = real.
    """
    top = int(mask.max()) + 1 if mask.numel() else 1
    coin = torch.randint(0, 2, (mask.shape[0], max(top, 1)), generator=generator)
    coin = coin.to(mask.device)
    m = torch.gather(coin, 1, mask.clamp(min=0).flatten(1)).view_as(mask)
    m = m.unsqueeze(1).to(real.dtype)
    return m * real + (1 - m) * fake, m


def labelmix_loss(
    mixed_logits: Tensor, real_logits: Tensor, fake_logits: Tensor, m: Tensor
) -> Tensor:
    """LabelMix consistency: D(mix(real, fake)) should equal mix(D(real), D(fake)) (MSE)."""
    return F.mse_loss(mixed_logits, m * real_logits + (1 - m) * fake_logits)


class VGGPerceptualLoss(nn.Module):
    """L1 between VGG-19 features (relu1_1 .. relu5_1, weights 1/32 .. 1) of two images.

    The RGB bands of the images are fed in the datamodule's per-band standardised space,
    which, like ImageNet normalisation, has zero mean and unit variance per channel.
    Images with fewer than three bands repeat their first band.

    Args:
        rgb_bands: band indices fed as R, G, B.
        pretrained: load ImageNet weights from the local torch hub cache; they are never
            downloaded, and a missing file raises a ``FileNotFoundError`` naming it.
    """

    LAYERS = (1, 6, 11, 20, 29)
    WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)

    def __init__(self, rgb_bands: Sequence[int] = (0, 1, 2), pretrained: bool = True) -> None:
        super().__init__()
        from torchvision.models import VGG19_Weights
        from torchvision.models.vgg import cfgs, make_layers

        features = make_layers(cfgs["E"])  # the VGG-19 convolutional trunk
        if pretrained:
            url = VGG19_Weights.IMAGENET1K_V1.url
            path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
            if not path.exists():
                raise FileNotFoundError(
                    f"lambda_vgg > 0 needs the ImageNet VGG-19 weights at {path} (not found; "
                    f"nothing is downloaded). Put {url} there, or set lambda_vgg=0."
                )
            state = torch.load(path, map_location="cpu", weights_only=True)
            features.load_state_dict(
                {
                    k.removeprefix("features."): v
                    for k, v in state.items()
                    if k.startswith("features.")
                }
            )
        self.rgb_bands = list(rgb_bands)[:3]
        self.slices = nn.ModuleList()
        start = 0
        for end in self.LAYERS:
            self.slices.append(nn.Sequential(*features[start : end + 1]))
            start = end + 1
        self.requires_grad_(False).eval()

    def _rgb(self, x: Tensor) -> Tensor:
        bands = self.rgb_bands if x.shape[1] >= 3 else [0, 0, 0]
        return x[:, bands]

    def forward(self, fake: Tensor, real: Tensor) -> Tensor:
        """Perceptual distance of ``fake`` to ``real`` (both (B, C, H, W), normalised)."""
        x, y = self._rgb(fake), self._rgb(real)
        loss = fake.new_zeros(())
        for weight, block in zip(self.WEIGHTS, self.slices):
            x, y = block(x), block(y)
            loss = loss + weight * F.l1_loss(x, y.detach())
        return loss

    def train(self, mode: bool = True) -> VGGPerceptualLoss:
        """Stay in eval mode (frozen feature extractor)."""
        return super().train(False)
