"""GeneratorTask's settings without a datamodule or a training: the paper's defaults, the
limits of the settings it refuses, the adversary each discriminator kind builds and the
optimisers' settings."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import TINY_GENERATOR

from synthsat.tasks.adversaries import OASISAdversary, PatchAdversary
from synthsat.tasks.generator import GeneratorTask, _adversary, _check_settings

#: A 4-band, 3-class data metadata (what LandCoverDataModule.metadata() holds).
META: dict[str, Any] = {
    "classes": ["none", "water", "land"],
    "bands": 4,
    "rgb_bands": [0, 1, 2],
    "mean": [0.0] * 4,
    "std": [1.0] * 4,
    "ignore_index": 0,
}


def test_the_defaults_are_the_papers() -> None:
    task = GeneratorTask(META, 32, 8, net=TINY_GENERATOR["net"])
    hp = {k: v for k, v in task.hparams.items() if k not in ("metadata", "net")}
    assert hp == {
        "patch_size": 32,
        "z_dim": 8,
        "discriminator": "patch",
        "use_vae": True,
        "nef": 64,
        "ndf": 64,
        "num_D": 2,
        "n_layers": 4,
        "lambda_gan": 1.0,
        "lambda_feat": 10.0,
        "lambda_labelmix": 10.0,
        "lambda_kld": 0.05,
        "lambda_vgg": 0.0,
        "lambda_stats": 0.0,
        "lambda_texture": 0.0,
        "lambda_div": 0.0,
        "tau": None,
        "lr_g": 1e-4,
        "lr_d": 4e-4,
        "betas": [0.0, 0.9],
        "d_steps_per_g": 1,
        "ema": False,
        "ema_decay": 0.999,
    }
    assert list(task.hparams)[:3] == ["metadata", "patch_size", "z_dim"]  # the signature's
    assert task.hparams.metadata == META
    assert task.generator_ema is None and task.encoder is not None
    assert isinstance(task.discriminator, PatchAdversary)
    assert task.discriminator.lambda_feat == 10.0
    assert int(task.batches_seen) == 0 and task.batches_seen.dtype == torch.long
    assert task.automatic_optimization is False


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("lambda_div", -0.5, "lambda_div must be >= 0, got -0.5"),
        ("ema_decay", -0.1, r"ema_decay must be in \[0, 1\], got -0.1"),
        ("ema_decay", 1.01, r"ema_decay must be in \[0, 1\], got 1.01"),
        ("d_steps_per_g", 0, "d_steps_per_g must be >= 1, got 0"),
        ("discriminator", "stylegan", "discriminator must be one of"),
    ],
)
def test_settings_outside_their_limits_are_refused(setting: str, value: Any, message: str) -> None:
    settings = {"discriminator": "patch", "lambda_div": 0.0, "ema_decay": 0.5, "d_steps_per_g": 1}
    with pytest.raises(ValueError, match=message):
        _check_settings(META, **{**settings, setting: value})


def test_settings_on_their_limits_are_accepted() -> None:
    for discriminator in ("patch", "oasis"):
        for ema_decay in (0.0, 1.0):
            _check_settings(META, discriminator, 0.0, ema_decay, 1)


def test_each_missing_metadata_key_is_named() -> None:
    for key in META:
        meta = {k: v for k, v in META.items() if k != key}
        with pytest.raises(ValueError, match=rf"lacks \['{key}'\]"):
            _check_settings(meta, "patch", 0.0, 0.5, 1)


def test_the_adversary_of_each_kind_gets_its_settings() -> None:
    patch = _adversary("patch", 4, META, 8, 3, 2, 2.5, 7.0)
    assert isinstance(patch, PatchAdversary) and patch.lambda_feat == 2.5
    assert len(patch.net.discriminators) == 3  # num_D scales
    first = next(m for m in patch.net.modules() if isinstance(m, torch.nn.Conv2d))
    assert (first.in_channels, first.out_channels) == (4 + 3, 8)  # image and one-hot mask
    oasis = _adversary("oasis", 4, META, 8, 3, 2, 2.5, 7.0)
    assert isinstance(oasis, OASISAdversary)
    assert (oasis.ignore_index, oasis.lambda_labelmix, oasis.lambda_feat) == (0, 7.0, 2.5)
    assert len(oasis.net.down) == 2 and oasis.net.num_classes == 3  # n_layers stages
    first = next(m for m in oasis.net.modules() if isinstance(m, torch.nn.Conv2d))
    assert (first.in_channels, first.out_channels) == (4, 8)


def test_oasis_feature_matching_compares_the_first_fake_with_the_real_image() -> None:
    """lambda_feat on the OASIS adversary: g_feat is the L1 between the U-Net decoder
    stages of the first fake and of the real image (0 when they are the same image), with
    its weight; lambda_feat 0 adds no term and runs no real image through the net."""
    torch.manual_seed(0)
    adversary = OASISAdversary(4, 3, 0, 8, 2, 0.0, lambda_feat=2.5).eval()  # spectral norm fixed
    image = torch.randn(2, 4, 16, 16)
    mask = torch.randint(1, 3, (2, 16, 16))
    onehot = torch.nn.functional.one_hot(mask, 3).permute(0, 3, 1, 2).float()
    other = torch.randn(2, 4, 16, 16)
    terms, weights = adversary.generator_terms(image, onehot, mask, [image.clone(), other])
    assert weights["g_feat"] == 2.5 and terms["g_feat"].item() == pytest.approx(0.0, abs=1e-6)
    terms, _ = adversary.generator_terms(image, onehot, mask, [other, image.clone()])
    with torch.no_grad():
        feats = adversary.net.features(torch.cat([other, image]))
        expected = sum(
            torch.nn.functional.l1_loss(f[:2], f[2:]) for f in feats[:-1]
        )  # decoder stages, not the logits
    assert terms["g_feat"].item() == pytest.approx(float(expected), rel=1e-5)
    off = OASISAdversary(4, 3, 0, 8, 2, 0.0).eval()
    off.load_state_dict(adversary.state_dict())
    plain, plain_weights = off.generator_terms(image, onehot, mask, [other, image.clone()])
    assert set(plain) == {"g_gan"} and plain_weights == {"g_gan": 1.0}
    assert plain["g_gan"].item() == pytest.approx(terms["g_gan"].item(), rel=1e-5)


def test_the_optimisers_settings() -> None:
    task = GeneratorTask(
        META, 32, **{**TINY_GENERATOR, "lr_g": 2e-4, "lr_d": 3e-4, "betas": (0.5, 0.99)}
    )
    opt_g, opt_d = task.configure_optimizers()
    assert (opt_g.defaults["lr"], opt_g.defaults["betas"]) == (2e-4, (0.5, 0.99))
    assert (opt_d.defaults["lr"], opt_d.defaults["betas"]) == (3e-4, (0.5, 0.99))
    g_params = {id(p) for g in opt_g.param_groups for p in g["params"]}
    want = {id(p) for p in [*task.generator.parameters(), *task.encoder.parameters()]}
    assert g_params == want
    d_params = {id(p) for g in opt_d.param_groups for p in g["params"]}
    assert d_params == {id(p) for p in task.discriminator.parameters()}
    no_vae = GeneratorTask(META, 32, **{**TINY_GENERATOR, "use_vae": False})
    opt_g, _ = no_vae.configure_optimizers()
    assert {id(p) for g in opt_g.param_groups for p in g["params"]} == {
        id(p) for p in no_vae.generator.parameters()
    }


class _Zeros(torch.nn.Module):
    """A generator stand-in that draws zeros: the validation scores are then the real
    images' own statistics."""

    noise_dim = 0
    output_scale = 1.0

    def forward(self, onehot: torch.Tensor, z: torch.Tensor, noise: Any = None) -> torch.Tensor:
        b, _, h, w = onehot.shape
        return torch.zeros(b, 4, h, w)


def _validation_logs(use_vae: bool) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    task = GeneratorTask(META, 32, **{**TINY_GENERATOR, "use_vae": use_vae})
    task.generator = _Zeros()
    logged: dict[str, float] = {}
    task.log = lambda name, value, **kw: logged.__setitem__(name, float(value))  # type: ignore[method-assign]
    image = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(2, 8, 8, dtype=torch.long)
    mask[0, :4] = 1
    mask[1, 0, 0] = 2  # a class of one pixel
    task.validation_step({"image": image, "mask": mask}, 0)
    return logged, image, mask


def test_validation_scores_by_hand() -> None:
    """class_spectra_l1: the mean |real - fake| of the per-class band means over the classes
    present; l1_rec: the mean |reconstruction - real|; score: l1_rec with an encoder."""
    logged, image, mask = _validation_logs(use_vae=False)
    means = [image.permute(1, 0, 2, 3)[:, mask == k].mean(1) for k in range(3)]
    spectra = torch.cat(means).abs().mean().item()
    assert set(logged) == {"val/class_spectra_l1", "val/score"}
    assert logged["val/class_spectra_l1"] == pytest.approx(spectra, rel=1e-5)
    assert logged["val/score"] == logged["val/class_spectra_l1"]
    logged, image, _ = _validation_logs(use_vae=True)
    assert logged["val/class_spectra_l1"] == pytest.approx(spectra, rel=1e-5)
    assert logged["val/l1_rec"] == pytest.approx(image.abs().mean().item(), rel=1e-5)
    assert logged["val/score"] == logged["val/l1_rec"]


def test_codes_and_noise_without_an_encoder() -> None:
    task = GeneratorTask(META, 32, **{**TINY_GENERATOR, "use_vae": False})
    torch.manual_seed(0)
    z1, z2, mu, logvar = task._style_codes(torch.zeros(3, 4, 32, 32))
    assert z1.shape == z2.shape == (3, 8) and mu is None and logvar is None
    assert not torch.equal(z1, z2)
    assert task.sample_noise(3, 32, 32) is None  # the SPADE generator draws no noise
    mask = torch.tensor([[[0, 2], [1, 2]]])
    assert task.onehot(mask)[0, :, 1, 1].tolist() == [0.0, 0.0, 1.0]


def test_the_old_name_of_the_metadata_is_accepted_and_saved_as_metadata() -> None:
    """Checkpoints written before the rename hold the metadata as ``data``: a task built
    from those settings stores it as ``metadata``, like SegmentationTask."""
    task = GeneratorTask(data=META, patch_size=32, z_dim=8, net=TINY_GENERATOR["net"])
    assert task.hparams.metadata == META and "data" not in task.hparams
    same = GeneratorTask(META, 32, 8, net=TINY_GENERATOR["net"], data=dict(META))
    assert same.hparams.metadata == META
    with pytest.raises(TypeError, match="^GeneratorTask got metadata and its old name data"):
        GeneratorTask(META, 32, 8, data={**META, "bands": 3})
    with pytest.raises(TypeError, match="^GeneratorTask needs metadata, patch_size and z_dim$"):
        GeneratorTask(patch_size=32, z_dim=8)
    with pytest.raises(TypeError, match="^GeneratorTask needs metadata, patch_size and z_dim$"):
        GeneratorTask(META, z_dim=8)


def test_a_checkpoint_of_the_old_name_loads(tmp_path: Any) -> None:
    """A generator checkpoint whose hyperparameters name the metadata ``data`` is found to
    be a generator's and loads (weights only), with its metadata under the new name."""
    from conftest import save_task

    from synthsat.tasks.checkpoints import checkpoint_kind, load_task
    from synthsat.tasks.hparams import checkpoint_metadata

    path = save_task(GeneratorTask(META, 32, **TINY_GENERATOR), tmp_path / "new.ckpt")
    state = torch.load(path, map_location="cpu", weights_only=True)
    hp = state["hyper_parameters"]
    hp["data"] = hp.pop("metadata")
    torch.save(state, tmp_path / "old.ckpt")
    assert checkpoint_kind(state) == "generator" and checkpoint_metadata(hp) == META
    old = load_task(tmp_path / "old.ckpt", "generator", "synthesize")
    assert old.hparams.metadata == META and "data" not in old.hparams
    new = load_task(path, "generator", "synthesize")
    for a, b in zip(old.state_dict().values(), new.state_dict().values(), strict=True):
        assert torch.equal(a, b)
