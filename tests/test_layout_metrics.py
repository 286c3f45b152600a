"""Known answers of the layout metrics (synthsat.metrics.layout): a mask set against
itself, a shuffled copy of it and a constant mask, worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from synthsat.metrics.layout import (
    adjacency,
    class_shares,
    compare_layouts,
    nearest_distances,
    patch_sizes,
    road_connectivity,
)

CLASSES = ["a", "b", "c"]
#: 0 0 1 1 / 0 0 1 1 / 2 2 2 2 / 2 2 2 2, and a mask of 1s: 4 + 20 + 8 of 32 pixels.
M1 = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]], np.uint8)
M2 = np.ones((4, 4), np.uint8)
TRAINING = [M1, M2]
CONSTANT = [np.zeros((4, 4), np.uint8)]


def test_shares_and_total_variation_of_a_constant_mask() -> None:
    np.testing.assert_allclose(class_shares(TRAINING, 3), [4 / 32, 20 / 32, 8 / 32])
    scores = compare_layouts(CONSTANT, TRAINING, CLASSES)
    assert scores["share_tv"] == pytest.approx(1 - 4 / 32)  # 0.5 (7/8 + 5/8 + 1/4)
    assert scores["shares"]["a"] == {"generated": 1.0, "training": 0.125}


def test_adjacency_by_hand() -> None:
    # M1's 24 neighbour pairs: aa 4, bb 4, cc 10, ab 2, ac 2, bc 2; M2's: bb 24 (48 in all).
    expected = np.array([[4, 1, 1], [1, 28, 1], [1, 1, 10]]) / 48
    np.testing.assert_allclose(adjacency(TRAINING, 3), expected)
    np.testing.assert_allclose(adjacency(CONSTANT, 3), [[1, 0, 0], [0, 0, 0], [0, 0, 0]])
    scores = compare_layouts(CONSTANT, TRAINING, CLASSES)
    assert scores["adjacency_tv"] == pytest.approx(44 / 48)  # 0.5 (44/48 + 28/48 + 16/48)


def test_ignored_pixels_are_left_out() -> None:
    mask = np.array([[0, 0, 9], [1, 1, 9]], np.uint8)  # 9: the ignore index, 3 classes
    np.testing.assert_allclose(class_shares([mask], 3, 9), [0.5, 0.5, 0])
    # pairs without a 9: (0,0), (1,1) across; (0,1) twice down: aa 1, bb 1, ab 2 of 4
    np.testing.assert_allclose(adjacency([mask], 3, 9), [[0.25, 0.25, 0], [0.25, 0.25, 0], [0] * 3])


def test_patch_sizes_by_hand() -> None:
    sizes = patch_sizes(TRAINING, 3)
    assert sizes[0] == {"count": 1.0, "mean": 4.0, "median": 4.0}
    assert sizes[1] == {"count": 2.0, "mean": 10.0, "median": 10.0}  # 4 and 16
    assert sizes[2] == {"count": 1.0, "mean": 8.0, "median": 8.0}
    diagonal = np.array([[1, 0], [0, 1]], np.uint8)  # 4-connectivity: two patches of 1
    assert patch_sizes([diagonal], 2)[1]["count"] == 2.0


def test_road_connectivity_by_hand() -> None:
    road = np.array([[2, 2, 2, 0], [0, 0, 0, 0], [0, 0, 0, 2]], np.uint8)  # 3 px and 1 px
    scores = road_connectivity([road, np.zeros((3, 4), np.uint8)], [2])
    assert scores["largest_fraction"] == pytest.approx(0.75)
    assert scores["components_per_mpx"] == pytest.approx(2 / 24 * 1e6)
    assert scores["masks_with_roads"] == 1.0
    assert np.isnan(road_connectivity([np.zeros((2, 2), np.uint8)], [2])["largest_fraction"])


def test_a_set_against_itself_and_a_reordered_copy() -> None:
    for other in (TRAINING, TRAINING[::-1]):
        scores = compare_layouts(other, TRAINING, CLASSES, roads=[2])
        assert scores["share_tv"] == 0.0 and scores["adjacency_tv"] == 0.0
        assert scores["nearest"]["distances"] == [0.0, 0.0]
        assert scores["nearest"]["copied"] == [0, 1] and scores["nearest"]["copied_fraction"] == 1
        assert scores["roads"]["generated"] == scores["roads"]["training"]


def test_a_turned_flipped_crop_is_a_copy_and_one_pixel_off_is_not() -> None:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 3, (16, 16)).astype(np.uint8)
    crop = np.rot90(train[3:11, 5:13], 1)[:, ::-1].copy()
    assert nearest_distances([crop], [train])[0] == 0.0
    crop[0, 0] = (crop[0, 0] + 1) % 3
    assert nearest_distances([crop], [train])[0] == pytest.approx(1 / 64)
    scores = compare_layouts([crop], [train], CLASSES, copy_threshold=0.01)
    assert scores["nearest"]["copied"] == []
    assert compare_layouts([crop], [train], CLASSES, copy_threshold=0.02)["nearest"]["copied"] == [
        0
    ]


def test_constant_mask_nearest_distance() -> None:
    # the best 4x4 window of either training mask holds 4 pixels of class a (M1's block)
    assert nearest_distances(CONSTANT, TRAINING)[0] == pytest.approx(12 / 16)
    assert nearest_distances([np.ones((4, 4), np.uint8)], TRAINING)[0] == 0.0  # M2 itself
    assert np.isnan(nearest_distances([np.zeros((5, 5), np.uint8)], TRAINING)[0])  # too big


def test_a_pixel_shuffled_copy_keeps_shares_only() -> None:
    halves = np.zeros((32, 32), np.uint8)
    halves[:, 16:] = 1
    rng = np.random.default_rng(1)
    shuffled = rng.permutation(halves.ravel()).reshape(32, 32)
    scores = compare_layouts([shuffled], [halves], CLASSES[:2])
    assert scores["share_tv"] == 0.0
    # halves: 1984 neighbour pairs, 32 of them a-b; shuffled: p_a p_b = 1/4 each way
    assert adjacency([halves], 2)[0, 1] == pytest.approx(32 / 1984 / 2)
    assert adjacency([shuffled], 2)[0, 1] == pytest.approx(0.25, abs=0.03)  # p_a p_b
    assert scores["adjacency_tv"] > 0.4
    assert scores["patch_size"]["a"]["generated"]["mean"] < 0.1 * 512
    assert scores["nearest"]["distances"][0] > 0.3 and scores["nearest"]["copied"] == []


def _brute_nearest(mask: np.ndarray, training: list[np.ndarray]) -> float:
    """The nearest-neighbour distance by looping over every flip, mask and offset."""
    best = -1
    for index in range(8):
        turned = np.rot90(mask, index % 4)
        turned = turned[:, ::-1] if index >= 4 else turned
        h, w = turned.shape
        for t in training:
            for y in range(t.shape[0] - h + 1):
                for x in range(t.shape[1] - w + 1):
                    best = max(best, int((t[y : y + h, x : x + w] == turned).sum()))
    return float("nan") if best < 0 else 1 - best / mask.size


def test_the_fft_search_equals_a_loop_over_every_offset() -> None:
    """Training masks of different shapes share (or not) one padded FFT shape; no offset
    may wrap around the padding, and a mask that fits only some of them is compared with
    those alone."""
    rng = np.random.default_rng(3)
    training = [
        rng.integers(0, 4, shape).astype(np.uint8) for shape in [(9, 11), (10, 10), (7, 13), (5, 5)]
    ]
    masks = [rng.integers(0, 4, shape).astype(np.uint8) for shape in [(6, 6), (4, 7), (6, 9)]]
    masks.append(training[2][1:6, 3:10].copy())  # a crop of the 7 x 13 mask: distance 0
    got = nearest_distances(masks, training)
    want = [_brute_nearest(m, training) for m in masks]
    np.testing.assert_allclose(got, want)
    assert got[-1] == 0.0 and len({round(g, 6) for g in got}) == 4
