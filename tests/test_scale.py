"""``data.scale``: train / validate at reduced resolution, score at native resolution."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import toy_datamodule

from synthsat.data.cache import TileCache, rescale, scaled_shape
from synthsat.tasks.segmentation import SegmentationTask


def test_rescale_averages_image_blocks_and_keeps_centre_classes() -> None:
    image = np.arange(32, dtype=np.uint8).reshape(2, 4, 4)
    mask = np.array([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]], np.uint8)
    small, small_mask = rescale(image, mask, 0.5)
    assert small.dtype == np.uint8 and small.shape == (2, 2, 2)
    # 2 x 2 block means, rounded half to even: band 0 block (0, 1, 4, 5) -> 2.5 -> 2
    assert small[0].tolist() == [[2, 4], [10, 12]]
    assert small[1].tolist() == [[18, 20], [26, 28]]
    # the nearest source centre of output pixel (i, j) is source pixel (2i + 1, 2j + 1)
    assert small_mask.tolist() == [[5, 7], [13, 15]]


def test_rescale_float_images_and_odd_sizes() -> None:
    image = np.ones((1, 5, 7), np.float32) * 3.5
    mask = np.zeros((5, 7), np.uint8)
    small, small_mask = rescale(image, mask, 0.5)
    assert scaled_shape(5, 7, 0.5) == (2, 4)  # round(2.5) = 2 (half to even), round(3.5) = 4
    assert small.shape == (1, 2, 4) and small_mask.shape == (2, 4)
    assert np.allclose(small, 3.5) and small.dtype == np.float32


def test_scale_must_be_a_fraction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"data.scale must be in \(0, 1\]"):
        TileCache(tmp_path, 3, 2, 255, scale=1.5)


def test_train_and_val_tiles_are_scaled_test_tiles_native(toy_root: Path, tmp_path: Path) -> None:
    native = toy_datamodule(toy_root, tmp_path / "cache", patch_size=32)
    half = toy_datamodule(toy_root, tmp_path / "cache", patch_size=32, scale=0.5)
    native.setup()
    half.setup()
    for split in ("train", "val"):
        for a, b in zip(native.tiles[split], half.tiles[split], strict=True):
            assert b.shape == scaled_shape(*a.shape, 0.5)
            expected, expected_mask = rescale(np.asarray(a.image), np.asarray(a.mask), 0.5)
            assert np.array_equal(b.image, expected) and np.array_equal(b.mask, expected_mask)
    for a, b in zip(native.tiles["test"], half.tiles["test"], strict=True):
        assert b.shape == a.shape and np.array_equal(b.mask, a.mask)
    assert half.metadata()["scale"] == 0.5 and native.metadata()["scale"] == 1.0
    assert "scale: 0.5" in half.summary()


def _task(scale: float) -> SegmentationTask:
    torch.manual_seed(0)
    metadata = {
        "classes": ["a", "b", "c"],
        "bands": 2,
        "ignore_index": 255,
        "scored_classes": [0, 1, 2],
        "mean": [0.0, 0.0],
        "std": [1.0, 1.0],
        "scale": scale,
    }
    return SegmentationTask(metadata=metadata, encoder_depth=3, decoder_channels=[16, 8, 4]).eval()


def test_predict_logits_resamples_and_returns_native_size() -> None:
    task = _task(0.5)
    image = torch.randn(1, 2, 64, 48)
    with torch.no_grad():
        logits = task.predict_logits(image)
        small = task.model(F.interpolate(image, size=(32, 24), mode="area"))
        expected = F.interpolate(small, size=(64, 48), mode="bilinear", align_corners=False)
    assert logits.shape == (1, 3, 64, 48)
    assert torch.allclose(logits, expected, atol=1e-5)


@pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`:UserWarning")
def test_test_step_scores_native_masks_through_the_resampling_path() -> None:
    task = _task(0.5)
    image = torch.randn(1, 2, 32, 32)
    mask = torch.randint(0, 3, (1, 32, 32))
    with torch.no_grad():
        task.test_step({"image": image, "mask": mask}, 0)
        expected = task.predict_logits(image).argmax(1)
    scores = task.scores["test_scores"].compute()
    accuracy = float((expected == mask).float().mean())
    assert scores["pixel_accuracy"] == pytest.approx(accuracy)


def test_checkpoints_without_scale_load_at_native_resolution() -> None:
    task = _task(0.5)
    metadata = dict(task.hparams.metadata)
    del metadata["scale"]
    old = SegmentationTask(metadata=metadata, encoder_depth=3, decoder_channels=[16, 8, 4])
    assert old.scale == 1.0


def test_cosine_schedule_warms_up_then_decays_to_min_lr() -> None:
    metadata = dict(_task(1.0).hparams.metadata)
    task = SegmentationTask(
        metadata=metadata,
        encoder_depth=3,
        decoder_channels=[16, 8, 4],
        lr=1e-2,
        min_lr=1e-4,
        scheduler="cosine",
        warmup_steps=2,
    )
    task.trainer = SimpleNamespace(max_steps=10)  # type: ignore[assignment]
    config = task.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "step"
    lrs = []
    for _ in range(11):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.5e-2) and lrs[1] == pytest.approx(1e-2)
    # halfway through the 8 decay steps: the mean of lr and min_lr
    assert lrs[6] == pytest.approx((1e-2 + 1e-4) / 2)
    assert lrs[10] == pytest.approx(1e-4) and lrs[2] == pytest.approx(1e-2)


def test_cosine_schedule_needs_a_step_budget() -> None:
    metadata = dict(_task(1.0).hparams.metadata)
    task = SegmentationTask(metadata=metadata, encoder_depth=3, scheduler="cosine")
    task.trainer = SimpleNamespace(max_steps=-1)  # type: ignore[assignment]
    with pytest.raises(ValueError, match="needs trainer.max_steps > 0"):
        task.configure_optimizers()
    with pytest.raises(ValueError, match="unknown scheduler 'step'"):
        SegmentationTask(metadata=metadata, scheduler="step")
