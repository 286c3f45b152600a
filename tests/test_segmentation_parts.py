"""The parts of :mod:`synthsat.tasks.segmentation` that decide, pinned by value without a
training: a torchgeo datamodule's metadata, the argument checks, the loss each name
builds, the encoder weights a file or a name gives, and the cosine schedule's factors."""

from __future__ import annotations

import enum
import math
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from synthsat.tasks.segmentation import SegmentationTask
from synthsat.tasks.segmentation_setup import (
    _classes_of,
    _plain_weights,
    build_loss,
    datamodule_metadata,
    encoder_state,
    pretrained,
    task_arguments,
)

META = {
    "classes": ["no-data", "water", "land"],
    "bands": 4,
    "ignore_index": 0,
    "scored_classes": [1, 2],
    "mean": [0.0] * 4,
    "std": [1.0] * 4,
}
TINY = {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}


class _Data(torch.utils.data.Dataset):
    """A torchgeo-style dataset of two 3-band samples."""

    def __init__(self, classes: Any = None, bands: Any = None) -> None:
        if classes is not None:
            self.classes = classes
        if bands is not None:
            self.bands = bands

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": torch.zeros(3, 8, 8), "mask": torch.zeros(8, 8, dtype=torch.long)}


def test_a_torchgeo_datamodules_metadata() -> None:
    dm = SimpleNamespace(mean=torch.tensor(5.0), std=[1.0, 2.0, 3.0], val_dataset=_Data())
    dm.train_dataset = _Data(classes={2: "roof", 0: "bg", 1: "road"}, bands=("r", "g", "b"))
    assert datamodule_metadata(dm, None, None, 0) == {
        "classes": ["bg", "road", "roof"],  # a mapping: by its keys
        "bands": 3,  # of the first sample
        "band_names": ["r", "g", "b"],
        "rgb_bands": [0, 1, 2],
        "ignore_index": 0,
        "scored_classes": [1, 2],
        "mean": [5.0, 5.0, 5.0],  # one value: every band's
        "std": [1.0, 2.0, 3.0],
        "scale": 1.0,
    }
    bare = SimpleNamespace(mean=[1.0, 2.0], std=[1.0, 1.0], dataset=_Data(bands=("x",)))
    meta = datamodule_metadata(bare, 4, 2, None)
    assert meta["classes"] == ["0", "1", "2", "3"]  # declared by no dataset
    assert meta["band_names"] == ["band1", "band2"]  # the dataset's do not fit 2 bands
    assert meta["rgb_bands"] == [0, 1] and meta["scored_classes"] == [0, 1, 2, 3]


def test_a_torchgeo_datamodules_metadata_refusals() -> None:
    dm = SimpleNamespace(mean=[1.0], std=[1.0], train_dataset=_Data(classes=["a", "b"]))
    with pytest.raises(ValueError, match=r"num_classes=3\), but the dataset of .* 2 classes"):
        datamodule_metadata(dm, 3, None, None)
    with pytest.raises(ValueError, match="declares no classes; pass num_classes="):
        datamodule_metadata(SimpleNamespace(mean=[1.0], std=[1.0], dataset=_Data()), None, 3, None)
    with pytest.raises(ValueError, match="has no dataset; pass in_channels="):
        datamodule_metadata(SimpleNamespace(mean=[1.0], std=[1.0]), 2, None, None)
    wrong = SimpleNamespace(mean=[1.0, 2.0], std=[1.0], dataset=_Data())
    with pytest.raises(ValueError, match="the datamodule's mean has 2 values for 3 bands"):
        datamodule_metadata(wrong, 2, None, None)


def test_classes_are_found_through_wrappers() -> None:
    inner = _Data(classes=("a", "b"))
    assert _classes_of(SimpleNamespace(dataset=SimpleNamespace(dataset=inner))) == ["a", "b"]
    assert _classes_of(SimpleNamespace(dataset=_Data())) is None
    assert _classes_of(None) is None


class _Weights(enum.Enum):
    SENTINEL = 1


def test_weights_as_plain_values_and_what_they_load(tmp_path: Path) -> None:
    assert _plain_weights(None) is None and _plain_weights(True) is True
    assert _plain_weights(_Weights.SENTINEL) == "_Weights.SENTINEL"
    assert _plain_weights(Path("/w.pt")) == "/w.pt"
    assert pretrained(None, "resnet18") == (None, None)
    assert pretrained(False, "resnet18") == (None, None)
    assert pretrained(True, "resnet18") == ("imagenet", None)
    assert pretrained("imagenet", "resnet18") == ("imagenet", None)
    w = torch.ones(2)
    torch.save({"state_dict": {"model.encoder.conv1.weight": w, "model.head.x": w}}, tmp_path / "a")
    variant, state = pretrained(str(tmp_path / "a"), "resnet18")
    assert variant is None and list(state) == ["conv1.weight"]


@pytest.mark.parametrize(
    ("keys", "want"),
    [
        (["model.encoder.a", "model.decoder.b"], ["a"]),
        (["model.backbone.model.a", "model.head.b"], ["a"]),
        (["encoder.a", "decoder.b"], ["a"]),
        (["model.a", "other.b"], ["a"]),
        (["a", "b"], ["a", "b"]),
    ],
)
def test_the_encoder_weights_of_a_file(tmp_path: Path, keys: list[str], want: list[str]) -> None:
    torch.save({k: torch.zeros(1) for k in keys}, tmp_path / "w.pt")
    assert list(encoder_state(tmp_path / "w.pt")) == want
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not a state dict or a Lightning checkpoint"):
        encoder_state(tmp_path / "list.pt")


def test_the_loss_each_name_builds() -> None:
    ce = build_loss("ce", 3, None)
    assert isinstance(ce, torch.nn.CrossEntropyLoss) and ce.ignore_index == -100
    assert ce.weight is None
    weighted = build_loss("ce", 3, 1, [1.0, 2.0, 3.0])
    assert weighted.ignore_index == 1 and weighted.weight.dtype == torch.float32
    jaccard = build_loss("jaccard", 4, 2)
    assert (jaccard.classes.tolist(), jaccard.ignore_index, jaccard.from_logits) == (
        [0, 1, 3],
        2,
        True,
    )
    assert jaccard.mode == "multiclass"
    focal = build_loss("focal", 3, 0)
    assert (focal.mode, focal.ignore_index) == ("multiclass", 0)
    with pytest.raises(ValueError, match=r"class_weights needs 3 values, got \[1.0, 2.0\]"):
        build_loss("ce", 3, 0, [1.0, 2.0])
    with pytest.raises(ValueError, match="not loss=focal"):
        build_loss("focal", 3, 0, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="unknown segmentation loss 'dice'"):
        build_loss("dice", 3, 0)


def _args(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict(
        model="unet",
        backbone="resnet18",
        weights=None,
        in_channels=None,
        task="multiclass",
        num_classes=None,
        loss="ce",
        class_weights=None,
        ignore_index=None,
        patience=10,
        metadata=None,
        decoder_channels=None,
        scheduler="plateau",
        encoder_name=None,
        encoder_weights=None,
        lr_patience=None,
    )
    return task_arguments(**{**base, **kw})


def test_the_arguments_as_the_task_saves_them() -> None:
    args = _args(metadata=META, class_weights=torch.tensor([1.0, 2.0, 3.0]), weights=True)
    assert (args["in_channels"], args["num_classes"], args["ignore_index"]) == (4, 3, 0)
    assert args["class_weights"] == [1.0, 2.0, 3.0] and args["weights"] is True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = _args(encoder_name="resnet34", encoder_weights="imagenet", lr_patience=3)
    assert (old["backbone"], old["weights"], old["patience"]) == ("resnet34", "imagenet", 3)
    assert len(caught) == 3 and all(w.category is FutureWarning for w in caught)
    assert "use torchgeo's name backbone=" in str(caught[0].message)
    with pytest.warns(FutureWarning, match=r"SegmentationTask\(metadata, ...\) is deprecated"):
        positional = _args(model=META)
    assert (positional["model"], positional["metadata"]) == ("unet", META)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"task": "binary"}, "SegmentationTask is multiclass: task='binary'"),
        ({"scheduler": "step"}, "unknown scheduler 'step'"),
        ({"loss": "dice"}, "unknown segmentation loss 'dice'"),
        ({"metadata": {"classes": ["a"]}}, r"metadata lacks \['bands', 'ignore_index'"),
        ({"metadata": META, "in_channels": 3}, r"in_channels=3\), but the data has"),
        ({"metadata": META, "ignore_index": 2}, r"ignore_index=2\), but the data has"),
    ],
)
def test_arguments_the_task_refuses(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _args(**kw)


def test_the_cosine_schedule_factors() -> None:
    task = SegmentationTask(
        metadata=META, scheduler="cosine", warmup_steps=2, lr=1e-2, min_lr=1e-3, **TINY
    )
    task._trainer = SimpleNamespace(max_steps=10)  # type: ignore[assignment]
    opt = task.configure_optimizers()
    assert opt["lr_scheduler"]["interval"] == "step"
    factor = opt["lr_scheduler"]["scheduler"].lr_lambdas[0]
    assert factor(0) == 0.5 and factor(1) == 1.0  # the warm-up
    assert factor(2) == pytest.approx(1.0)
    assert factor(6) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert factor(10) == pytest.approx(0.1) and factor(20) == pytest.approx(0.1)
    task._trainer = SimpleNamespace(max_steps=-1)  # type: ignore[assignment]
    with pytest.raises(ValueError, match="needs trainer.max_steps > 0"):
        task.configure_optimizers()


def test_the_plateau_schedule_settings() -> None:
    task = SegmentationTask(
        metadata=META, patience=4, lr_factor=0.5, min_lr=1e-5, monitor="val/miou", **TINY
    )
    opt = task.configure_optimizers()
    plateau = opt["lr_scheduler"]["scheduler"]
    assert (plateau.patience, plateau.factor, plateau.min_lrs, plateau.mode) == (
        4,
        0.5,
        [1e-5],
        "min",
    )
    assert opt["lr_scheduler"]["monitor"] == "val/miou"
    assert (opt["lr_scheduler"]["interval"], opt["lr_scheduler"]["strict"]) == ("epoch", False)
