"""The generator's adversaries: a discriminator network with the losses it is trained by.

* :class:`PatchAdversary` (SPADE, Park et al. 2019): a multiscale PatchGAN that sees the
  image with its one-hot mask, hinge losses, and discriminator feature matching for the
  generator.
* :class:`OASISAdversary` (Sushko et al. 2021): a U-Net that segments images into the
  classes plus "fake", class-balanced cross-entropy, and the LabelMix consistency
  regulariser. It needs neither feature matching nor a pretrained perceptual network.

Both expose the same two calls, so :class:`~synthsat.tasks.generator.GeneratorTask`
trains either one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from synthsat.losses import (
    balanced_cross_entropy,
    feature_matching_loss,
    hinge_d_loss,
    hinge_g_loss,
    labelmix,
    labelmix_loss,
    oasis_d_loss,
)
from synthsat.models.discriminator import MultiscaleDiscriminator
from synthsat.models.oasis import SegmentationDiscriminator
from synthsat.schemas import DISCRIMINATORS

KINDS = DISCRIMINATORS  # one list: the schema checks it when the config is composed


class PatchAdversary(nn.Module):
    """Multiscale PatchGAN with hinge losses and feature matching.

    Args:
        bands: image bands.
        num_classes: mask classes.
        ndf: channels of each discriminator's first convolution.
        num_D: discriminator scales.
        n_layers: stride-2 convolutions per discriminator.
        lambda_feat: feature matching weight (0: off).
    """

    def __init__(
        self,
        bands: int,
        num_classes: int,
        ndf: int,
        num_D: int,  # noqa: N803
        n_layers: int,
        lambda_feat: float,
    ) -> None:
        super().__init__()
        self.net = MultiscaleDiscriminator(bands + num_classes, num_D, ndf, n_layers)
        self.lambda_feat = lambda_feat

    def _features(self, onehot: Tensor, images: Sequence[Tensor]) -> list[list[list[Tensor]]]:
        """Discriminator features of several image batches (one pass, split back)."""
        x = torch.cat([torch.cat([img, onehot], dim=1) for img in images])
        outs = self.net(x)
        n = len(images)
        split = [[feat.chunk(n) for feat in scale] for scale in outs]
        return [[[feats[i] for feats in scale] for scale in split] for i in range(n)]

    def generator_terms(
        self, image: Tensor, onehot: Tensor, mask: Tensor, fakes: Sequence[Tensor]
    ) -> tuple[dict[str, Tensor], dict[str, float]]:
        """Adversarial loss of every fake; feature matching of the first fake to the real."""
        real_out, *fake_outs = self._features(onehot, [image, *fakes])
        terms = {"g_gan": torch.stack([hinge_g_loss(f) for f in fake_outs]).mean()}
        weights = {"g_gan": 1.0}
        if self.lambda_feat > 0:
            terms["g_feat"] = feature_matching_loss(real_out, fake_outs[0])
            weights["g_feat"] = self.lambda_feat
        return terms, weights

    def discriminator_loss(
        self, image: Tensor, onehot: Tensor, mask: Tensor, fakes: Sequence[Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Hinge loss on real vs (detached) fakes, with the mean scores."""
        real_out, *fake_outs = self._features(onehot, [image, *(f.detach() for f in fakes)])
        loss = torch.stack([hinge_d_loss(real_out, f) for f in fake_outs]).mean()
        real_score = torch.stack([s[-1].mean() for s in real_out]).mean()
        fake_score = torch.stack([s[-1].mean() for f in fake_outs for s in f]).mean()
        return loss, {"d_loss": loss, "d_real": real_score.detach(), "d_fake": fake_score.detach()}


class OASISAdversary(nn.Module):
    """Segmentation discriminator with (N+1)-class losses and LabelMix.

    Args:
        bands: image bands.
        num_classes: mask classes K.
        ignore_index: mask value of unlabelled pixels (no loss there).
        ndf: channels of the discriminator's first stage.
        n_layers: down-sampling stages of the U-Net.
        lambda_labelmix: weight of the LabelMix consistency loss (0: off).
        lambda_feat: weight of feature matching on the U-Net's decoder stages (not in
            OASIS; 0: off): the first fake's features against the real image's.
    """

    def __init__(
        self,
        bands: int,
        num_classes: int,
        ignore_index: int,
        ndf: int,
        n_layers: int,
        lambda_labelmix: float,
        lambda_feat: float = 0.0,
    ) -> None:
        super().__init__()
        self.net = SegmentationDiscriminator(bands, num_classes, ndf, n_layers)
        self.ignore_index = ignore_index
        self.lambda_labelmix = lambda_labelmix
        self.lambda_feat = lambda_feat

    def generator_terms(
        self, image: Tensor, onehot: Tensor, mask: Tensor, fakes: Sequence[Tensor]
    ) -> tuple[dict[str, Tensor], dict[str, float]]:
        """Every fake pixel should be segmented as its (real) class: balanced CE; with
        ``lambda_feat``, feature matching of the first fake to the real image."""
        batch = [*fakes, image] if self.lambda_feat > 0 else list(fakes)
        feats = [f.chunk(len(batch)) for f in self.net.features(torch.cat(batch))]
        logits = feats[-1][: len(fakes)]
        loss = torch.stack(
            [balanced_cross_entropy(lg, mask, self.ignore_index) for lg in logits]
        ).mean()
        terms, weights = {"g_gan": loss}, {"g_gan": 1.0}
        if self.lambda_feat > 0:
            real = [[f[-1] for f in feats]]
            first = [[f[0] for f in feats]]
            terms["g_feat"] = feature_matching_loss(real, first)
            weights["g_feat"] = self.lambda_feat
        return terms, weights

    def discriminator_loss(
        self, image: Tensor, onehot: Tensor, mask: Tensor, fakes: Sequence[Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Real pixels to their classes, fake pixels to "fake", plus LabelMix on the first fake."""
        fakes = [f.detach() for f in fakes]
        batch = [image, *fakes]
        mixed = m = None
        if self.lambda_labelmix > 0:
            mixed, m = labelmix(image, fakes[0], mask)
            batch.append(mixed)
        logits = self.net(torch.cat(batch)).chunk(len(batch))
        real_logits, fake_logits = logits[0], logits[1 : 1 + len(fakes)]
        parts = [oasis_d_loss(real_logits, f, mask, self.ignore_index) for f in fake_logits]
        d_real = torch.stack([p[0] for p in parts]).mean()
        d_fake = torch.stack([p[1] for p in parts]).mean()
        loss = d_real + d_fake
        logs = {"d_real": d_real.detach(), "d_fake": d_fake.detach()}
        if mixed is not None and m is not None:
            lm = labelmix_loss(logits[-1], real_logits, fake_logits[0], m)
            loss = loss + self.lambda_labelmix * lm
            logs["d_labelmix"] = lm.detach()
        logs["d_loss"] = loss.detach()
        return loss, logs
