"""SegmentationTask, U-Net builder and losses: shapes, ignore index, weights, checkpoints."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest
import torch

from synthsat.models.segmentation import EncoderWeightsError, build_unet
from synthsat.tasks.segmentation import LOSSES, SegmentationTask, build_loss

METADATA = {
    "classes": ["no-data", "water", "land"],
    "bands": 4,
    "band_names": ["r", "g", "b", "n"],
    "rgb_bands": [0, 1, 2],
    "ignore_index": 0,
    "scored_classes": [1, 2],
    "mean": [10.0, 20.0, 30.0, 40.0],
    "std": [2.0, 2.0, 2.0, 2.0],
}
TINY = {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}


def test_unet_shapes_any_band_count() -> None:
    model = build_unet(in_channels=5, classes=7, encoder_depth=3, decoder_channels=[32, 16, 8])
    assert model(torch.randn(2, 5, 64, 32)).shape == (2, 7, 64, 32)
    with pytest.raises(ValueError, match="decoder_channels needs 3"):
        build_unet(3, 4, encoder_depth=3, decoder_channels=[8, 8])
    with pytest.raises(ValueError, match="unknown encoder 'resnet7'"):
        build_unet(3, 4, encoder_name="resnet7")


def test_imagenet_weights_only_from_the_local_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(
        EncoderWeightsError, match="not in the local Hugging Face cache.*encoder_weights=null"
    ):
        build_unet(3, 4, encoder_name="resnet18", encoder_weights="imagenet")
    with pytest.raises(EncoderWeightsError, match="no 'instagram' weights"):
        build_unet(3, 4, encoder_name="resnet18", encoder_weights="instagram")


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("ignore_index", [0, 255])
def test_losses_ignore_the_ignore_index(loss: str, ignore_index: int) -> None:
    torch.manual_seed(0)
    criterion = build_loss(loss, 3, ignore_index)
    target = torch.randint(1, 3, (2, 8, 8))
    target[:, :3] = ignore_index
    logits = torch.randn(2, 3, 8, 8)
    changed = logits.clone()
    changed[:, :, :3] = torch.randn(2, 3, 3, 8) * 10  # only at ignored pixels
    assert torch.isfinite(criterion(logits, target))
    assert torch.allclose(criterion(logits, target), criterion(changed, target))
    perfect = torch.nn.functional.one_hot(target.clamp_max(2), 3).permute(0, 3, 1, 2) * 20.0
    assert criterion(perfect.float(), target) < criterion(logits, target)


def test_unknown_loss() -> None:
    with pytest.raises(ValueError, match="unknown segmentation loss 'dice'"):
        SegmentationTask(METADATA, loss="dice", **TINY)


def test_task_step_predict_and_checkpoint(tmp_path: Path) -> None:
    task = SegmentationTask(METADATA, loss="jaccard", **TINY)
    batch = {
        "image": torch.randn(2, 4, 32, 32),
        "mask": torch.randint(0, 3, (2, 32, 32)),
        "synthetic": torch.tensor([True, False]),
    }
    loss = task.training_step(batch, 0)
    loss.backward()
    assert task.model.segmentation_head[0].weight.grad is not None
    image = torch.randn(4, 45, 30)  # not a multiple of 8: padded and cropped back
    assert task.predict_logits(image).shape == (3, 45, 30)
    raw = torch.full((4, 2, 2), 30.0)
    assert torch.allclose(torch.from_numpy(task.normalize(raw.numpy()))[2], torch.zeros(2, 2))

    import lightning as L

    trainer = L.Trainer(
        max_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.strategy.connect(task)
    path = tmp_path / "task.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)  # plain containers only
    assert ckpt["hyper_parameters"]["metadata"] == METADATA
    loaded = SegmentationTask.load_from_checkpoint(path)
    assert loaded.classes == METADATA["classes"] and loaded.scored_classes == [1, 2]
    loaded.eval()
    task.eval()
    with torch.no_grad():
        assert torch.equal(loaded.predict_logits(image), task.predict_logits(image))


def test_metadata_is_required() -> None:
    with pytest.raises(ValueError, match="lacks"):
        SegmentationTask({"classes": ["a", "b"]}, **TINY)
