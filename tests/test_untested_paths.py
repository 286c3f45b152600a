"""Paths no other test ran: evaluate's checkpoint/data mismatch error, a generator
trained without a style encoder (training, validation and synthesis), and the warning
for a kept synthetic output that was made with other settings."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from conftest import (
    TINY_GENERATOR,
    ToyChipGenerator,
    compose_job,
    quiet_trainer,
    save_task,
    toy_datamodule,
    toy_run_overrides,
)
from torch import Tensor

from synthsat.data import DataError, toyworld
from synthsat.jobs.evaluate import evaluate
from synthsat.synthesis import TileSynthesizer, make_requests, read_provenance, run_synthesis
from synthsat.synthesis.predict import TaskChipGenerator
from synthsat.tasks.generator import GeneratorTask
from synthsat.tasks.segmentation import SegmentationTask

CLASSES = list(toyworld.CLASSES)


# -- evaluate: a checkpoint for other bands or classes than the data ----------------------
def _segmentation_checkpoint(path: Path, bands: int, classes: list[str]) -> Path:
    """An untrained tiny segmentation checkpoint for ``bands`` and ``classes``."""
    metadata = {
        "classes": classes,
        "bands": bands,
        "band_names": [f"b{i}" for i in range(bands)],
        "rgb_bands": [0, 1, 2],
        "ignore_index": 0,
        "scored_classes": list(range(1, len(classes))),
        "mean": [100.0] * bands,
        "std": [30.0] * bands,
    }
    task = SegmentationTask(metadata=metadata, encoder_depth=3, decoder_channels=[32, 16, 8])
    return save_task(task, path)


@pytest.mark.parametrize(
    ("bands", "classes", "trained_on"),
    [
        (3, CLASSES, f"bands=3, classes={CLASSES}"),
        (4, CLASSES[:3], "bands=4, classes=['no-data', 'water', 'tree canopy']"),
    ],
    ids=["bands", "classes"],
)
def test_evaluate_refuses_a_checkpoint_for_other_data(
    bands: int, classes: list[str], trained_on: str, toy_root: Path, tmp_path: Path
) -> None:
    """The toy world has 4 bands and 7 classes; a checkpoint trained on 3 bands, or on
    3 classes, is refused with one message naming both sides, before any scoring."""
    ckpt = _segmentation_checkpoint(tmp_path / "model.ckpt", bands, classes)
    cfg = compose_job(
        "evaluate",
        [*toy_run_overrides(toy_root, tmp_path, "eval"), f"ckpt={ckpt}", "device=cpu"],
    )
    with pytest.raises(DataError) as refused:
        evaluate(cfg)
    assert str(refused.value) == (
        f"ckpt={ckpt}: the model was trained on {trained_on}; "
        f"the data has bands=4, classes={CLASSES}"
    )
    assert not (tmp_path / "eval" / "metrics.json").exists()


# -- a generator without a style encoder ----------------------------------------------------
# lambda_kld on, but there is no posterior to apply it to
TINY: dict[str, Any] = {**TINY_GENERATOR, "lambda_kld": 0.05}


def test_generator_without_encoder_trains_and_samples_random_codes(
    toy_root: Path, tmp_path: Path
) -> None:
    """``use_vae=false`` with the paper's PatchGAN: two training steps and a validation
    run with finite losses and no KL term; codes are N(0, I) draws that ignore the image,
    validation scores the class spectra (no reconstruction), and synthesis with
    ``style=auto`` samples random codes, so the real image does not change the output."""
    dm = toy_datamodule(
        toy_root,
        tmp_path / "cache",
        patch_size=32,
        patches_per_epoch=8,
        val_mode="patches",
        val_patches=4,
    )
    L.seed_everything(0)
    task = GeneratorTask(dm.metadata(), 32, use_vae=False, discriminator="patch", **TINY)
    assert task.encoder is None
    opt_g, _ = task.configure_optimizers()
    assert sum(p.numel() for g in opt_g.param_groups for p in g["params"]) == sum(
        p.numel() for p in task.generator.parameters()
    )

    trainer = quiet_trainer(
        accelerator="cpu",
        max_steps=2,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(task, datamodule=dm)
    logged = {k: float(v) for k, v in trainer.logged_metrics.items()}
    assert trainer.global_step == 2
    assert {"train/g_gan", "train/g_feat", "train/g_total", "train/d_loss"} <= set(logged)
    assert all(math.isfinite(v) for v in logged.values()), logged
    assert "train/g_kld" not in logged
    assert "val/l1_rec" not in logged
    assert logged["val/score"] == logged["val/class_spectra_l1"]

    # Codes: two N(0, I) draws from the global generator, whatever the image.
    images = torch.randn(3, 4, 32, 32)
    torch.manual_seed(7)
    z1, z2, mu, logvar = task._style_codes(images)
    torch.manual_seed(7)
    expected1, expected2 = torch.randn(3, 8), torch.randn(3, 8)
    assert mu is None and logvar is None
    assert torch.equal(z1, expected1) and torch.equal(z2, expected2)
    torch.manual_seed(7)
    assert torch.equal(task._style_codes(images * 0 + 5.0)[0], z1)

    # Synthesis: style=auto means random codes; the real image is not used.
    chip_generator = TaskChipGenerator(task)
    assert chip_generator.has_encoder is False
    meta = dm.metadata()
    synth = TileSynthesizer(chip_generator, meta["mean"], meta["std"], 0, style="auto")
    assert synth.style == "random"
    with pytest.raises(ValueError, match="style=encoder needs a style encoder"):
        TileSynthesizer(chip_generator, meta["mean"], meta["std"], 0, style="encoder")
    mask = toy_root / "masks" / "tile_000.tif"
    outputs = []
    for image in ("tile_000", "tile_001"):
        (request,) = make_requests(
            [("tile_000", mask, toy_root / "images" / f"{image}.tif")], ".", 1, 0
        )
        outputs.append(np.concatenate(list(synth.stream(request)), axis=1))
    assert outputs[0].shape == (4, 128, 128)
    np.testing.assert_array_equal(outputs[0], outputs[1])


# -- the warning for a kept output made with other settings ---------------------------------
class StyleGenerator(ToyChipGenerator):
    """A stand-in chip generator: class colours shifted by the style code."""

    out_bands = 4
    z_dim = 4
    has_encoder = False

    def generate(self, onehot: Tensor, z: Tensor) -> Tensor:
        colours = torch.linspace(-1.0, 1.0, self.num_classes)
        base = torch.einsum("bkhw,k->bhw", onehot, colours)[:, None]
        return base + z[:, :, None, None]


def _synthesizer(overlap: int) -> TileSynthesizer:
    return TileSynthesizer(
        StyleGenerator(),
        mean=[100.0] * 4,
        std=[30.0] * 4,
        ignore_index=0,
        style="random",
        overlap=overlap,
        provenance={"checkpoint": "stand-in.ckpt", "lambda_div": 0.0},
    )


def test_kept_output_made_with_other_settings_is_warned_about(
    toy_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A rerun keeps an existing output; when that output was made with another seed or
    overlap it says so, naming the settings and both values. A rerun with the same
    settings keeps it silently."""
    out = tmp_path / "out"
    tile = [("tile_000", toy_root / "masks" / "tile_000.tif", toy_root / "images" / "tile_000.tif")]
    (first,) = make_requests(tile, out, samples=1, seed=0)
    run_synthesis(_synthesizer(overlap=8), [first], out)
    stamp = first.output.stat().st_mtime_ns
    assert read_provenance(first.output)["seed"] == 0

    with caplog.at_level(logging.WARNING, logger="synthsat.synthesis.predict"):
        writer = run_synthesis(_synthesizer(overlap=8), [first], out)
    assert writer.skipped == [first.output]
    assert not [r for r in caplog.records if "is kept" in r.getMessage()]

    caplog.clear()
    (other,) = make_requests(tile, out, samples=1, seed=1)
    assert other.output == first.output
    with caplog.at_level(logging.WARNING, logger="synthsat.synthesis.predict"):
        writer = run_synthesis(_synthesizer(overlap=16), [other], out)
    assert writer.skipped == [first.output] and not writer.written
    assert first.output.stat().st_mtime_ns == stamp  # kept, not remade
    (warning,) = [r for r in caplog.records if "is kept" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert warning.getMessage() == (
        f"{first.output} exists and is kept, but was made with other seed, overlap "
        "({'seed': 0, 'overlap': 8}) than this run ({'seed': 1, 'overlap': 16}); "
        "delete it to remake it"
    )
