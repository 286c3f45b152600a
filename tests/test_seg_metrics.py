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


def test_bad_confusion_matrices_and_class_lists_are_named() -> None:
    with pytest.raises(ValueError, match=r"must be square, got shape \(2, 3\)"):
        scores_from_confusion(torch.zeros(2, 3), [0])
    with pytest.raises(ValueError, match=r"scored classes \[3, -1\] outside 0..2"):
        scores_from_confusion(torch.eye(3), [0, 3, -1])
    with pytest.raises(ValueError, match="2 class names for a 3-class confusion matrix"):
        scores_from_confusion(torch.eye(3), [0], ["a", "b"])


def test_nothing_scored_gives_nan_not_zero() -> None:
    cm = torch.tensor([[0, 0], [0, 4]])
    result = scores_from_confusion(cm, [0])
    assert math.isnan(result["miou"]) and math.isnan(result["pixel_accuracy"])
    assert result["iou"] == {"0": pytest.approx(float("nan"), nan_ok=True), "1": 1.0}
    assert result["scored_pixels"] == 0
    # a scored class only predicted, never labelled: IoU 0, and it lowers the mean
    cm = torch.tensor([[0, 0], [2, 2]])
    result = scores_from_confusion(cm, [0, 1])
    assert result["iou"]["0"] == 0.0 and result["iou"]["1"] == 0.5
    assert result["miou"] == 0.25 and result["pixel_accuracy"] == 0.5
    assert result["confusion_matrix"] == [[0, 0], [2, 2]]
    assert all(type(v) is int for row in result["confusion_matrix"] for v in row)


def test_evaluate_model_prefers_predict_logits_and_restores_the_mode() -> None:
    class Task(_FixedModel):
        """``predict_logits`` says class 2 everywhere; ``forward`` is not to be used."""

        def predict_logits(self, image: torch.Tensor) -> torch.Tensor:
            assert not self.training
            out = torch.zeros(image.shape[0], 3, *image.shape[2:])
            out[:, 2] = 1.0
            return out

    preds, target = _example()
    task = Task().train()
    result = evaluate_model(
        task, [{"image": preds[:, None].float(), "mask": target}], 3, [0, 1, 2], IGNORE
    )
    assert result["confusion_matrix"] == [[0, 0, 3], [0, 0, 4], [0, 0, 3]]
    assert task.training  # put back as it was
    frozen = _FixedModel().eval()
    evaluate_model(frozen, [{"image": preds[:, None].float(), "mask": target}], 3, [0], IGNORE)
    assert not frozen.training
    with pytest.raises(ValueError, match="model gives 3 class logits, data has 4 classes"):
        evaluate_model(
            _FixedModel(), [{"image": preds[:, None].float(), "mask": target}], 4, [0], IGNORE
        )


def test_scores_reset_and_accumulate() -> None:
    preds, target = _example()
    scores = SegmentationScores(3, [0, 1, 2], IGNORE, ["a", "b", "c"])
    scores.update(preds, target)
    scores.update(preds, target)
    assert scores.compute()["scored_pixels"] == 20
    scores.reset()
    scores.update(preds, target)
    assert scores.compute()["confusion_matrix"] == [[2, 1, 0], [0, 3, 1], [1, 0, 2]]
    assert set(scores.compute()["iou"]) == {"a", "b", "c"}


def test_json_safe_metrics_nest(tmp_path: Path) -> None:
    nan = float("nan")
    metrics = {"iou": {1: nan, "b": 0.5}, "t": (nan, 1), "n": 3, "s": "x"}
    path = write_metrics(tmp_path / "a" / "b" / "metrics.json", metrics)
    assert json.loads(path.read_text()) == {
        "iou": {"1": None, "b": 0.5},
        "t": [None, 1],
        "n": 3,
        "s": "x",
    }
    assert path.read_text().startswith('{\n  "iou"')  # indented for people


def test_no_scored_classes_gives_nan() -> None:
    result = scores_from_confusion(torch.eye(3), [])
    assert math.isnan(result["miou"]) and math.isnan(result["pixel_accuracy"])
    assert result["iou"] == {"0": 1.0, "1": 1.0, "2": 1.0}


def _pixels_of(confmat: list[list[int]], ignored: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions and labels whose confusion matrix is ``confmat`` (rows = truth), plus
    ``ignored`` pixels labelled with the ignore index 0, predicted as class 1."""
    pairs = [(t, p) for t, row in enumerate(confmat) for p, n in enumerate(row) for _ in range(n)]
    pairs += [(0, 1)] * ignored
    target, preds = torch.tensor(pairs).T
    return preds, target


#: 4 classes: 0 no-data (the ignore index, so its row is empty; predicting it is an error),
#: 1 and 2 scored, 3 trained on but not scored (Dubai's 'unlabeled').
CONFMAT = [[0, 0, 0, 0], [2, 7, 3, 1], [0, 4, 9, 0], [1, 0, 2, 5]]


def test_iou_is_torchmetrics_jaccard_index_in_float64() -> None:
    """Per-class IoU equals torchmetrics' ``MulticlassJaccardIndex(average="none")`` on the
    same pixels, to float32: torchmetrics reduces its confusion matrix in float32, the
    scores keep float64 (the same numbers as before, exact for large pixel counts)."""
    from torchmetrics.classification import MulticlassJaccardIndex

    preds, target = _pixels_of(CONFMAT, ignored=6)
    scores = SegmentationScores(4, [1, 2], 0)
    scores.update(preds, target)
    result = scores.compute()
    assert result["confusion_matrix"] == CONFMAT  # the ignored pixels count nowhere
    # by hand: TP / (row + column - TP); class 0 is never true, predicted 3 times
    by_hand = [0 / 3, 7 / (13 + 11 - 7), 9 / (13 + 14 - 9), 5 / (8 + 6 - 5)]
    assert [result["iou"][str(c)] for c in range(4)] == by_hand
    jaccard = MulticlassJaccardIndex(4, average="none", ignore_index=0)
    per_class = jaccard(preds, target)
    assert per_class.dtype == torch.float32
    torch.testing.assert_close(per_class, torch.tensor(by_hand, dtype=torch.float32))
    assert result["miou"] == (by_hand[1] + by_hand[2]) / 2
    # torchmetrics' macro mean averages every class but the ignore index: it cannot leave
    # out an unscored class, so the mIoU over the scored classes stays the scores' own
    macro = MulticlassJaccardIndex(4, average="macro", ignore_index=0)(preds, target)
    assert float(macro) == pytest.approx(sum(by_hand[1:]) / 3)
    assert float(macro) - result["miou"] == pytest.approx((by_hand[3] - result["miou"]) / 3)
    # with every class but the ignore index scored, the two means agree
    everything = scores_from_confusion(torch.tensor(CONFMAT), [1, 2, 3])
    assert everything["miou"] == pytest.approx(float(macro), rel=1e-6)
