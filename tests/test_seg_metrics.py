"""Segmentation scores: confusion matrix, IoU, pixel accuracy, ignore index, JSON output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from synthsat.metrics.segmentation import (
    SegmentationScores,
    evaluate_model,
    scores_from_confusion,
    write_metrics,
)

IGNORE = 255


def _example() -> tuple[torch.Tensor, torch.Tensor]:
    """3 classes + ignore; predictions (B=1, 2x6) against labels."""
    target = torch.tensor([[[0, 0, 1, 1, 2, IGNORE], [0, 1, 1, 2, 2, IGNORE]]])
    preds = torch.tensor([[[0, 1, 1, 1, 2, 0], [0, 1, 2, 2, 0, 2]]])
    return preds, target


def test_scores_equal_hand_computed_confusion_matrix() -> None:
    preds, target = _example()
    scores = SegmentationScores(3, [0, 1, 2], IGNORE, ["a", "b", "c"])
    scores.update(preds, target)
    result = scores.compute()
    # rows = truth, columns = prediction; the two ignored pixels count nowhere
    expected = [[2, 1, 0], [0, 3, 1], [1, 0, 2]]
    assert result["confusion_matrix"] == expected
    # IoU = TP / (row + column - TP)
    iou = {"a": 2 / (3 + 3 - 2), "b": 3 / (4 + 4 - 3), "c": 2 / (3 + 3 - 2)}
    for name, value in iou.items():
        assert result["iou"][name] == pytest.approx(value)
    assert result["miou"] == pytest.approx(sum(iou.values()) / 3)
    assert result["pixel_accuracy"] == pytest.approx(7 / 10)
    assert result["scored_pixels"] == 10


def test_ignore_index_inside_the_class_range() -> None:
    """Toy-world style: class 0 is no-data and ignored; predicting 0 elsewhere is an error."""
    target = torch.tensor([[0, 0, 1, 2]])
    preds = torch.tensor([[2, 1, 0, 2]])
    scores = SegmentationScores(3, [1, 2], 0)
    scores.update(preds, target)
    result = scores.compute()
    assert result["confusion_matrix"] == [[0, 0, 0], [1, 0, 0], [0, 0, 1]]
    assert result["iou"]["0"] == 0.0  # reported, but not a scored class
    assert result["iou"]["1"] == 0.0 and result["iou"]["2"] == 1.0
    assert result["miou"] == pytest.approx(0.5)
    assert result["pixel_accuracy"] == pytest.approx(0.5)


def test_unscored_class_is_left_out_of_miou_and_accuracy() -> None:
    """Dubai style: class 2 is trained but not scored."""
    target = torch.tensor([[0, 1, 2, 2]])
    preds = torch.tensor([[0, 2, 2, 0]])
    result = scores_from_confusion(
        SegmentationScores(3, [0, 1], 255).confmat(preds, target), [0, 1]
    )
    assert result["iou"]["0"] == pytest.approx(0.5) and result["iou"]["1"] == 0.0
    assert result["miou"] == pytest.approx(0.25)
    assert result["pixel_accuracy"] == pytest.approx(0.5)  # 1 of the 2 scored pixels


def test_logits_and_absent_classes() -> None:
    target = torch.tensor([[[1, 1]]])
    logits = torch.zeros(1, 3, 1, 2)
    logits[:, 1] = 5.0
    scores = SegmentationScores(3, [0, 1, 2], None)
    scores.update(logits, target)
    result = scores.compute()
    assert math.isnan(result["iou"]["0"]) and math.isnan(result["iou"]["2"])
    assert result["miou"] == 1.0  # absent classes (empty union) are left out


class _FixedModel(nn.Module):
    """Predicts the class stored in the first band of its input."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(image[:, 0].long(), 3).permute(0, 3, 1, 2).float()


def test_evaluate_model_matches_scores() -> None:
    preds, target = _example()
    batches = [{"image": preds[:, None].float(), "mask": target}] * 2
    result = evaluate_model(_FixedModel(), batches, 3, [0, 1, 2], IGNORE)
    assert result["confusion_matrix"] == [[4, 2, 0], [0, 6, 2], [2, 0, 4]]
    assert result["pixel_accuracy"] == pytest.approx(0.7)


def test_write_metrics_is_json_with_nan_as_null(tmp_path: Path) -> None:
    path = write_metrics(tmp_path / "m" / "metrics.json", {"miou": float("nan"), "x": [1.5]})
    assert json.loads(path.read_text()) == {"miou": None, "x": [1.5]}
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]
