"""GAN losses on small hand-checked tensors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from synthsat.losses import (
    VGGPerceptualLoss,
    diversity_loss,
    feature_matching_loss,
    hinge_d_loss,
    hinge_g_loss,
    kl_loss,
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
