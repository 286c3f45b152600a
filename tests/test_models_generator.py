"""SPADE generator, style encoder and multiscale discriminator: shapes and conditioning."""

from __future__ import annotations

import pytest
import torch

from synthsat.models import (
    SPADE,
    MultiscaleDiscriminator,
    SPADEGenerator,
    StyleEncoder,
    mask_to_onehot,
)


def test_mask_to_onehot_values_and_ignore() -> None:
    mask = torch.tensor([[[0, 2], [255, 1]]])
    onehot = mask_to_onehot(mask, 3)
    assert onehot.shape == (1, 3, 2, 2) and onehot.dtype == torch.float32
    assert onehot[0, :, 0, 0].tolist() == [1, 0, 0]
    assert onehot[0, :, 0, 1].tolist() == [0, 0, 1]
    assert onehot[0, :, 1, 1].tolist() == [0, 1, 0]
    assert onehot[0, :, 1, 0].tolist() == [0, 0, 0]  # ignore index -> all zero
    with pytest.raises(ValueError, match="B, H, W"):
        mask_to_onehot(mask[0], 3)


@pytest.mark.parametrize("bands", [3, 4])
def test_generator_shapes(bands: int) -> None:
    gen = SPADEGenerator(
        num_classes=5,
        out_channels=bands,
        patch_size=32,
        ngf=4,
        z_dim=8,
        start_size=4,
        max_mult=4,
        spade_hidden=8,
        output_scale=3.0,
    )
    assert gen.num_up == 3
    onehot = mask_to_onehot(torch.randint(0, 5, (2, 32, 32)), 5)
    out = gen(onehot, torch.randn(2, 8))
    assert out.shape == (2, bands, 32, 32)
    assert out.abs().max() <= 3.0
    # any multiple of 2**num_up works, also non-square
    assert gen(mask_to_onehot(torch.randint(0, 5, (1, 16, 48)), 5), torch.randn(1, 8)).shape == (
        1,
        bands,
        16,
        48,
    )


def test_generator_rejects_bad_input() -> None:
    gen = SPADEGenerator(5, 3, 32, ngf=4, z_dim=8, start_size=4, max_mult=4, spade_hidden=8)
    with pytest.raises(ValueError, match="multiple of 8"):
        gen(torch.zeros(1, 5, 20, 32), torch.zeros(1, 8))
    with pytest.raises(ValueError, match="mask channels"):
        gen(torch.zeros(1, 4, 32, 32), torch.zeros(1, 8))
    with pytest.raises(ValueError, match="power of two"):
        SPADEGenerator(5, 3, 48, start_size=5)


def test_generator_depends_on_mask_and_code() -> None:
    torch.manual_seed(0)
    gen = SPADEGenerator(3, 3, 16, ngf=4, z_dim=8, start_size=4, max_mult=4, spade_hidden=8)
    a = mask_to_onehot(torch.zeros(1, 16, 16, dtype=torch.long), 3)
    b = mask_to_onehot(torch.full((1, 16, 16), 2), 3)
    z = torch.randn(1, 8)
    assert not torch.allclose(gen(a, z), gen(b, z))
    assert not torch.allclose(gen(a, z), gen(a, torch.randn(1, 8)))


def test_spade_modulation_follows_mask() -> None:
    torch.manual_seed(0)
    norm = SPADE(channels=2, label_channels=2, hidden=4)
    x = torch.randn(1, 2, 8, 8)
    mask = torch.zeros(1, 8, 8, dtype=torch.long)
    mask[:, :, 4:] = 1
    out = norm(x, mask_to_onehot(mask, 2))
    assert out.shape == x.shape
    other = norm(x, mask_to_onehot(torch.zeros_like(mask), 2))
    # modulation only changes where the mask changed (3x3 convs: within 2 px of the edge)
    assert torch.allclose(out[..., :2], other[..., :2])
    assert not torch.allclose(out[..., 6:], other[..., 6:])


@pytest.mark.parametrize("bands", [3, 4])
def test_encoder_shapes(bands: int) -> None:
    enc = StyleEncoder(bands, z_dim=8, patch_size=32, nef=4)
    for size in (32, 48):
        mu, logvar = enc(torch.randn(2, bands, size, size))
        assert mu.shape == logvar.shape == (2, 8)


def test_discriminator_features() -> None:
    disc = MultiscaleDiscriminator(in_channels=7, num_D=2, ndf=4, n_layers=3)
    outs = disc(torch.randn(2, 7, 32, 32))
    assert len(outs) == 2
    for scale in outs:
        assert len(scale) == 3 + 2  # first conv, n_layers convs, score map
        assert scale[-1].shape[:2] == (2, 1)
    assert outs[1][-1].shape[-1] < outs[0][-1].shape[-1]
