"""``GeneratorTask``: SPADE generator, optional style encoder and an adversary as a GAN.

Two recipes share the task: the paper's SPADE GAN (VAE style encoder, multiscale
PatchGAN with feature matching, optional VGG loss; ``discriminator=patch``) and an
OASIS-style GAN (segmentation discriminator with (N+1)-class losses and LabelMix,
spatial noise, no pretrained network; ``discriminator=oasis``). The DSGAN diversity
loss, weighted by ``lambda_div``, works with both.

Training uses manual optimisation with a two-time-scale update: every batch makes one
discriminator step, every ``d_steps_per_g``-th batch also makes one generator (+ encoder)
step first. ``trainer.global_step`` counts generator steps only, so ``trainer.max_steps``
is the number of generator updates.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from synthsat.losses import (
    VGGPerceptualLoss,
    class_statistics_loss,
    class_texture_loss,
    diversity_loss,
    kl_loss,
)
from synthsat.models.encoder import StyleEncoder
from synthsat.models.spade import SPADEGenerator, mask_to_onehot
from synthsat.tasks.adversaries import KINDS, OASISAdversary, PatchAdversary
from synthsat.tasks.distributed import RankRandomStreams
from synthsat.tasks.gan_training import GANTrainingMixin
from synthsat.tasks.hparams import (
    DEFAULT_NET,
    LEGACY_NET_KEYS,
    LEGACY_SAMPLE_KEYS,
    legacy_metadata,
    net_config,
    plain,
)

__all__ = [
    "DEFAULT_NET",
    "LEGACY_NET_KEYS",
    "LEGACY_SAMPLE_KEYS",
    "REQUIRED_METADATA",
    "GeneratorTask",
    "net_config",
]

REQUIRED_METADATA = ("classes", "bands", "rgb_bands", "mean", "std", "ignore_index")


def _check_settings(
    data: Mapping[str, Any],
    discriminator: str,
    lambda_div: float,
    ema_decay: float,
    d_steps_per_g: int,
) -> None:
    """Raise ValueError on settings :class:`GeneratorTask` cannot train with."""
    missing = [k for k in REQUIRED_METADATA if k not in data]
    if missing:
        raise ValueError(f"GeneratorTask data metadata lacks {missing}; pass datamodule.metadata()")
    if discriminator not in KINDS:
        raise ValueError(f"discriminator must be one of {KINDS}, got '{discriminator}'")
    if lambda_div < 0:
        raise ValueError(f"lambda_div must be >= 0, got {lambda_div}")
    if not 0.0 <= ema_decay <= 1.0:
        raise ValueError(f"ema_decay must be in [0, 1], got {ema_decay}")
    if d_steps_per_g < 1:
        raise ValueError(f"d_steps_per_g must be >= 1, got {d_steps_per_g}")


def _adversary(
    kind: str,
    bands: int,
    data: Mapping[str, Any],
    ndf: int,
    num_D: int,  # noqa: N803
    n_layers: int,
    lambda_feat: float,
    lambda_labelmix: float,
) -> PatchAdversary | OASISAdversary:
    """The discriminator of ``kind`` (``patch`` or ``oasis``) for the data's classes."""
    num_classes = len(data["classes"])
    if kind == "patch":
        return PatchAdversary(bands, num_classes, ndf, num_D, n_layers, lambda_feat)
    return OASISAdversary(
        bands, num_classes, int(data["ignore_index"]), ndf, n_layers, lambda_labelmix, lambda_feat
    )


class GeneratorTask(GANTrainingMixin, RankRandomStreams, L.LightningModule):
    """Mask-conditional SPADE / OASIS GAN with the DSGAN diversity loss.

    Sample grids during training come from the
    :class:`~synthsat.callbacks.GeneratorSamples` callback.

    Args:
        metadata: the datamodule's :meth:`~synthsat.data.LandCoverDataModule.metadata`
            (classes, bands, rgb_bands, mean, std, ignore_index, ...), stored in the
            checkpoint so that downstream jobs can interpret the outputs (the key
            :class:`~synthsat.tasks.segmentation.SegmentationTask` stores it under too;
            checkpoints written before stored it as ``data``, still accepted).
        patch_size: training patch side in pixels (the network's depth follows from it).
            Required, like ``metadata`` and ``z_dim``.
        z_dim: style code length (of the generator, the style encoder and ``sample_z``).
        net: the generator network's config: ``_target_`` (default
            :class:`~synthsat.models.spade.SPADEGenerator`) and its settings (``ngf``,
            ``start_size``, ``norm``, ``start``, ``noise_dim``, ...; see that class),
            built with the data's classes and bands, ``patch_size`` and ``z_dim``.
        discriminator: ``patch`` (multiscale PatchGAN, hinge + feature matching) or
            ``oasis`` (segmentation discriminator, (N+1)-class loss + LabelMix).
        use_vae: train a style encoder (image -> z); otherwise z ~ N(0, I) only.
        nef: style encoder base channels.
        ndf: discriminator base channels.
        num_D: discriminator scales.
        n_layers: stride-2 layers per discriminator (``oasis``: U-Net stages).
        lambda_gan: weight of the hinge GAN loss.
        lambda_feat: weight of discriminator feature matching (``oasis``: decoder stages).
        lambda_labelmix: weight of the LabelMix consistency loss (``oasis`` only).
        lambda_kld: weight of the KL term (with ``use_vae``).
        lambda_vgg: weight of the VGG-19 perceptual loss (needs cached ImageNet weights).
        lambda_stats: weight of the class-statistics loss (per-class band mean and std of
            the first fake vs the real image; 0: off, as in the papers).
        lambda_texture: weight of the class-texture loss (per-class gradient energy and band
            covariance at two scales, :func:`~synthsat.losses.class_texture_loss`; 0: off).
        lambda_div: weight of the DSGAN diversity loss (0 disables it).
        tau: clamp of the diversity ratio (None: unbounded).
        lr_g: generator (and encoder) learning rate.
        lr_d: discriminator learning rate.
        betas: Adam betas of both optimisers.
        d_steps_per_g: discriminator steps per generator step.
        ema: keep an exponential moving average of the generator for inference.
        ema_decay: EMA decay (warmed up as ``min(decay, (1 + n) / (10 + n))``).
        **legacy: the settings of checkpoints written before: ``data`` (now ``metadata``)
            and the flat settings from before ``net`` existed (:data:`LEGACY_NET_KEYS`,
            folded into ``net``; :data:`LEGACY_SAMPLE_KEYS`, ignored), so that old
            checkpoints load.
    """

    def __init__(
        self,
        metadata: Mapping[str, Any] | None = None,
        patch_size: int | None = None,
        z_dim: int | None = None,
        net: Mapping[str, Any] | None = None,
        discriminator: str = "patch",
        use_vae: bool = True,
        nef: int = 64,
        ndf: int = 64,
        num_D: int = 2,  # noqa: N803
        n_layers: int = 4,
        lambda_gan: float = 1.0,
        lambda_feat: float = 10.0,
        lambda_labelmix: float = 10.0,
        lambda_kld: float = 0.05,
        lambda_vgg: float = 0.0,
        lambda_stats: float = 0.0,
        lambda_texture: float = 0.0,
        lambda_div: float = 0.0,
        tau: float | None = None,
        lr_g: float = 1e-4,
        lr_d: float = 4e-4,
        betas: Sequence[float] = (0.0, 0.9),
        d_steps_per_g: int = 1,
        ema: bool = False,
        ema_decay: float = 0.999,
        **legacy: Any,
    ) -> None:
        super().__init__()
        metadata = legacy_metadata(metadata, legacy)
        if metadata is None or patch_size is None or z_dim is None:
            raise TypeError("GeneratorTask needs metadata, patch_size and z_dim")
        metadata = dict(plain(metadata))
        betas = list(plain(betas))
        net = net_config(net, legacy)
        _check_settings(metadata, discriminator, lambda_div, ema_decay, d_steps_per_g)
        legacy = {}  # folded in above: the saved hyperparameters are the signature's
        self.save_hyperparameters(ignore=["legacy"])
        self.automatic_optimization = False
        self._build_networks()

    def _build_networks(self) -> None:
        """The generator (and its EMA copy), style encoder and discriminator of the
        saved hyperparameters."""
        hp = self.hparams
        data = hp["metadata"]
        self.num_classes = len(data["classes"])
        self.bands = int(data["bands"])
        self.generator: SPADEGenerator = instantiate(
            hp["net"],
            num_classes=self.num_classes,
            out_channels=self.bands,
            patch_size=hp["patch_size"],
            z_dim=hp["z_dim"],
            _convert_="all",
        )
        self.encoder = (
            StyleEncoder(self.bands, hp["z_dim"], hp["patch_size"], hp["nef"])
            if hp["use_vae"]
            else None
        )
        self.discriminator = _adversary(
            hp["discriminator"],
            self.bands,
            data,
            hp["ndf"],
            hp["num_D"],
            hp["n_layers"],
            hp["lambda_feat"],
            hp["lambda_labelmix"],
        )
        self.generator_ema: SPADEGenerator | None = None
        if hp["ema"]:
            self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False).eval()
        # batch norm: the EMA generator keeps running statistics of its own weights
        self._batch_norm = any(isinstance(m, _BatchNorm) for m in self.generator.modules())
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))
        self._vgg: list[VGGPerceptualLoss] = []  # a list keeps it out of the checkpoint

    # -- public interface -----------------------------------------------------------------
    def inference_generator(self) -> nn.Module:
        """The generator to sample with: the EMA copy if enabled (always in eval mode).

        Its ``forward(onehot (B, K, H, W), z (B, z_dim))`` returns (B, bands, H, W) images in
        the datamodule's normalised space; call ``.eval()`` on it before inference.
        """
        return self.generator_ema if self.generator_ema is not None else self.generator

    def encode(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Style code distribution ``(mu, logvar)`` of normalised images (B, C, H, W)."""
        if self.encoder is None:
            raise RuntimeError(
                "this GeneratorTask was trained without a style encoder "
                "(use_vae=false); sample z with sample_z instead"
            )
        return self.encoder(image)

    def sample_z(self, batch: int, generator: torch.Generator | None = None) -> Tensor:
        """Style codes from N(0, I), shape (batch, z_dim), on this module's device."""
        device = generator.device if generator is not None else self.device
        z = torch.randn(batch, self.hparams.z_dim, generator=generator, device=device)
        return z.to(self.device)

    def sample_noise(
        self, batch: int, height: int, width: int, generator: torch.Generator | None = None
    ) -> Tensor | None:
        """Random noise fields (batch, noise_dim, H, W) for the generator (None without)."""
        if self.generator.noise_dim == 0:
            return None
        return self.generator.sample_noise(batch, height, width, generator).to(self.device)

    def onehot(self, mask: Tensor) -> Tensor:
        """One-hot encoding of a (B, H, W) mask with this task's classes."""
        return mask_to_onehot(mask, self.num_classes)

    # -- Lightning plumbing ------------------------------------------------------------------
    def train(self, mode: bool = True) -> GeneratorTask:
        """Set the training mode; the EMA generator always stays in eval mode."""
        super().train(mode)
        if self.generator_ema is not None:
            self.generator_ema.eval()
        return self

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """Adam for generator + encoder, Adam for the discriminator."""
        hp = self.hparams
        g_params = list(self.generator.parameters())
        if self.encoder is not None:
            g_params += list(self.encoder.parameters())
        opt_g = torch.optim.Adam(g_params, lr=hp.lr_g, betas=tuple(hp.betas))
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=hp.lr_d, betas=tuple(hp.betas))
        return [opt_g, opt_d]

    def on_fit_start(self) -> None:
        """Build the VGG perceptual loss when it is enabled (fails early without weights)."""
        if self.hparams.lambda_vgg > 0 and not self._vgg:
            self._vgg.append(VGGPerceptualLoss(self.hparams.metadata["rgb_bands"]).to(self.device))

    # -- losses ----------------------------------------------------------------------------------
    def _style_codes(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """Two codes per image: from the encoder posterior (two draws, as the original
        DSGAN-on-SPADE code does), or both from N(0, I) without an encoder."""
        b = image.shape[0]
        if self.encoder is None:
            return self.sample_z(b), self.sample_z(b), None, None
        mu, logvar = self.encoder(image)
        std = torch.exp(0.5 * logvar)
        return mu + torch.randn_like(mu) * std, mu + torch.randn_like(mu) * std, mu, logvar

    def _generate_fakes(self, image: Tensor, onehot: Tensor) -> tuple[list[Tensor], dict[str, Any]]:
        """Fakes for a batch: one per code, two (with fresh noise) when diversity is on."""
        z1, z2, mu, logvar = self._style_codes(image)
        b, _, h, w = image.shape
        n1, n2 = self.sample_noise(b, h, w), self.sample_noise(b, h, w)
        extras: dict[str, Any] = {"z1": z1, "z2": z2, "n1": n1, "n2": n2, "mu": mu}
        extras["logvar"] = logvar
        if self.hparams.lambda_div > 0:
            noise = None if n1 is None or n2 is None else torch.cat([n1, n2])
            both = self.generator(torch.cat([onehot, onehot]), torch.cat([z1, z2]), noise)
            fakes = list(both.chunk(2))
        else:
            fakes = [self.generator(onehot, z1, n1)]
        return fakes, extras

    def generator_losses(
        self, image: Tensor, onehot: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor], list[Tensor]]:
        """Weighted generator loss, its unweighted terms, and the fakes.

        All fakes get the adversarial loss; the adversary's extra terms (feature
        matching), KL and VGG apply to the first fake (from the first code); the
        diversity loss compares the two fakes for the same mask.
        """
        hp = self.hparams
        if mask is None:
            mask = onehot.argmax(dim=1)
        fakes, extras = self._generate_fakes(image, onehot)
        terms, weights = self.discriminator.generator_terms(image, onehot, mask, fakes)
        weights = {k: w * (hp.lambda_gan if k == "g_gan" else 1.0) for k, w in weights.items()}
        if extras["mu"] is not None and hp.lambda_kld > 0:
            terms["g_kld"] = kl_loss(extras["mu"], extras["logvar"])
            weights["g_kld"] = hp.lambda_kld
        if hp.lambda_vgg > 0:
            if not self._vgg:
                self.on_fit_start()
            terms["g_vgg"] = self._vgg[0](fakes[0], image)
            weights["g_vgg"] = hp.lambda_vgg
        if hp.get("lambda_stats", 0.0) > 0:
            terms["g_stats"] = class_statistics_loss(fakes[0], image, onehot)
            weights["g_stats"] = hp.lambda_stats
        if hp.get("lambda_texture", 0.0) > 0:
            terms["g_texture"] = class_texture_loss(fakes[0], image, onehot)
            weights["g_texture"] = hp.lambda_texture
        if hp.lambda_div > 0:
            # Measured on outputs / output_scale, i.e. in the [-1, 1] range of the original
            # SPADE/DSGAN images, so that lambda_div means what it means in the paper. On raw
            # 5 * tanh outputs the achievable reward is 5x larger, and lambda_div = 6 drove
            # the generator into saturated, mask-independent outputs.
            scale = self.generator.output_scale
            codes1 = [c for c in (extras["z1"], extras["n1"]) if c is not None]
            codes2 = [c for c in (extras["z2"], extras["n2"]) if c is not None]
            terms["g_div"] = diversity_loss(
                fakes[0] / scale, fakes[1] / scale, codes1, codes2, hp.tau
            )
            weights["g_div"] = hp.lambda_div
        total = sum(weights[k] * v for k, v in terms.items())
        assert isinstance(total, Tensor)
        return total, terms, fakes

    def discriminator_loss(
        self, image: Tensor, onehot: Tensor, fakes: Sequence[Tensor], mask: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The adversary's loss on real vs (detached) fakes, with its logged terms."""
        if mask is None:
            mask = onehot.argmax(dim=1)
        return self.discriminator.discriminator_loss(image, onehot, mask, fakes)

    # -- training: training_step and its guards are GANTrainingMixin's (tasks/gan_training.py)
    # -- validation -----------------------------------------------------------------------------
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Log ``val/class_spectra_l1``, ``val/l1_rec`` (with an encoder) and ``val/score``.

        ``class_spectra_l1``: L1 between the per-class mean band values of real patches and
        of samples with random codes (does the generator get each class's spectrum right).
        ``l1_rec``: L1 between real patches and their reconstruction from the encoder mean.
        ``score`` (lower is better) is ``l1_rec`` with an encoder, else ``class_spectra_l1``.
        Under DDP each is the mean over the processes (every rank monitors the same score).
        """
        image, onehot = batch["image"], self.onehot(batch["mask"])
        bs = image.shape[0]
        gen = self.inference_generator()
        seed = torch.Generator().manual_seed(batch_idx)
        h, w = image.shape[-2:]
        fake = gen(onehot, self.sample_z(bs, seed), self.sample_noise(bs, h, w, seed))
        counts = onehot.sum(dim=(0, 2, 3))
        real_mean = torch.einsum("bkhw,bchw->kc", onehot, image) / counts.clamp(min=1)[:, None]
        fake_mean = torch.einsum("bkhw,bchw->kc", onehot, fake) / counts.clamp(min=1)[:, None]
        spectra = (real_mean - fake_mean).abs()[counts > 0].mean()
        self.log("val/class_spectra_l1", spectra, batch_size=bs, sync_dist=True)
        score = spectra
        if self.encoder is not None:
            mu, _ = self.encoder(image)
            score = (gen(onehot, mu, self.sample_noise(bs, h, w, seed)) - image).abs().mean()
            self.log("val/l1_rec", score, batch_size=bs, sync_dist=True)
        self.log("val/score", score, batch_size=bs, prog_bar=True, sync_dist=True)
