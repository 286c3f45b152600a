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


def reference_loss(
    name: str, logits: torch.Tensor, target: torch.Tensor, ignore: int
) -> torch.Tensor:
    """The loss written out by hand in float64, over the labelled pixels only.

    ce: mean cross-entropy. focal: per class, the mean binary focal term (gamma 2, no alpha)
    of the sigmoid, averaged over all classes. jaccard: per class other than the ignore
    index, 1 - soft IoU of the softmax (0 for a class without labelled pixels), averaged.
    """
    k = logits.shape[1]
    keep = target != ignore
    x = logits.double().permute(0, 2, 3, 1)[keep]  # (N, K)
    y = torch.nn.functional.one_hot(target[keep], k).double()
    if name == "ce":
        return -(x.log_softmax(1) * y).sum(1).mean()
    if name == "focal":
        pt = torch.where(y == 1, x.sigmoid(), 1 - x.sigmoid())
        return (-((1 - pt) ** 2) * pt.log()).mean(0).mean()
    assert name == "jaccard"
    p = x.softmax(1)
    terms = []
    for c in range(k):
        if c == ignore:
            continue
        inter = (p[:, c] * y[:, c]).sum()
        union = p[:, c].sum() + y[:, c].sum() - inter
        terms.append((1 - inter / union) * (y[:, c].sum() > 0))
    return torch.stack(terms).mean()


def step_against_reference(task: SegmentationTask, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Run ``training_step`` and backward; check its loss and the gradient reaching the
    logits against :func:`reference_loss` on the same logits. Returns the logits' gradient."""
    captured: list[torch.Tensor] = []

    def keep_logits(module: torch.nn.Module, inputs: object, output: torch.Tensor) -> None:
        output.retain_grad()
        captured.append(output)

    hook = task.model.register_forward_hook(keep_logits)
    # called outside a Trainer on purpose: Lightning says the self.log() calls go nowhere
    with pytest.warns(UserWarning, match=r"self\.trainer. reference is not registered"):
        loss = task.training_step(batch, 0)
    hook.remove()
    loss.backward()
    (logits,) = captured
    ref_logits = logits.detach().double().requires_grad_()
    expected = reference_loss(task.hparams.loss, ref_logits, batch["mask"], task.ignore_index)
    expected.backward()
    torch.testing.assert_close(loss.double(), expected.detach(), rtol=1e-5, atol=1e-6)
    assert logits.grad is not None and ref_logits.grad is not None
    torch.testing.assert_close(logits.grad.double(), ref_logits.grad, rtol=1e-4, atol=1e-8)
    # pixels labelled with the ignore index get exactly no gradient
    ignored = (batch["mask"] == task.ignore_index).unsqueeze(1).expand_as(logits)
    assert ignored.any() and torch.all(logits.grad[ignored] == 0)
    # the head's last layer is a convolution: its bias gradient is the logits' gradient summed
    bias_grad = task.model.segmentation_head[0].bias.grad
    torch.testing.assert_close(
        bias_grad.double(), ref_logits.grad.sum((0, 2, 3)), atol=1e-7, rtol=1e-4
    )
    return logits.grad


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("ignore_index", [0, 255])
def test_training_step_loss_and_gradient_by_hand(loss: str, ignore_index: int) -> None:
    torch.manual_seed(0)
    metadata = {
        **METADATA,
        "ignore_index": ignore_index,
        "scored_classes": [c for c in range(3) if c != ignore_index],
    }
    task = SegmentationTask(metadata, loss=loss, **TINY)
    mask = torch.randint(0, 3, (2, 16, 16))
    mask[:, :4] = ignore_index
    batch = {"image": torch.randn(2, 4, 16, 16), "mask": mask}
    grad = step_against_reference(task, batch)
    if loss == "ce":  # d CE / d logits = (softmax - one-hot) / labelled pixels, 0 elsewhere
        keep = mask != ignore_index
        probs = task(batch["image"]).detach().softmax(1)
        onehot = torch.nn.functional.one_hot(mask.clamp_max(2), 3).permute(0, 3, 1, 2)
        analytic = (probs - onehot) * keep.unsqueeze(1) / keep.sum()
        torch.testing.assert_close(grad, analytic, rtol=1e-4, atol=1e-8)


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
    step_against_reference(task, batch)  # soft Jaccard over 'water' and 'land' only
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


def test_task_is_torchgeos_with_this_projects_settings() -> None:
    """A torchgeo SemanticSegmentationTask whose hyperparameters are exactly this task's
    settings (checkpoints load with its signature) and whose hooks build the same U-Net
    as build_unet from the same seed (the numbers of the task before torchgeo)."""
    import inspect

    from torchgeo.trainers import SemanticSegmentationTask

    torch.manual_seed(0)
    task = SegmentationTask(METADATA, **TINY)
    assert isinstance(task, SemanticSegmentationTask)
    assert set(task.hparams) == set(inspect.signature(SegmentationTask).parameters)
    assert task.hparams.metadata == METADATA and task.monitor == "val/loss"
    torch.manual_seed(0)
    unet = build_unet(4, 3, encoder_depth=3, decoder_channels=[32, 16, 8])
    ours = task.model.state_dict()
    assert list(ours) == list(unet.state_dict())
    assert all(torch.equal(ours[k], v) for k, v in unet.state_dict().items())
    assert isinstance(task.criterion, torch.nn.CrossEntropyLoss)
    assert task.criterion.ignore_index == 0


def test_test_and_predict_take_whole_tiles_of_any_size() -> None:
    """Tiles whose sides are no multiple of 2 ** encoder_depth are padded and cropped back:
    trainer.test logs the scores evaluate_model gives, under this project's names."""
    import lightning as L

    from synthsat.metrics.segmentation import evaluate_model

    torch.manual_seed(0)
    task = SegmentationTask(METADATA, **TINY)
    tiles = [
        {"image": torch.randn(1, 4, 45, 30), "mask": torch.randint(0, 3, (1, 45, 30))},
        {"image": torch.randn(1, 4, 17, 40), "mask": torch.randint(0, 3, (1, 17, 40))},
    ]
    trainer = L.Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(tiles, batch_size=None)
    (logged,) = trainer.test(task, dataloaders=loader, verbose=False)
    expected = evaluate_model(task, tiles, 3, [1, 2], 0, METADATA["classes"])
    assert task.test_results["confusion_matrix"] == expected["confusion_matrix"]
    labelled = sum(int((t["mask"] > 0).sum()) for t in tiles)  # every labelled pixel, once
    assert sum(map(sum, expected["confusion_matrix"])) == labelled
    assert logged["test/miou"] == pytest.approx(expected["miou"])
    assert logged["test/iou_water"] == pytest.approx(expected["iou"]["water"])
    assert logged["test/acc"] == pytest.approx(expected["pixel_accuracy"])
    first = torch.utils.data.DataLoader(tiles[:1], batch_size=None)
    (probs,) = trainer.predict(task, dataloaders=first)
    assert probs.shape == (1, 3, 45, 30)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 45, 30))
    task.eval()  # as the trainer ran it
    with torch.no_grad():
        torch.testing.assert_close(probs, task.predict_logits(tiles[0]["image"]).softmax(1))


TINY_PARAMS = 769_019  # 4 bands, 3 classes, resnet18 at depth 3, decoder [32, 16, 8]
TINY_UNUSED_PARAMS = 10_493_440  # resnet18's layer3 and layer4


def _unet(keep: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_unet(4, 3, "resnet18", None, 3, [32, 16, 8], keep_unused_stages=keep).eval()


def test_tiny_unet_holds_only_the_stages_it_runs() -> None:
    full, tiny = _unet(keep=True), _unet(keep=False)
    keys = list(tiny.state_dict())
    assert not [k for k in keys if k.startswith(("encoder.layer3.", "encoder.layer4."))]
    assert any(k.startswith("encoder.layer2.") for k in keys)
    assert sum(p.numel() for p in tiny.parameters()) == TINY_PARAMS
    assert sum(p.numel() for p in full.parameters()) == TINY_PARAMS + TINY_UNUSED_PARAMS
    # same initialisation (smp builds the whole ResNet first) and the same forward
    full_state = full.state_dict()
    assert all(torch.equal(v, full_state[k]) for k, v in tiny.state_dict().items())
    x = torch.randn(2, 4, 64, 48)
    with torch.no_grad():
        assert torch.equal(tiny(x), full(x))
    # depth 4 drops layer4 only, depth 5 nothing
    four = build_unet(4, 3, encoder_depth=4)
    assert not [k for k in four.state_dict() if k.startswith("encoder.layer4.")]
    assert any(k.startswith("encoder.layer3.") for k in four.state_dict())
    assert any(k.startswith("encoder.layer4.") for k in build_unet(4, 3).state_dict())
    task = SegmentationTask(METADATA, **TINY)
    assert task.unused_stages == ("model.encoder.layer3", "model.encoder.layer4")
    assert sum(p.numel() for p in task.parameters()) == TINY_PARAMS


def test_checkpoints_with_the_unused_stages_still_load(tmp_path: Path) -> None:
    """A checkpoint from before the unused stages were dropped: its weights load strictly and
    its optimiser state (for a resumed run) fits the trimmed network."""
    import lightning as L

    old = SegmentationTask(METADATA, **TINY)
    old.model = _unet(keep=True).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(old.parameters(), lr=1e-3)
    old.train()
    old(torch.randn(2, 4, 32, 32)).sum().backward()
    optimizer.step()
    trainer = L.Trainer(
        max_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.strategy.connect(old)
    path = tmp_path / "old.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    assert any(k.startswith("model.encoder.layer4.") for k in ckpt["state_dict"])

    loaded = SegmentationTask.load_from_checkpoint(path)  # strict
    assert "model.encoder.layer3.0.conv1.weight" not in loaded.state_dict()
    image = torch.randn(4, 40, 24)
    old.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded.predict_logits(image), old.predict_logits(image))

    # resuming: the optimiser state loses the unused stages' entries, the rest fits
    ckpt["optimizer_states"] = [optimizer.state_dict()]
    fresh = SegmentationTask(METADATA, **TINY)
    fresh.on_load_checkpoint(ckpt)
    fresh.load_state_dict(ckpt["state_dict"])
    new_optimizer = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    new_optimizer.load_state_dict(ckpt["optimizer_states"][0])
    old_params = dict(old.named_parameters())
    for name, param in fresh.named_parameters():
        assert torch.equal(
            new_optimizer.state[param]["exp_avg"], optimizer.state[old_params[name]]["exp_avg"]
        )
