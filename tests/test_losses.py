"""GAN losses on small hand-checked tensors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from synthsat.losses import (
    VGGPerceptualLoss,
    balanced_cross_entropy,
    class_statistics_loss,
    class_texture_loss,
    diversity_loss,
    feature_matching_loss,
    hinge_d_loss,
    hinge_g_loss,
    kl_loss,
    labelmix,
    oasis_d_loss,
)


def _scale(*feats: list[float]) -> list[torch.Tensor]:
    return [torch.tensor(f).view(1, 1, 1, -1) for f in feats]


def test_hinge_losses() -> None:
    real = [_scale([2.0, 0.5])]
    fake = [_scale([-2.0, 0.5])]
    # real: relu(1-2)=0, relu(1-0.5)=0.5 -> 0.25; fake: relu(1-2)=0, relu(1.5)=1.5 -> 0.75
    assert hinge_d_loss(real, fake).item() == pytest.approx(1.0)
    assert hinge_g_loss(fake).item() == pytest.approx(0.75)
    # averaged over scales
    two = [_scale([2.0, 0.5]), _scale([0.0, 0.0])]
    assert hinge_d_loss(two, [_scale([-2.0, 0.5]), _scale([0.0, 0.0])]).item() == pytest.approx(
        (1.0 + 2.0) / 2
    )
    assert hinge_g_loss([_scale([1.0]), _scale([3.0])]).item() == pytest.approx(-2.0)


def test_feature_matching_sums_layers_excludes_scores() -> None:
    real = [_scale([0.0, 0.0], [1.0], [100.0])]
    fake = [_scale([0.5, -0.5], [3.0], [-100.0])]
    # layer 1: 0.5, layer 2: 2.0; the score map is ignored
    assert feature_matching_loss(real, fake).item() == pytest.approx(2.5)
    real2 = real + [_scale([0.0], [0.0])]
    fake2 = fake + [_scale([1.0], [7.0])]
    assert feature_matching_loss(real2, fake2).item() == pytest.approx((2.5 + 1.0) / 2)
    # real features are constants
    r = torch.zeros(1, 1, 1, 2, requires_grad=True)
    f = torch.ones(1, 1, 1, 2, requires_grad=True)
    feature_matching_loss([[r, r]], [[f, f]]).backward()
    assert r.grad is None
    assert torch.allclose(f.grad, torch.full_like(f, 0.5))


def test_kl() -> None:
    zeros = torch.zeros(2, 4)
    assert kl_loss(zeros, zeros).item() == pytest.approx(0.0)
    assert kl_loss(torch.ones(2, 4), zeros).item() == pytest.approx(0.5 * 4)
    logvar = torch.full((1, 3), math.log(2.0))
    assert kl_loss(torch.zeros(1, 3), logvar).item() == pytest.approx(3 * 0.5 * (1 - math.log(2)))


def test_diversity_ratio_and_clamp() -> None:
    f1 = torch.zeros(2, 3, 4, 4)
    f2 = torch.stack([torch.full((3, 4, 4), 1.0), torch.full((3, 4, 4), 3.0)])
    z1 = torch.zeros(2, 5)
    z2 = torch.full((2, 5), 2.0)
    # ratios 1/2 and 3/2
    assert diversity_loss(f1, f2, z1, z2).item() == pytest.approx(-1.0)
    assert diversity_loss(f1, f2, z1, z2, tau=1.0).item() == pytest.approx(-(0.5 + 1.0) / 2)
    # minimising it pushes the two samples apart
    f2 = f2.clone().requires_grad_(True)
    diversity_loss(f1, f2, z1, z2).backward()
    assert torch.all(f2.grad < 0)


@pytest.mark.parametrize("bands", [1, 4])
def test_vgg_perceptual_random_weights(bands: int) -> None:
    torch.manual_seed(0)
    loss = VGGPerceptualLoss(rgb_bands=[2, 1, 0], pretrained=False)
    x = torch.randn(1, bands, 32, 32)
    assert loss(x, x).item() == pytest.approx(0.0)
    assert loss(x + 1, x).item() > 0
    loss.train()
    assert not loss.training


def test_vgg_without_cached_weights_fails_clearly(tmp_path: Path) -> None:
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        with pytest.raises(FileNotFoundError, match="lambda_vgg"):
            VGGPerceptualLoss()
    finally:
        torch.hub.set_dir(old)


def test_kl_of_a_large_mean_is_half_its_square() -> None:
    mu = torch.tensor([[2.0, -3.0]])
    assert kl_loss(mu, torch.zeros(1, 2)).item() == pytest.approx(0.5 * (4 + 9))


def test_diversity_per_sample_ratio_with_codes_and_images_away_from_zero() -> None:
    """Per-sample ratios of mean |G1 - G2| to mean |z1 - z2|, then their mean."""
    f1 = torch.full((2, 1, 2, 2), 5.0)
    f2 = torch.stack([torch.full((1, 2, 2), 6.0), torch.full((1, 2, 2), 2.0)])  # 1 and 3
    z1 = torch.full((2, 3), 4.0)
    z2 = torch.stack([torch.full((3,), 5.0), torch.full((3,), 1.0)])  # 1 and 3
    # ratios 1/1 and 3/3 (a batch-wide code distance would give 1/2 and 3/2)
    assert diversity_loss(f1, f2, z1, z2).item() == pytest.approx(-1.0)
    z2b = torch.stack([torch.full((3,), 6.0), torch.full((3,), 8.0)])  # 2 and 4
    assert diversity_loss(f1, f2, [z1], [z2b]).item() == pytest.approx(-(1 / 2 + 3 / 4) / 2)
    # eps is added to the code distance
    assert diversity_loss(f1, f2, z1, z2, eps=1.0).item() == pytest.approx(-(1 / 2 + 3 / 4) / 2)
    with pytest.raises(
        ValueError, match="^z1 and z2 must have the same, non-zero number of parts$"
    ):
        diversity_loss(f1, f2, [], [])


def test_class_statistics_count_single_pixel_classes_and_need_a_class() -> None:
    real = torch.arange(8.0).view(1, 1, 2, 4)
    mask = torch.zeros(1, 2, 4, dtype=torch.long)
    mask[0, 1, 3] = 1  # class 1 is one pixel (value 7)
    onehot = torch.nn.functional.one_hot(mask, 2).permute(0, 3, 1, 2).float()
    fake = real.clone()
    fake[0, 0, 1, 3] = 9.0  # only the single pixel differs: its mean moves by 2
    assert class_statistics_loss(fake, real, onehot).item() == pytest.approx(2.0 / 2, rel=1e-4)
    empty = class_statistics_loss(fake, real, torch.zeros_like(onehot))
    assert empty.shape == () and empty.item() == 0.0


def test_balanced_cross_entropy_ignores_labels_outside_the_classes() -> None:
    """Labels >= K or < 0 are not classes: like the ignore index they count nowhere."""
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 1, 6, dtype=torch.float64)
    target = torch.tensor([[[0, 0, 1, 2, 3, 255]]])
    inside = balanced_cross_entropy(logits[..., :4], target[..., :4], 255)
    assert balanced_cross_entropy(logits, target, 255).item() == pytest.approx(inside.item())
    assert inside.dtype == torch.float64
    # an ignore index inside the class range (no-data = class 0)
    per_pixel = torch.nn.functional.cross_entropy(logits, target.clamp(max=2), reduction="none")
    expected = (per_pixel[0, 0, 2] + per_pixel[0, 0, 3]) / 2
    assert balanced_cross_entropy(logits, target, 0).item() == pytest.approx(expected.item())


def test_oasis_fake_loss_counts_exactly_the_labelled_pixels() -> None:
    k = 3
    torch.manual_seed(0)
    real_logits = torch.randn(1, k + 1, 1, 6)
    fake_logits = torch.randn(1, k + 1, 1, 6)
    mask = torch.tensor([[[0, 1, 2, 3, 0, 255]]])  # 3 = K is no class, 255 ignored
    per_pixel = torch.nn.functional.cross_entropy(
        fake_logits, torch.full((1, 1, 6), k), reduction="none"
    )[0, 0]
    for ignore, labelled in ((255, [0, 1, 2, 4]), (0, [1, 2])):
        real, fake = oasis_d_loss(real_logits, fake_logits, mask, ignore)
        assert fake.item() == pytest.approx(per_pixel[labelled].mean().item())
        assert real.item() == pytest.approx(
            balanced_cross_entropy(real_logits, mask, ignore).item()
        )


def test_labelmix_is_a_seeded_coin_per_sample_and_class() -> None:
    torch.manual_seed(0)
    real, fake = torch.randn(3, 2, 2, 5) + 3, torch.randn(3, 2, 2, 5) - 3
    mask = torch.randint(0, 4, (3, 2, 5))  # fewer rows than samples
    mask[:, 0, 0] = 5  # classes 0..5 present somewhere
    mixed, m = labelmix(real, fake, mask, generator=torch.Generator().manual_seed(7))
    coin = torch.randint(0, 2, (3, 6), generator=torch.Generator().manual_seed(7))
    expected = torch.stack([coin[b][mask[b]] for b in range(3)])[:, None].float()
    assert torch.equal(m, expected)
    assert m.dtype == real.dtype
    torch.testing.assert_close(mixed, expected * real + (1 - expected) * fake)
    again, _ = labelmix(real, fake, mask, generator=torch.Generator().manual_seed(7))
    assert torch.equal(again, mixed)
    # an all-background batch draws one coin per sample
    zero = torch.zeros(2, 2, 2, dtype=torch.long)
    _, m0 = labelmix(
        real[:2, :, :2, :2], fake[:2, :, :2, :2], zero, torch.Generator().manual_seed(1)
    )
    coin0 = torch.randint(0, 2, (2, 1), generator=torch.Generator().manual_seed(1))
    assert torch.equal(m0[:, 0, 0, 0], coin0[:, 0].float())


def test_vgg_feeds_the_rgb_bands_in_order() -> None:
    torch.manual_seed(0)
    bgr = VGGPerceptualLoss(rgb_bands=[2, 1, 0, 3], pretrained=False)
    rgb = VGGPerceptualLoss(rgb_bands=[0, 1, 2], pretrained=False)
    rgb.load_state_dict(bgr.state_dict())
    assert bgr.rgb_bands == [2, 1, 0]
    x, y = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    flip = [2, 1, 0]
    assert bgr(x, y).item() == pytest.approx(rgb(x[:, flip], y[:, flip]).item(), rel=1e-5)
    assert bgr(x, y).item() != pytest.approx(rgb(x, y).item(), rel=1e-3)
    # fewer than 3 bands: band 0 three times
    grey = x[:, :1].expand(-1, 3, -1, -1)
    assert rgb(x[:, :2], y[:, :2]).item() == pytest.approx(
        rgb(grey, y[:, :1].expand(-1, 3, -1, -1)).item(), rel=1e-5
    )
    # the five slices end at relu1_1 .. relu5_1 and nothing trains
    assert [len(s) for s in rgb.slices] == [2, 5, 5, 9, 9]
    assert not any(p.requires_grad for p in rgb.parameters())


def test_vgg_loads_the_cached_imagenet_trunk(tmp_path: Path) -> None:
    """The weights file in the hub cache (``features.*`` keys) is what the trunk holds."""
    from torchvision.models import VGG19_Weights
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(1)
    trunk = make_layers(cfgs["E"])
    state = {f"features.{k}": v for k, v in trunk.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(1)  # not part of the trunk
    url = VGG19_Weights.IMAGENET1K_V1.url
    (tmp_path / "checkpoints").mkdir()
    torch.save(state, tmp_path / "checkpoints" / url.rsplit("/", 1)[-1])
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        torch.manual_seed(2)  # a different random init, overwritten by the file
        loaded = VGGPerceptualLoss(pretrained=True)
    finally:
        torch.hub.set_dir(old)
    layers = [layer for s in loaded.slices for layer in s]
    assert len(layers) == 30  # up to relu5_1
    for mine, theirs in zip(layers, trunk):
        for a, b in zip(mine.parameters(), theirs.parameters(), strict=True):
            assert torch.equal(a, b)
    assert not loaded.training


def test_labelmix_of_an_empty_batch_is_empty() -> None:
    empty = torch.zeros(2, 3, 0, 0)
    mixed, m = labelmix(empty, empty, torch.zeros(2, 0, 0, dtype=torch.long))
    assert mixed.shape == (2, 3, 0, 0) and m.shape == (2, 1, 0, 0)


class _Payload:
    """Not a tensor: a weights file holding it must not be unpickled."""


def test_vgg_refuses_a_weights_file_with_arbitrary_objects(tmp_path: Path) -> None:
    from torchvision.models import VGG19_Weights

    url = VGG19_Weights.IMAGENET1K_V1.url
    (tmp_path / "checkpoints").mkdir()
    torch.save({"x": _Payload()}, tmp_path / "checkpoints" / url.rsplit("/", 1)[-1])
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        with pytest.raises(Exception, match="Weights only load failed"):
            VGGPerceptualLoss(pretrained=True)
    finally:
        torch.hub.set_dir(old)


# -- class_texture_loss: per-class gradient energy and band covariance at two scales ------


def test_class_texture_loss_known_answer_on_stripes() -> None:
    """One band, one class: real stripes 0, 1, 0, 1 across (|dx| = 1, |dy| = 0, variance
    0.25) against a flat 0.5. Scale 1: (1 + 0 + 0.25) / 3; scale 2 pools the stripes to
    0.5, the flat image's value: 0. The mean over the two scales."""
    real = torch.tensor([0.0, 1.0]).repeat(4)[None, None].repeat(1, 1, 8, 1)
    fake = torch.full_like(real, 0.5)
    onehot = torch.ones(1, 1, 8, 8)
    assert class_texture_loss(fake, real, onehot, scales=(1,)).item() == pytest.approx(1.25 / 3)
    assert class_texture_loss(fake, real, onehot, scales=(2,)).item() == pytest.approx(0.0)
    assert class_texture_loss(fake, real, onehot).item() == pytest.approx(1.25 / 6)
    assert class_texture_loss(real, real, onehot).item() == 0.0


def test_class_texture_loss_ignores_class_borders_and_colour() -> None:
    """Two flat classes side by side, their colours swapped in the fake: inside each
    class nothing changes and the variance is 0, so the texture gap is 0 (the colour is
    class_statistics_loss's); the step at the border is not a texture."""
    real = torch.zeros(1, 1, 4, 4)
    real[..., 2:] = 1.0
    fake = 1.0 - real
    onehot = torch.stack([real[0, 0] == 0, real[0, 0] == 1])[None].float()
    assert class_texture_loss(fake, real, onehot, scales=(1,)).item() == 0.0
    assert class_statistics_loss(fake, real, onehot).item() == pytest.approx(1.0)


def test_class_texture_loss_compares_band_covariance_and_trains() -> None:
    """Two bands equal in the real image (covariance 1/4 each), opposite in the fake
    (cross-covariance -1/4): only the cross terms differ, by 1/2 each; noise-free
    gradients reach the fake."""
    pattern = torch.tensor([0.0, 1.0]).repeat(2)[None].repeat(4, 1)
    real = torch.stack([pattern, pattern])[None]
    fake = torch.stack([pattern, 1.0 - pattern])[None].requires_grad_(True)
    onehot = torch.ones(1, 1, 4, 4)
    loss = class_texture_loss(fake, real, onehot, scales=(1,))
    # statistics: |dx| x2 bands, |dy| x2 bands, covariance 2 x 2: 8, two of them off by 0.5
    assert loss.item() == pytest.approx(1.0 / 8)
    loss.backward()
    assert fake.grad is not None and float(fake.grad.abs().sum()) > 0
