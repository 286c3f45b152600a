"""Spatial noise fields, the OASIS discriminator and its losses (LabelMix, balanced CE)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from synthsat.losses import (
    balanced_cross_entropy,
    diversity_loss,
    labelmix,
    labelmix_loss,
    oasis_d_loss,
)
from synthsat.models import SPADEGenerator, mask_to_onehot
from synthsat.models.noise import NoiseField, random_noise
from synthsat.models.oasis import SegmentationDiscriminator


def test_noise_windows_agree_where_they_overlap() -> None:
    field = NoiseField(3, 100, 120, cell=4, generator=torch.Generator().manual_seed(0))
    a = field.crop(10, 20, 32, 32)
    b = field.crop(16, 24, 26, 28)
    assert torch.equal(a[:, 6:, 4:], b)
    # lattice points are pixels 0, 4, 8, ...: there the field is the lattice value itself
    assert torch.allclose(field.crop(8, 12, 1, 1)[:, 0, 0], field.lattice[:, 2, 3])
    with pytest.raises(ValueError, match="leaves"):
        field.crop(90, 0, 32, 32)


def test_noise_is_unit_gaussian_at_every_pixel_and_smooth_with_cell() -> None:
    gen = torch.Generator().manual_seed(1)
    fine = NoiseField(2000, 8, 8, cell=1, generator=gen).crop(0, 0, 8, 8)
    smooth = NoiseField(2000, 8, 8, cell=4, generator=gen).crop(0, 0, 8, 8)
    for x in (fine, smooth):
        std = x.std(dim=0)  # over channels, per pixel
        assert torch.allclose(std, torch.ones_like(std), atol=0.08)
    # neighbouring pixels: independent with cell 1, strongly correlated with cell 4
    corr = lambda x: torch.corrcoef(torch.stack([x[:, 0, 1], x[:, 0, 2]]))[0, 1]  # noqa: E731
    assert abs(float(corr(fine))) < 0.1
    assert float(corr(smooth)) > 0.7


def test_random_noise_windows_are_independent() -> None:
    n = random_noise(2, 4, 16, 16, cell=4, generator=torch.Generator().manual_seed(0))
    assert n.shape == (2, 4, 16, 16)
    assert not torch.allclose(n[0], n[1])
    assert random_noise(0, 4, 16, 16, cell=4).shape == (0, 4, 16, 16)


def _cond_generator(norm: str = "batch") -> SPADEGenerator:
    torch.manual_seed(0)
    return SPADEGenerator(
        3,
        2,
        16,
        ngf=4,
        z_dim=4,
        start_size=4,
        max_mult=2,
        spade_hidden=4,
        norm=norm,
        start="cond",
        noise_dim=2,
        noise_cell=2,
    )


def test_cond_generator_uses_mask_code_and_noise() -> None:
    gen = _cond_generator().eval()
    mask = torch.randint(0, 3, (1, 16, 16))
    onehot = mask_to_onehot(mask, 3)
    z, noise = torch.randn(1, 4), torch.randn(1, 2, 16, 16)
    out = gen(onehot, z, noise)
    assert torch.equal(out, gen(onehot, z, noise))  # deterministic given its inputs
    assert not torch.allclose(out, gen(onehot, torch.randn(1, 4), noise))
    assert not torch.allclose(out, gen(onehot, z, torch.randn(1, 2, 16, 16)))
    assert not torch.allclose(out, gen(mask_to_onehot((mask + 1) % 3, 3), z, noise))
    with pytest.raises(ValueError, match="noise must have shape"):
        gen(onehot, z, torch.randn(1, 1, 16, 16))
    with pytest.raises(ValueError, match="start must be"):
        SPADEGenerator(3, 2, 16, start="linear")


def test_batch_norm_inference_does_not_depend_on_the_other_chips() -> None:
    """Running statistics at inference: a chip's output is the same alone or in a batch
    (instance norm would also tie it to the chip's own content statistics)."""
    gen = _cond_generator("batch")
    onehot = mask_to_onehot(torch.randint(0, 3, (3, 16, 16)), 3)
    z, noise = torch.randn(3, 4), torch.randn(3, 2, 16, 16)
    gen.train()
    gen(onehot, z, noise)  # move the running statistics off their initial values
    gen.eval()
    alone = gen(onehot[:1], z[:1], noise[:1])
    batched = gen(onehot, z, noise)[:1]
    torch.testing.assert_close(alone, batched, rtol=1e-5, atol=1e-5)
    gen.train()
    assert not torch.allclose(gen(onehot[:2], z[:2], noise[:2])[:1], batched, atol=1e-4)


def test_segmentation_discriminator_shapes() -> None:
    disc = SegmentationDiscriminator(4, num_classes=5, ndf=4, n_layers=3)
    assert disc(torch.randn(2, 4, 32, 48)).shape == (2, 6, 32, 48)
    with pytest.raises(ValueError, match="multiple of 8"):
        disc(torch.randn(1, 4, 20, 32))


def test_balanced_cross_entropy_is_the_mean_of_class_means() -> None:
    # 3 pixels of class 0 with loss log(2)-ish, 1 pixel of class 1: each class counts once
    logits = torch.zeros(1, 3, 1, 4)
    logits[0, 0, 0, :3] = torch.tensor([0.0, 1.0, 2.0])
    logits[0, 1, 0, 3] = 3.0
    target = torch.tensor([[[0, 0, 0, 1]]])
    per_pixel = nn.functional.cross_entropy(logits, target, reduction="none")[0, 0]
    expected = (per_pixel[:3].mean() + per_pixel[3]) / 2
    assert torch.isclose(balanced_cross_entropy(logits, target, 255), expected)
    # ignored pixels count for nothing
    ignored = torch.tensor([[[0, 0, 255, 1]]])
    expected = (per_pixel[:2].mean() + per_pixel[3]) / 2
    assert torch.isclose(balanced_cross_entropy(logits, ignored, 255), expected)


def test_oasis_d_loss_targets_classes_and_the_fake_class() -> None:
    k = 2
    mask = torch.tensor([[[0, 1], [1, 255]]])
    confident_real = torch.full((1, k + 1, 2, 2), -10.0)
    confident_real.scatter_(1, mask.clamp(max=k - 1)[:, None], 10.0)
    confident_fake = torch.full((1, k + 1, 2, 2), -10.0)
    confident_fake[:, k] = 10.0
    real, fake = oasis_d_loss(confident_real, confident_fake, mask, 255)
    assert real < 1e-6 and fake < 1e-6
    real, fake = oasis_d_loss(confident_fake, confident_real, mask, 255)
    assert real > 19 and fake > 19  # a logit gap of 20 the wrong way


def test_labelmix_mixes_whole_classes_and_is_consistent_for_a_linear_d() -> None:
    real, fake = torch.ones(2, 3, 8, 8), -torch.ones(2, 3, 8, 8)
    mask = torch.zeros(2, 8, 8, dtype=torch.long)
    mask[:, :, 4:] = 1
    mixed, m = labelmix(real, fake, mask, generator=torch.Generator().manual_seed(0))
    for b in range(2):
        for cls in (0, 1):
            values = m[b, 0][mask[b] == cls]
            assert values.min() == values.max()  # one coin per class
    assert torch.equal(mixed, m * real + (1 - m) * fake)
    linear = nn.Conv2d(3, 4, 1)
    with torch.no_grad():
        loss = labelmix_loss(linear(mixed), linear(real), linear(fake), m)
    assert float(loss) < 1e-10
    with torch.no_grad():
        loss = labelmix_loss(linear(mixed) ** 2, linear(real) ** 2, linear(fake) ** 2, m)
    assert float(loss) < 1e-10  # pixelwise maps commute with the mix too
    blur = nn.Conv2d(3, 4, 5, padding=2)  # looks across class borders
    with torch.no_grad():
        assert float(labelmix_loss(blur(mixed), blur(real), blur(fake), m)) > 1e-4


def test_diversity_code_distance_averages_the_parts() -> None:
    fake1, fake2 = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.6)
    z1, z2 = torch.zeros(1, 4), torch.full((1, 4), 2.0)  # distance 2
    n1, n2 = torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8)  # distance 1
    loss = diversity_loss(fake1, fake2, [z1, n1], [z2, n2])
    assert math.isclose(float(loss), -0.6 / 1.5, rel_tol=1e-6)
    assert math.isclose(float(diversity_loss(fake1, fake2, z1, z2)), -0.3, rel_tol=1e-6)
    with pytest.raises(ValueError, match="parts"):
        diversity_loss(fake1, fake2, [z1], [z2, n2])


def test_class_statistics_loss_compares_class_means_and_stds() -> None:
    from synthsat.losses import class_statistics_loss

    torch.manual_seed(0)
    real = torch.randn(1, 2, 8, 8)
    mask = torch.zeros(1, 8, 8, dtype=torch.long)
    mask[:, :, 4:] = 1
    mask[:, 0, 0] = 255  # ignored: counts for nothing
    onehot = mask_to_onehot(mask, 3)  # class 2 absent
    assert float(class_statistics_loss(real, real, onehot)) < 1e-6
    shifted = real + 0.5 * (mask == 1)[:, None]  # class 1 brighter by 0.5 in both bands
    # present (class, band) pairs: 2 classes x 2 bands; only class 1's two means differ
    assert math.isclose(
        float(class_statistics_loss(shifted, real, onehot)), 0.5 * 2 / 4, rel_tol=1e-4
    )
    scaled = real * (1 + (mask == 0)[:, None].float())  # class 0 twice the contrast
    pixels = real[0][:, mask[0] == 0]
    mean, std = pixels.mean(dim=1), pixels.std(dim=1, unbiased=False)
    expected = ((mean.abs() + std).sum() / 4).item()  # |2m - m| + |2s - s| per band
    assert math.isclose(float(class_statistics_loss(scaled, real, onehot)), expected, rel_tol=1e-3)
