"""GeneratorTask: training behaviour, diversity loss, NaN guard, entry point and resume."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from conftest import TINY_GENERATOR, quiet_trainer, tiny_generator_cfg, toy_datamodule
from lightning.pytorch.callbacks import ModelCheckpoint

from synthsat.data import LandCoverDataModule
from synthsat.data.toyworld import CLASSES
from synthsat.errors import USER_ERRORS, NonFiniteLoss
from synthsat.jobs.train_generator import train
from synthsat.tasks.generator import GeneratorTask

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY: dict[str, Any] = TINY_GENERATOR


@pytest.fixture()
def datamodule(toy_root: Path, tmp_path: Path) -> LandCoverDataModule:
    return toy_datamodule(
        toy_root,
        tmp_path / "cache",
        patch_size=32,
        patches_per_epoch=200,
        val_mode="patches",
        val_patches=4,
    )


def make_task(dm: LandCoverDataModule, **overrides: Any) -> GeneratorTask:
    return GeneratorTask(dm.metadata(), dm.patch_size, **{**TINY, **overrides})


def fit(
    task: GeneratorTask, dm: LandCoverDataModule, steps: int, tmp_path: Path, **kwargs: Any
) -> L.Trainer:
    trainer = quiet_trainer(
        accelerator="cpu",
        max_steps=steps,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        **{"enable_checkpointing": False, **kwargs},
    )
    trainer.fit(task, datamodule=dm)
    return trainer


def test_metadata_is_required(datamodule: LandCoverDataModule) -> None:
    meta = datamodule.metadata()
    del meta["std"]
    with pytest.raises(ValueError, match="std"):
        GeneratorTask(meta, 32, **TINY)


def test_interface(datamodule: LandCoverDataModule) -> None:
    task = make_task(datamodule, ema=True)
    assert task.inference_generator() is task.generator_ema
    assert not task.inference_generator().training
    task.train()
    assert not task.generator_ema.training
    z = task.sample_z(3, torch.Generator().manual_seed(1))
    assert z.shape == (3, 8)
    assert torch.equal(z, task.sample_z(3, torch.Generator().manual_seed(1)))
    image = torch.randn(3, 4, 32, 32)
    mu, logvar = task.encode(image)
    assert mu.shape == logvar.shape == (3, 8)
    out = task.inference_generator()(task.onehot(torch.randint(0, 7, (3, 32, 32))), z)
    assert out.shape == (3, 4, 32, 32)
    with pytest.raises(RuntimeError, match="use_vae"):
        make_task(datamodule, use_vae=False).encode(image)


def test_feature_matching_decreases_on_one_batch(datamodule: LandCoverDataModule) -> None:
    torch.manual_seed(0)
    task = make_task(datamodule, lambda_gan=0.0, lambda_kld=0.0, lambda_feat=1.0)
    batch = next(iter(datamodule.train_dataloader()))
    image, onehot = batch["image"], task.onehot(batch["mask"])
    task.discriminator.requires_grad_(False)
    params = list(task.generator.parameters()) + list(task.encoder.parameters())
    opt = torch.optim.Adam(params, lr=2e-3)
    losses = []
    for _ in range(15):
        total, terms, _ = task.generator_losses(image, onehot)
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(terms["g_feat"].item())
    assert losses[-1] < 0.7 * losses[0]


def _pairwise_distance(task: GeneratorTask, mask: torch.Tensor, n: int = 6) -> float:
    gen = task.inference_generator().eval()
    onehot = task.onehot(mask[None].expand(n, -1, -1))
    with torch.no_grad():
        out = gen(onehot, task.sample_z(n, torch.Generator().manual_seed(123)))
    dists = [(out[i] - out[j]).abs().mean().item() for i, j in itertools.combinations(range(n), 2)]
    return sum(dists) / len(dists)


def test_diversity_loss_increases_sample_diversity(
    datamodule: LandCoverDataModule, tmp_path: Path
) -> None:
    mask = datamodule.eval_dataset("val")[0]["mask"]
    distances = {}
    for lam in (0.0, 5.0):
        L.seed_everything(0)
        task = make_task(datamodule, lambda_div=lam, lr_g=1e-3, lr_d=1e-3)
        trainer = fit(task, datamodule, 30, tmp_path / str(lam))
        distances[lam] = _pairwise_distance(task, mask)
        expected = {
            "train/g_gan",
            "train/g_feat",
            "train/g_kld",
            "train/g_total",
            "train/d_loss",
            "train/d_real",
            "train/d_fake",
        }
        if lam:
            expected.add("train/g_div")
        assert expected <= set(trainer.logged_metrics)
    assert distances[5.0] > 1.5 * distances[0.0], distances


def test_d_steps_per_g_and_step_count(datamodule: LandCoverDataModule, tmp_path: Path) -> None:
    task = make_task(datamodule, d_steps_per_g=2)
    trainer = fit(task, datamodule, 2, tmp_path)
    assert trainer.global_step == 2  # generator steps
    assert int(task.batches_seen) == 4  # one discriminator step per batch
    opt_g, opt_d = trainer.optimizers
    assert next(iter(opt_g.state.values()))["step"].item() == 2
    assert next(iter(opt_d.state.values()))["step"].item() == 4


class Poison(L.Callback):
    """Make the generator output NaN from a given generator step on."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, task: GeneratorTask, *args: Any) -> None:
        if trainer.global_step == self.step:
            task.generator.out.weight.data.fill_(math.nan)


def test_nan_guard_stops_and_keeps_last_good_checkpoint(
    datamodule: LandCoverDataModule, tmp_path: Path
) -> None:
    task = make_task(datamodule)
    ckpt = ModelCheckpoint(
        dirpath=tmp_path / "checkpoints", save_last=True, every_n_train_steps=1, save_top_k=0
    )
    with pytest.raises(NonFiniteLoss, match=r"non-finite g_total .* step 2"):
        fit(task, datamodule, 5, tmp_path, callbacks=[ckpt, Poison(2)], enable_checkpointing=True)
    assert NonFiniteLoss in USER_ERRORS  # a job prints it as one line, exit 2
    state = torch.load(
        tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    assert state["global_step"] == 2
    assert all(
        torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point()
    )


def _compose(toy_root: Path, tmp_path: Path, run: str, *extra: str) -> Any:
    return tiny_generator_cfg(toy_root, tmp_path, run, "callbacks.samples.every_n_steps=2", *extra)


def test_entry_point_checkpoints_samples_and_resume(toy_root: Path, tmp_path: Path) -> None:
    metrics = train(_compose(toy_root, tmp_path, "run", "trainer.max_steps=3"))
    run = Path(metrics["run_dir"])
    last = run / "checkpoints" / "last.ckpt"
    assert metrics["checkpoint"] == str(last.resolve()) and metrics["steps"] == 3
    assert metrics["patch_size"] == 32 and metrics["lambda_div"] == 0.0
    assert json.loads((run / "metrics.json").read_text())["steps"] == 3
    assert (run / "config.yaml").exists()
    assert (run / "samples" / "step_000002.png").stat().st_size > 0
    assert list((run / "checkpoints").glob("best-step*.ckpt"))
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["global_step"] == 3

    task = GeneratorTask.load_from_checkpoint(last, map_location="cpu")
    assert task.hparams.patch_size == 32
    assert task.hparams.metadata["classes"] == list(CLASSES)
    assert task.hparams.metadata["bands"] == 4 and len(task.hparams.metadata["mean"]) == 4
    assert task.generator_ema is not None and task.inference_generator() is task.generator_ema

    resumed = Path(
        train(_compose(toy_root, tmp_path, "resumed", "trainer.max_steps=5", f"ckpt_path={last}"))[
            "run_dir"
        ]
    )
    state = torch.load(
        resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    assert state["global_step"] == 5
    # Adam state continued from the checkpoint: 5 updates each, not 2
    for opt_state in state["optimizer_states"]:
        assert next(iter(opt_state["state"].values()))["step"].item() == 5
    assert (resumed / "samples" / "step_000004.png").exists()


def _preset(name: str) -> dict[str, Any]:
    """A generator preset from conf/generator, shrunk to test size."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "generator" / f"{name}.yaml"))
    assert isinstance(cfg, dict)
    cfg.pop("_target_")
    cfg.pop("_recursive_")
    cfg.pop("patch_size")
    cfg["net"].update(ngf=4, spade_hidden=8)
    cfg.update(nef=4, ndf=4, n_layers=2)
    return cfg


@pytest.mark.parametrize("preset", ["spade_cpu", "oasis_cpu"])
def test_both_generator_options_train(
    preset: str, datamodule: LandCoverDataModule, tmp_path: Path
) -> None:
    """Each preset trains a few steps: every network moves, the EMA follows the generator
    at the configured rate, and the adversary logs its own terms."""
    L.seed_everything(0)
    task = make_task(datamodule, **{**_preset(preset), "lambda_div": 2.0, "ema_decay": 0.5})
    before = {k: v.clone() for k, v in task.state_dict().items()}
    trainer = fit(task, datamodule, 3, tmp_path)
    after = task.state_dict()
    for part in ("generator.", "discriminator.", "generator_ema."):
        keys = [k for k in before if k.startswith(part) and before[k].is_floating_point()]
        assert any(not torch.equal(before[k], after[k]) for k in keys), f"{part} did not move"
    logged = set(trainer.logged_metrics)
    assert {"train/g_gan", "train/g_div", "train/d_real", "train/d_fake"} <= logged
    if preset == "oasis_cpu":
        assert task.encoder is None and "train/d_labelmix" in logged
        assert "train/g_feat" not in logged
    else:
        assert task.encoder is not None and "train/g_feat" in logged
    # EMA with decay min(0.5, (1 + n) / (10 + n)) over n = 0, 1, 2 generator steps:
    # ema_3 = g_3 - sum of the generator's later moves weighted by the kept fractions.
    # Check the rate on one more, controlled update: ema <- ema + (1 - decay)(g - ema).
    ema, gen = task.generator_ema, task.generator
    old = [p.clone() for p in ema.parameters()]
    task._update_ema(task.onehot(torch.zeros(2, 32, 32, dtype=torch.long)))
    decay = min(0.5, (1 + trainer.global_step) / (10 + trainer.global_step))
    for o, e, g in zip(old, ema.parameters(), gen.parameters()):
        torch.testing.assert_close(e, o + (1 - decay) * (g - o))


def test_batch_norm_ema_keeps_its_own_statistics(datamodule: LandCoverDataModule) -> None:
    """With batch norm the EMA generator's running statistics come from its own weights
    (it runs on the batch's masks), not a copy of the live generator's."""
    task = make_task(datamodule, **{**_preset("oasis_cpu"), "ema": True})
    task.generator.train()
    onehot = task.onehot(torch.randint(0, 7, (2, 32, 32)))
    task.generator(onehot, task.sample_z(2))  # the live generator's statistics move
    with torch.no_grad():
        for p in task.generator.parameters():
            p.mul_(3.0)  # and now its weights differ a lot from the EMA's
    task._update_ema(onehot)
    live = [b for n, b in task.generator.named_buffers() if n.endswith("running_var")]
    ema = [b for n, b in task.generator_ema.named_buffers() if n.endswith("running_var")]
    assert not task.generator_ema.training
    assert any(not torch.allclose(a, b) for a, b in zip(live, ema))
    assert all(not torch.equal(b, torch.ones_like(b)) for b in ema)  # they were updated


def test_second_diversity_code_comes_from_the_posterior(
    datamodule: LandCoverDataModule,
) -> None:
    """As in the original DSGAN-on-SPADE code, both codes are draws from the encoder's
    posterior (here pinned near mu = 3), not one of them from N(0, I)."""
    task = make_task(datamodule, lambda_div=1.0)

    class Pinned(torch.nn.Module):
        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            mu = torch.full((image.shape[0], 8), 3.0)
            return mu, torch.full_like(mu, -20.0)

    task.encoder = Pinned()
    z1, z2, mu, _ = task._style_codes(torch.randn(5, 4, 32, 32))
    torch.testing.assert_close(z1, mu, atol=1e-3, rtol=0)
    torch.testing.assert_close(z2, mu, atol=1e-3, rtol=0)
    assert not torch.equal(z1, z2)


def test_bad_settings_are_refused(datamodule: LandCoverDataModule) -> None:
    with pytest.raises(ValueError, match="lambda_div"):
        make_task(datamodule, lambda_div=-1.0)
    with pytest.raises(ValueError, match="discriminator"):
        make_task(datamodule, discriminator="stylegan")
    with pytest.raises(ValueError, match="ema_decay"):
        make_task(datamodule, ema_decay=1.5)


def test_diversity_is_measured_in_unit_output_range(
    datamodule: LandCoverDataModule, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lambda_div means what it does in the paper: the DSGAN ratio is taken on outputs
    divided by ``output_scale`` (the [-1, 1] range of SPADE images), not on raw outputs."""
    import synthsat.tasks.generator as generator_module

    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real_loss = generator_module.diversity_loss

    def spy(fake1: torch.Tensor, fake2: torch.Tensor, *args: Any) -> torch.Tensor:
        seen.append((fake1.detach(), fake2.detach()))
        return real_loss(fake1, fake2, *args)

    monkeypatch.setattr(generator_module, "diversity_loss", spy)
    torch.manual_seed(0)
    task = make_task(datamodule, lambda_div=2.0, output_scale=4.0, tau=None)
    batch = next(iter(datamodule.train_dataloader()))
    _, terms, fakes = task.generator_losses(batch["image"], task.onehot(batch["mask"]))
    ((f1, f2),) = seen
    torch.testing.assert_close(f1, fakes[0].detach() / 4.0)
    torch.testing.assert_close(f2, fakes[1].detach() / 4.0)
    assert f1.abs().max() <= 1.0
    # the term is the negative image distance / code distance on those unit-range images
    assert terms["g_div"].item() < 0


def test_only_the_ema_generator_stays_in_eval_mode(datamodule: LandCoverDataModule) -> None:
    """Why Lightning's 'modules in eval mode at the start of training' warning is filtered:
    the modules it counts are exactly the EMA generator's, frozen on purpose."""
    task = make_task(datamodule, ema=True, lambda_vgg=0.0).train()
    frozen = [name for name, m in task.named_modules() if not m.training]
    ema = [name for name, _ in task.named_modules() if name.startswith("generator_ema")]
    assert frozen == ema and len(ema) > 1


# -- the network's config and checkpoints written before it ---------------------------------
def test_net_config_builds_the_spade_generator(datamodule: LandCoverDataModule) -> None:
    """``net`` holds the generator network's settings (its own defaults otherwise); the
    task passes the data's classes and bands, the patch size and z_dim."""
    task = make_task(datamodule, net={"ngf": 4, "start_size": 8, "norm": "batch"})
    assert task.hparams.net == {
        "_target_": "synthsat.models.spade.SPADEGenerator",
        "ngf": 4,
        "start_size": 8,
        "norm": "batch",
    }
    gen = task.generator
    assert (gen.num_classes, gen.out_channels, gen.z_dim, gen.num_up) == (7, 4, 8, 2)
    assert gen.start == "fc" and gen.noise_dim == 0  # SPADEGenerator's defaults
    assert task._batch_norm and not make_task(datamodule)._batch_norm


def test_flat_settings_of_old_checkpoints_still_load(
    datamodule: LandCoverDataModule, tmp_path: Path
) -> None:
    """Checkpoints written before ``net`` hold the network's settings flat among the
    task's, and the sample grid's settings: they load into the same network."""
    from synthsat.tasks.checkpoints import load_task

    torch.manual_seed(0)
    new = make_task(datamodule, ema=True)
    flat = {k: v for k, v in TINY.items() if k != "net"}
    old_hparams = {
        **flat,
        **TINY["net"],
        "data": datamodule.metadata(),
        "patch_size": 32,
        "ema": True,
        "sample_every_n_steps": 500,
        "sample_rows": 4,
        "num_samples": 3,
    }
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(new)
    trainer.save_checkpoint(tmp_path / "new.ckpt")
    state = torch.load(tmp_path / "new.ckpt", map_location="cpu", weights_only=False)
    state["hyper_parameters"] = old_hparams
    torch.save(state, tmp_path / "old.ckpt")
    for old in (
        GeneratorTask.load_from_checkpoint(tmp_path / "old.ckpt", map_location="cpu"),
        load_task(tmp_path / "old.ckpt", "generator", "test"),
    ):
        assert old.hparams.net == new.hparams.net
        assert "ngf" not in old.hparams and "sample_every_n_steps" not in old.hparams
        for (k, a), (_, b) in zip(new.state_dict().items(), old.state_dict().items()):
            assert torch.equal(a, b), k
    with pytest.raises(TypeError, match="ngff"):
        make_task(datamodule, ngff=4)


# -- sample grids: a callback -------------------------------------------------------------
def test_sample_grid_callback_writes_grids_and_changes_no_weights(
    datamodule: LandCoverDataModule, tmp_path: Path
) -> None:
    """Grids after the first generator step and every 2 (2 discriminator steps each), and
    at the end (5 steps), drawn without touching the weights or the random state: the run
    ends as one without the callback."""
    from synthsat.callbacks import GeneratorSamples

    states = []
    for every in (2, 0):
        L.seed_everything(0)
        task = make_task(datamodule, d_steps_per_g=2, ema=True, lambda_div=1.0)
        samples = GeneratorSamples(every_n_steps=every, rows=2, samples=2)
        fit(task, datamodule, 5, tmp_path / str(every), callbacks=[samples])
        states.append(task.state_dict())
    grids = sorted(p.name for p in (tmp_path / "2" / "samples").glob("*.png"))
    assert grids == [f"step_00000{k}.png" for k in (1, 2, 4, 5)]
    assert not (tmp_path / "0" / "samples").exists()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_generator_grid_layout(datamodule: LandCoverDataModule) -> None:
    from synthsat.figures import generator_grid

    task = make_task(datamodule)
    batch = next(iter(datamodule.train_dataloader()))
    grid = generator_grid(task, batch, rows=3, samples=2)
    # 3 rows x (mask, real, 2 samples) of 32 px panels upscaled 4x, 2 px padding
    assert grid.shape == (3, 3 * 128 + 4 * 2, 4 * 128 + 5 * 2)
    assert float(grid.min()) >= 0.0 and float(grid.max()) <= 1.0
    assert torch.equal(grid, generator_grid(task, batch, rows=3, samples=2))


#: Each generator loss term and the knob that weights it.
KNOBS = {
    "g_gan": "lambda_gan",
    "g_feat": "lambda_feat",
    "g_kld": "lambda_kld",
    "g_stats": "lambda_stats",
    "g_texture": "lambda_texture",
    "g_div": "lambda_div",
}
BASE = {
    "lambda_gan": 1.5, "lambda_feat": 2.0, "lambda_kld": 0.5, "lambda_stats": 0.3,
    "lambda_texture": 0.4,
}  # fmt: skip


def _generator_losses(
    dm: LandCoverDataModule, batch: dict[str, Any], **knobs: float
) -> tuple[float, dict[str, float]]:
    """The total and the unweighted terms of one seeded generator step (same weights and
    draws whatever the knobs)."""
    torch.manual_seed(0)
    task = make_task(dm, **{**BASE, "lambda_div": 0.7, **knobs})
    torch.manual_seed(1)
    total, terms, _ = task.generator_losses(batch["image"], task.onehot(batch["mask"]))
    return total.item(), {k: v.item() for k, v in terms.items()}


def test_every_generator_loss_term_is_weighted_by_its_own_knob(
    datamodule: LandCoverDataModule,
) -> None:
    """The total is the sum of knob x term; raising one knob by 1 moves the total by
    exactly its own term, and no term changes; a knob at 0 drops its term."""
    batch = next(iter(datamodule.train_dataloader()))
    total, terms = _generator_losses(datamodule, batch)
    assert set(terms) == set(KNOBS)
    knobs = {**BASE, "lambda_div": 0.7}
    assert total == pytest.approx(sum(knobs[KNOBS[k]] * v for k, v in terms.items()), rel=1e-5)
    for term, knob in KNOBS.items():
        raised, raised_terms = _generator_losses(datamodule, batch, **{knob: knobs[knob] + 1})
        assert raised_terms == pytest.approx(terms, rel=1e-6), knob
        assert raised - total == pytest.approx(terms[term], rel=1e-4, abs=1e-6), knob
    for knob in ("lambda_feat", "lambda_kld", "lambda_stats", "lambda_texture"):
        _, dropped = _generator_losses(datamodule, batch, **{knob: 0.0})
        assert set(dropped) == set(KNOBS) - {next(t for t, k in KNOBS.items() if k == knob)}


def test_labelmix_is_weighted_by_its_knob(datamodule: LandCoverDataModule) -> None:
    """OASIS: the discriminator loss is d_real + d_fake + lambda_labelmix x d_labelmix."""
    batch = next(iter(datamodule.train_dataloader()))
    losses = {}
    for weight in (2.0, 5.0):
        torch.manual_seed(0)
        task = make_task(datamodule, discriminator="oasis", lambda_labelmix=weight)
        onehot = task.onehot(batch["mask"])
        torch.manual_seed(1)
        _, _, fakes = task.generator_losses(batch["image"], onehot, batch["mask"])
        loss, logs = task.discriminator_loss(batch["image"], onehot, fakes, batch["mask"])
        parts = logs["d_real"] + logs["d_fake"] + weight * logs["d_labelmix"]
        assert loss.item() == pytest.approx(parts.item(), rel=1e-5)
        losses[weight] = (loss.item(), logs["d_labelmix"].item())
    assert losses[2.0][1] == pytest.approx(losses[5.0][1], rel=1e-6) and losses[2.0][1] > 0
    assert losses[5.0][0] - losses[2.0][0] == pytest.approx(3 * losses[2.0][1], rel=1e-4)
