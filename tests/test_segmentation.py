"""SegmentationTask, U-Net builder and losses: shapes, ignore index, weights, checkpoints."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import huggingface_hub.constants as hf_constants
import pytest
import torch
from conftest import save_task as _save_task

from synthsat.models.segmentation import EncoderWeightsError, build_unet
from synthsat.tasks.segmentation import SegmentationTask
from synthsat.tasks.segmentation_setup import DEPRECATED, LOSSES, build_loss, datamodule_metadata

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
    task = SegmentationTask(metadata=metadata, loss=loss, **TINY)
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
        SegmentationTask(metadata=METADATA, loss="dice", **TINY)


def test_task_step_predict_and_checkpoint(tmp_path: Path) -> None:
    task = SegmentationTask(metadata=METADATA, loss="jaccard", **TINY)
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

    path = _save_task(task, tmp_path / "task.ckpt")
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
        SegmentationTask(metadata={"classes": ["a", "b"]}, **TINY)


def test_task_is_torchgeos_with_this_projects_settings() -> None:
    """A torchgeo SemanticSegmentationTask whose hyperparameters are exactly this task's
    settings (checkpoints load with its signature) and whose hooks build the same U-Net
    as build_unet from the same seed (the numbers of the task before torchgeo)."""
    import inspect

    from torchgeo.trainers import SemanticSegmentationTask

    torch.manual_seed(0)
    task = SegmentationTask(metadata=METADATA, **TINY)
    assert isinstance(task, SemanticSegmentationTask)
    names = set(inspect.signature(SegmentationTask).parameters) - set(DEPRECATED)
    assert set(task.hparams) == names
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
    task = SegmentationTask(metadata=METADATA, **TINY)
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
    task = SegmentationTask(metadata=METADATA, **TINY)
    assert task.unused_stages == ("model.encoder.layer3", "model.encoder.layer4")
    assert sum(p.numel() for p in task.parameters()) == TINY_PARAMS


def test_checkpoints_with_the_unused_stages_still_load(tmp_path: Path) -> None:
    """A checkpoint from before the unused stages were dropped: its weights load strictly and
    its optimiser state (for a resumed run) fits the trimmed network."""

    old = SegmentationTask(metadata=METADATA, **TINY)
    old.model = _unet(keep=True).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(old.parameters(), lr=1e-3)
    old.train()
    old(torch.randn(2, 4, 32, 32)).sum().backward()
    optimizer.step()
    path = _save_task(old, tmp_path / "old.ckpt")
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
    fresh = SegmentationTask(metadata=METADATA, **TINY)
    fresh.on_load_checkpoint(ckpt)
    fresh.load_state_dict(ckpt["state_dict"])
    new_optimizer = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    new_optimizer.load_state_dict(ckpt["optimizer_states"][0])
    old_params = dict(old.named_parameters())
    for name, param in fresh.named_parameters():
        assert torch.equal(
            new_optimizer.state[param]["exp_avg"], optimizer.state[old_params[name]]["exp_avg"]
        )


# -- torchgeo's arguments and datamodules --------------------------------------------------
def _fingerprint(task_or_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    model = getattr(task_or_model, "model", task_or_model)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("preset", ["tiny", "cpu", "paper"])
def test_presets_in_torchgeos_names_build_what_the_old_names_built(preset: str) -> None:
    """conf/segmentation/<preset>.yaml (torchgeo's names) gives the network, initial weights,
    loss and optimiser / scheduler of the construction before them: build_unet and
    build_loss from the same seed, and the old argument names (deprecated aliases)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from synthsat.schemas import register

    register()
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("train_segmentation", [f"segmentation={preset}"]).segmentation
    assert not set(DEPRECATED) & set(cfg)  # the presets use torchgeo's names
    torch.manual_seed(0)
    task = instantiate(cfg, metadata=METADATA, _convert_="all")
    old_kwargs = {
        "encoder_name": cfg.backbone,
        "encoder_weights": cfg.weights,
        "lr_patience": cfg.patience,
        **{
            k: v for k, v in cfg.items() if k not in ("_target_", "backbone", "weights", "patience")
        },
    }
    old_kwargs = {k: v for k, v in old_kwargs.items() if k not in ("model", "class_weights")}
    old_kwargs.pop("ignore_index", None)
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        aliased = SegmentationTask(metadata=METADATA, **old_kwargs)
    said = sorted(str(w.message).split("=")[0] for w in caught if w.category is FutureWarning)
    # encoder_weights: null, the default, says nothing
    assert said == ["SegmentationTask(encoder_name", "SegmentationTask(lr_patience"]
    torch.manual_seed(0)
    unet = build_unet(4, 3, cfg.backbone, None, cfg.encoder_depth, cfg.decoder_channels)
    expected = _fingerprint(unet)
    for built in (task, aliased):
        got = _fingerprint(built)
        assert list(got) == list(expected)
        assert all(torch.equal(got[k], v) for k, v in expected.items())
    g = torch.Generator().manual_seed(1)
    image, mask = (
        torch.randn(2, 4, 64, 64, generator=g),
        torch.randint(0, 3, (2, 64, 64), generator=g),
    )
    unet.eval()
    if cfg.channels_last:  # as the task runs it
        unet = unet.to(memory_format=torch.channels_last)
        image = image.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        want = build_loss(cfg.loss, 3, 0)(unet(image), mask)
    for built in (task, aliased):
        built.eval()
        with torch.no_grad():
            assert torch.equal(built.criterion(built(image), mask), want)
        opt = built.configure_optimizers()
        assert type(opt["optimizer"]) is torch.optim.Adam
        assert opt["optimizer"].defaults["lr"] == cfg.lr
        assert opt["optimizer"].defaults["weight_decay"] == cfg.weight_decay
        plateau = opt["lr_scheduler"]["scheduler"]
        assert (plateau.patience, plateau.factor) == (cfg.patience, cfg.lr_factor)
        assert plateau.min_lrs == [cfg.min_lr]
    assert task.hparams.backbone == aliased.hparams.backbone == cfg.backbone
    assert task.hparams.patience == aliased.hparams.patience == cfg.patience


def test_torchgeo_arguments_weights_and_class_weights(tmp_path: Path) -> None:
    """torchgeo's call works as it does there; weights from a file (a state dict or a
    checkpoint of this task), class-weighted cross-entropy, clear refusals."""
    torch.manual_seed(1)
    donor = SegmentationTask(metadata=METADATA, **TINY)
    torch.save(donor.model.encoder.state_dict(), tmp_path / "encoder.pt")
    torch.manual_seed(2)
    task = SegmentationTask(
        model="unet",
        backbone="resnet18",
        weights=str(tmp_path / "encoder.pt"),
        in_channels=4,
        num_classes=3,
        loss="ce",
        class_weights=[0.0, 1.0, 3.0],
        ignore_index=0,
        lr=1e-3,
        patience=5,
        freeze_backbone=True,
        **TINY,
    )
    ours, theirs = task.model.encoder.state_dict(), donor.model.encoder.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in theirs.items())
    assert not any(p.requires_grad for p in task.model.encoder.parameters())
    assert task.criterion.weight.tolist() == [0.0, 1.0, 3.0]
    assert task.hparams.metadata is None and task.hparams.patience == 5
    with pytest.raises(ValueError, match="class_weights weigh the cross-entropy"):
        SegmentationTask(num_classes=3, in_channels=4, loss="jaccard", class_weights=[1, 1, 1])
    with pytest.raises(ValueError, match="expected 'unet'"):
        SegmentationTask(model="deeplabv3+")
    with pytest.raises(ValueError, match=r"num_classes=5\), but the data has num_classes 3"):
        SegmentationTask(metadata=METADATA, num_classes=5, **TINY)
    # a checkpoint of this task as weights: its encoder
    import lightning as L

    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(donor)
    trainer.save_checkpoint(tmp_path / "donor.ckpt")
    torch.manual_seed(3)
    again = SegmentationTask(weights=str(tmp_path / "donor.ckpt"), metadata=METADATA, **TINY)
    ours = again.model.encoder.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in theirs.items())
    with pytest.warns(FutureWarning, match=r"SegmentationTask\(metadata=...\)"):
        SegmentationTask(METADATA, **TINY)  # the old positional metadata


class _Chips(torch.utils.data.Dataset):
    """A torchgeo-style NonGeoDataset: ``{"image", "mask"}`` samples from .pt files."""

    classes = ("background", "road", "roof")
    bands = ("red", "green", "blue")

    def __init__(self, root: str, split: str = "train") -> None:
        self.files = sorted(Path(root, split).glob("*.pt"))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return torch.load(self.files[index], weights_only=True)


def test_trains_with_torchgeos_own_datamodule_and_no_metadata(tmp_path: Path) -> None:
    """Issue 28 row 1: a torchgeo NonGeoDataModule built as torchgeo documents it; the task
    takes classes, bands and normalisation from it (normalised once, by the datamodule)."""
    import lightning as L
    from torchgeo.datamodules import NonGeoDataModule
    from torchgeo.datasets import NonGeoDataset

    class Chips(_Chips, NonGeoDataset):
        pass

    mean, std = torch.tensor([100.0, 110.0, 120.0]), torch.tensor([20.0, 30.0, 40.0])
    chip_mean, chip_std = mean, std
    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        for i in range(4):
            image = mean[:, None, None] + std[:, None, None] * torch.randn(3, 32, 32, generator=g)
            mask = torch.randint(0, 3, (32, 32), generator=g)
            torch.save({"image": image, "mask": mask}, tmp_path / split / f"{i}.pt")

    class ChipsDataModule(NonGeoDataModule):
        mean, std = chip_mean, chip_std  # normalised by the datamodule's own aug

        def __init__(self, batch_size: int = 2, num_workers: int = 0, **kwargs: Any) -> None:
            super().__init__(Chips, batch_size, num_workers, **kwargs)

    datamodule = ChipsDataModule(root=str(tmp_path))
    torch.manual_seed(0)
    task = SegmentationTask(
        model="unet", backbone="resnet18", weights=None, num_classes=3, in_channels=3, loss="ce",
        **TINY,
    )  # fmt: skip
    before = _fingerprint(task)
    seen: list[torch.Tensor] = []
    task.model.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    trainer = L.Trainer(
        max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1,
        val_check_interval=2, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(task, datamodule=datamodule)
    assert trainer.global_step == 2
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    after = _fingerprint(task)
    assert any(not torch.equal(after[k], v) for k, v in before.items())
    meta = task.hparams.metadata
    assert task.classes == meta["classes"] == ["background", "road", "roof"]
    assert meta["bands"] == 3 and meta["band_names"] == ["red", "green", "blue"]
    assert meta["mean"] == mean.tolist() and meta["std"] == std.tolist()
    assert meta["ignore_index"] is None and meta["scored_classes"] == [0, 1, 2]
    # normalised once: the network saw about zero-mean, unit-spread bands
    x = seen[0].float()
    assert x.mean().abs() < 0.3 and 0.7 < x.std() < 1.3
    assert "val/miou" in trainer.callback_metrics
    # the checkpoint holds the metadata read from the datamodule: it loads on its own
    path = tmp_path / "task.ckpt"
    trainer.save_checkpoint(path)
    loaded = SegmentationTask.load_from_checkpoint(path, weights_only=True)
    assert loaded.classes == meta["classes"] and loaded.scored_classes == [0, 1, 2]
    with torch.no_grad():
        assert torch.equal(loaded.eval().predict_logits(x), task.eval().predict_logits(x))


def test_metadata_from_this_projects_datamodule_and_refusals() -> None:
    class Project:
        def metadata(self) -> dict:
            return dict(METADATA)

    assert datamodule_metadata(Project(), None, None, None) == METADATA

    class Bare:
        pass

    with pytest.raises(ValueError, match="neither metadata\\(\\) nor torchgeo's mean / std"):
        datamodule_metadata(Bare(), 3, 3, None)
