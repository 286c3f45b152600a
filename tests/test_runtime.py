"""The entry points' shared plumbing (synthsat.runtime): callbacks, trainer, device,
config choices, checkpoint vs data; and the figure helpers the jobs draw with."""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

import synthsat.callbacks.progress as progress_module
from synthsat import config_dir
from synthsat.callbacks import ProgressLog
from synthsat.data.errors import DataError
from synthsat.errors import ConfigError
from synthsat.figures import colorize_mask, palette, percentile_limits, rgb_composite
from synthsat.jobs.runtime import (
    build_callbacks,
    build_trainer,
    check_checkpoint_data,
    config_choice,
    progress_bar,
    resolve_device,
    validate_config,
)


def _compose(job: str, tmp_path: Path, *overrides: str) -> object:
    with initialize_config_dir(config_dir(), version_base="1.3"):
        return compose(
            job,
            overrides=[
                f"paths.root={tmp_path}",
                f"paths.output_dir={tmp_path / 'run'}",
                *overrides,
            ],
        )


def test_callbacks_by_name_and_null_turns_one_off(tmp_path: Path) -> None:
    cfg = _compose("train_segmentation", tmp_path, "callbacks.early_stopping=null", "logger=none")
    names = [type(c).__name__ for c in build_callbacks(cfg)]
    assert names == [
        "ResumableCheckpoint",  # Lightning's, last.ckpt after every validation
        "RandomStateCheckpoint",
        "ProgressLog",
        "ValidationCurve",
        "SegmentationTestReport",
    ]
    trainer = build_trainer(cfg, enable_checkpointing=True)
    assert "StopOnSigterm" in [type(c).__name__ for c in trainer.callbacks]  # on every trainer
    assert trainer.checkpoint_callback.monitor == "val/miou"
    assert trainer.max_steps == 520 and trainer.loggers == []


def test_generator_callbacks(tmp_path: Path) -> None:
    cfg = _compose("train_generator", tmp_path, "callbacks.samples.every_n_steps=7")
    (samples,) = [c for c in build_callbacks(cfg) if type(c).__name__ == "GeneratorSamples"]
    assert (samples.every_n_steps, samples.rows, samples.samples) == (7, 4, 3)
    with pytest.raises(ValueError, match="every_n_steps"):
        type(samples)(every_n_steps=-1)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_unless_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert progress_bar(None, _Terminal()) is True
    assert progress_bar(None, io.StringIO()) is False  # a log file, a pipe
    assert progress_bar(False, _Terminal()) is False and progress_bar(True, io.StringIO()) is True
    cfg = _compose("train_segmentation", tmp_path, "logger=none")
    assert cfg.trainer.enable_progress_bar is None  # the default: auto
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert build_trainer(cfg).progress_bar_callback is not None
    cfg = _compose(
        "train_segmentation", tmp_path, "logger=none", "trainer.enable_progress_bar=false"
    )
    assert build_trainer(cfg).progress_bar_callback is None
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    cfg = _compose("synthesize", tmp_path)
    assert build_trainer(cfg).progress_bar_callback is None


def test_progress_log_lines_without_a_bar(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ticks = iter([100.0, 110.0, 125.0, 130.0])  # train start, step 50, step 100, restart
    monkeypatch.setattr(progress_module, "_clock", lambda: next(ticks))
    metrics = {"train/loss_step": torch.tensor(0.25), "train/loss_epoch": torch.tensor(0.5)}
    trainer = SimpleNamespace(
        global_step=0,
        max_steps=520,
        progress_bar_callback=None,
        is_global_zero=True,
        callback_metrics=metrics,
    )
    progress = ProgressLog(every_n_steps=50, metrics=["train/loss", "train/miou"])
    progress.on_train_start(trainer, None)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="synthsat.callbacks"):
        for step in (1, 49, 50, 50, 99, 100):  # 50 twice: a batch without an update
            trainer.global_step = step
            progress.on_train_batch_end(trainer, None, None, None, step)  # type: ignore[arg-type]
    # 50 steps in 10 s, then 50 in 15 s; the step's loss, not the epoch's; no miou logged
    assert caplog.messages == [
        "step 50/520, train/loss 0.25, 5 it/s",
        "step 100/520, train/loss 0.25, 3.33 it/s",
    ]
    trainer.progress_bar_callback = object()  # a bar is drawn: no lines
    progress.on_train_start(trainer, None)  # type: ignore[arg-type]
    caplog.clear()
    trainer.global_step = 150
    progress.on_train_batch_end(trainer, None, None, None, 150)  # type: ignore[arg-type]
    assert caplog.messages == []
    with pytest.raises(ValueError, match="every_n_steps"):
        ProgressLog(every_n_steps=-1)


def test_generator_progress_shows_both_losses(tmp_path: Path) -> None:
    cfg = _compose("train_generator", tmp_path, "logger=none")
    (progress,) = [c for c in build_callbacks(cfg) if isinstance(c, ProgressLog)]
    assert (progress.every_n_steps, progress.metrics) == (50, ["train/g_total", "train/d_loss"])


def test_the_generator_owns_the_patch_size(tmp_path: Path) -> None:
    """In train_generator, data.patch_size follows generator.patch_size; setting the
    data's alone (which used to change nothing but the stage hash) is refused."""
    cfg = _compose("train_generator", tmp_path, "generator.patch_size=32")
    assert cfg.data.patch_size == 32
    validate_config(cfg)
    cfg = _compose("train_generator", tmp_path, "data.patch_size=128")
    with pytest.raises(ConfigError, match=r"^data\.patch_size=128: .*generator\.patch_size=64"):
        validate_config(cfg)


def test_device_and_config_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == resolve_device(None).type == expected
    # outside a Hydra app (an earlier test's app may have left its config behind)
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)
    assert config_choice("data") == "custom"
    assert config_choice("data", "toyworld") == "toyworld"


def test_checkpoint_against_the_data() -> None:
    data = {"bands": 4, "classes": ["a", "b"]}
    check_checkpoint_data("ckpt=m.ckpt", {"bands": 4, "classes": ["a", "b"]}, data)
    check_checkpoint_data("x", {"bands": 4, "classes": ["a", "b"]}, OmegaConf.create(data))
    with pytest.raises(DataError) as err:
        check_checkpoint_data("ckpt=m.ckpt", {"bands": 3, "classes": ["a", "b"]}, data)
    assert str(err.value) == (
        "ckpt=m.ckpt: the model was trained on bands=3, classes=['a', 'b']; "
        "the data has bands=4, classes=['a', 'b']"
    )
    with pytest.raises(DataError, match=r"^seg_ckpt=s: the segmentation model .*\['a'\];"):
        check_checkpoint_data(
            "seg_ckpt=s", {"bands": 4, "classes": ["a"]}, data, "segmentation model"
        )


# -- figures -------------------------------------------------------------------------------
def test_one_palette_with_the_ignore_index_black() -> None:
    colours = palette(7, ignore_index=0)
    assert colours.shape == (7, 3) and np.all(colours[0] == 0) and np.all(colours[1:].sum(1) > 0)
    assert palette(12).shape == (12, 3)  # tab20 beyond 10 classes
    rgb = colorize_mask(np.array([[0, 1], [6, 9]]), 7, ignore_index=0)
    np.testing.assert_array_equal(rgb[0, 0], 0)
    np.testing.assert_allclose(rgb[0, 1], palette(7)[1])
    np.testing.assert_array_equal(rgb[1, 1], 0)  # out of range


def test_percentile_stretch() -> None:
    image = np.stack([np.arange(100, dtype=np.float32).reshape(10, 10) * k for k in (1, 2, 3)])
    lo, hi = percentile_limits(image, [0, 1, 2])
    np.testing.assert_allclose(lo, [1.98, 3.96, 5.94], rtol=1e-5)
    np.testing.assert_allclose(hi, [97.02, 194.04, 291.06], rtol=1e-5)
    rgb = rgb_composite(image, [0, 1, 2])
    assert rgb.shape == (10, 10, 3) and rgb.min() == 0.0 and rgb.max() == 1.0
    np.testing.assert_allclose(rgb[5, 0], (50 - 1.98) / (97.02 - 1.98), rtol=1e-5)
    # shared limits (a grid's): an image twice as bright saturates
    assert rgb_composite(image * 2, [0, 1, 2], (lo, hi))[5, 0].tolist() == [1.0, 1.0, 1.0]
    grey = rgb_composite(image[:1], [0])
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])


def _fit_with_bar(bar: object, **trainer_kwargs: object) -> list[tuple[str, float, float]]:
    """Fit a one-weight model on 3 batches per epoch with ``bar``; the training bar's
    (label, completed, total) after each training step, as drawn."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from synthsat.callbacks import StepRichProgressBar

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
            return (self.w - batch[0]).square().mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self) -> DataLoader:
            return DataLoader(TensorDataset(torch.ones(3, 1)), batch_size=1)

    seen: list[tuple[str, float, float]] = []

    class Spy(L.Callback):
        def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
            if isinstance(bar, StepRichProgressBar):
                task = bar.progress.tasks[bar.train_progress_bar_id]
                seen.append((task.description.strip(), task.completed, task.total))
            else:
                tqdm = bar.train_progress_bar
                seen.append((tqdm.desc.rstrip(": "), tqdm.n, tqdm.total))

    trainer = L.Trainer(
        callbacks=[bar, Spy()],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=True,
        **trainer_kwargs,
    )
    trainer.fit(Tiny())
    return seen


@pytest.mark.parametrize("kind", ["rich", "tqdm"])
def test_the_bar_counts_steps_under_a_step_budget(kind: str) -> None:
    """Under ``max_steps`` the bar runs once over the fit's steps (Lightning's Rich bar
    reads ``Epoch 0/-2`` and restarts at each epoch); under ``max_epochs`` it is per epoch."""
    from synthsat.callbacks import StepRichProgressBar, StepTQDMProgressBar

    make = StepRichProgressBar if kind == "rich" else StepTQDMProgressBar
    seen = _fit_with_bar(make(), max_steps=7)
    assert seen == [("Step", k, 7) for k in range(1, 8)]
    seen = _fit_with_bar(make(), max_epochs=2)
    assert seen == [(f"Epoch {e}/1", b, 3) for e in range(2) for b in range(1, 4)]


def test_the_bar_label_and_which_bar_a_job_gets() -> None:
    import lightning as L

    from synthsat.callbacks import StepRichProgressBar, train_description
    from synthsat.jobs.runtime import build_trainer

    def trainer(max_steps: int, max_epochs: int | None) -> object:
        return SimpleNamespace(max_steps=max_steps, max_epochs=max_epochs, current_epoch=3)

    assert train_description(trainer(360, -1)) == "Step"
    assert train_description(trainer(-1, 10)) == "Epoch 3/9"
    assert train_description(trainer(-1, -1)) == "Epoch 3"  # a time budget alone
    assert train_description(trainer(-1, None)) == "Epoch 3"
    cfg = OmegaConf.create({"trainer": {"_target_": "lightning.pytorch.Trainer"}})
    bars = [
        [c for c in build_trainer(cfg, logger=False, enable_progress_bar=on).callbacks]
        for on in (True, False)
    ]
    assert [type(c) for c in bars[0] if isinstance(c, L.pytorch.callbacks.ProgressBar)] == [
        StepRichProgressBar
    ]
    assert not [c for c in bars[1] if isinstance(c, L.pytorch.callbacks.ProgressBar)]
    # a bar configured under callbacks: kept when drawn, dropped when not (Lightning refuses
    # a bar callback with enable_progress_bar=False)
    own = L.pytorch.callbacks.TQDMProgressBar()
    kept = build_trainer(cfg, logger=False, callbacks=[own], enable_progress_bar=True)
    assert kept.progress_bar_callback is own
    off = build_trainer(cfg, logger=False, callbacks=[own], enable_progress_bar=False)
    assert off.progress_bar_callback is None
