"""The metric accumulators: fed in several updates, they equal the one-shot functions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from synthsat.data.datasets import Normalizer
from synthsat.metrics.accumulator import Accumulator, MatchedFeatures
from synthsat.metrics.consistency import SegmentationConsistency, consistency_miou
from synthsat.metrics.diversity import IntraMaskDiversity, ms_ssim_diversity, pairwise_l1
from synthsat.metrics.fidelity import FidKid, fid_kid, fid_kid_from_features
from synthsat.metrics.frechet import FrechetDistance, feature_frechet_distance
from synthsat.metrics.seams import SEAM_KEYS, SeamScores, nanmean, seam_scores, tile_seam_scores
from synthsat.metrics.segmenter import Segmenter, SegmenterMetrics
from synthsat.metrics.spectral import (
    SpectralDistance,
    class_pixel_positions,
    gather_pixels,
    spectral_distances,
    standardised_mean,
    wasserstein_per_band,
)


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_every_accumulator_follows_the_protocol() -> None:
    accumulators: list[Accumulator] = [
        SpectralDistance([np.zeros((2, 2), int)], [1]),
        SegmentationConsistency(2, [0, 1], None),
        FrechetDistance(),
        FidKid(nn.Identity()),
        IntraMaskDiversity(torch.zeros(1), torch.ones(1), torch.zeros(1), torch.ones(1)),
        SeamScores(),
    ]
    for accumulator in accumulators:
        assert callable(accumulator.update) and callable(accumulator.compute)


# -- matched feature sets ---------------------------------------------------------------
def test_matched_features_split_item_major_rows_by_sample() -> None:
    features = MatchedFeatures(samples=2)
    features.add(torch.tensor([[0.0], [1.0]]), torch.tensor([[10.0], [11.0], [20.0], [21.0]]))
    features.add(torch.tensor([[2.0]]), torch.tensor([[30.0], [31.0]]))
    assert features.count == 3
    real, synthetic = features.sets()
    assert real.flatten().tolist() == [0.0, 1.0, 2.0]
    assert [s.flatten().tolist() for s in synthetic] == [[10.0, 20.0, 30.0], [11.0, 21.0, 31.0]]
    with pytest.raises(ValueError, match="^3 synthetic feature rows for 1 real ones and 2"):
        features.add(torch.zeros(1, 1), torch.zeros(3, 1))
    one = MatchedFeatures()  # one sample each: the sets may differ in size
    one.add(torch.zeros(2, 3), torch.ones(5, 3))
    assert [s.shape for s in one.sets()[1]] == [(5, 3)]
    with pytest.raises(ValueError, match="^no features were added$"):
        MatchedFeatures().sets()
    with pytest.raises(ValueError, match="^samples must be positive, got 0$"):
        MatchedFeatures(0)


# -- spectral distance ------------------------------------------------------------------
def test_spectral_updates_per_tile_equal_the_pooled_distances() -> None:
    rng = np.random.default_rng(0)
    masks = [rng.integers(0, 3, (6, 5)) for _ in range(3)]
    real = [rng.normal(50, 10, (2, 6, 5)) for _ in masks]
    synthetic = [[im + rng.normal(0, 3, im.shape), im * 1.1] for im in real]
    distance = SpectralDistance(masks, [1, 2], max_pixels=20, seed=4)
    for t in (2, 0, 1):  # any order of tiles
        distance.update(t, real[t], synthetic[t])
    got = distance.compute()
    expected = spectral_distances(real, synthetic, masks, [1, 2], max_pixels=20, seed=4)
    assert sorted(got) == sorted(expected) == [1, 2]
    for c in got:
        np.testing.assert_array_equal(got[c], expected[c])
    # and by hand: W1 of the pooled values at the same positions
    positions = class_pixel_positions(masks, [1, 2], 20, 4)
    for c in (1, 2):
        pooled_real = np.concatenate([gather_pixels(im, p)[c] for im, p in zip(real, positions)], 1)
        pooled_synth = np.concatenate(
            [gather_pixels(s, p)[c] for ss, p in zip(synthetic, positions) for s in ss], 1
        )
        np.testing.assert_allclose(got[c], wasserstein_per_band(pooled_real, pooled_synth))


def test_standardised_mean_over_scored_classes_and_bands() -> None:
    distances = {1: np.array([2.0, 4.0]), 2: np.array([1.0, 1.0]), 3: np.array([9.0, 9.0])}
    std = np.array([2.0, 4.0], np.float32)
    assert standardised_mean(distances, std, [1, 2, 5]) == pytest.approx((1.0 + 0.375) / 2)
    assert standardised_mean(distances, std, [5]) is None


# -- segmentation consistency -----------------------------------------------------------
class BandLevels(nn.Module):
    """class = round(band 0)."""

    def forward(self, x: Tensor) -> Tensor:
        return -(x[:, :1] - torch.arange(3.0).view(1, -1, 1, 1)).abs()


def _labelled_images(n: int = 5) -> tuple[Tensor, Tensor]:
    masks = torch.randint(0, 3, (n, 6, 6), generator=_generator(1))
    images = masks[:, None].float().expand(-1, 2, -1, -1).clone()
    images[:, 0, :2] = 2.0
    return images, masks


def test_consistency_updates_equal_one_pass() -> None:
    images, masks = _labelled_images()
    scores = SegmentationConsistency(3, [1, 2], 0, ["n", "a", "b"])
    for batch in (slice(0, 2), slice(2, 3), slice(3, 5)):
        scores.update(BandLevels()(images[batch]), masks[batch].int())
    got = scores.compute()
    expected = consistency_miou(BandLevels(), images, masks, 3, [1, 2], 0, ["n", "a", "b"], 16)
    assert got["confusion_matrix"] == expected["confusion_matrix"]
    for key in ("miou", "pixel_accuracy", "scored_pixels"):
        assert got[key] == expected[key]
    assert [got["iou"][c] for c in "ab"] == [expected["iou"][c] for c in "ab"]
    assert 0 < got["miou"] < 1 and math.isnan(got["iou"]["n"])  # class 0 ignored
    with pytest.raises(ValueError, match="^model gives 3 class logits, data has 4 classes$"):
        SegmentationConsistency(4, [1], 0).update(BandLevels()(images), masks)


# -- Fréchet distance and FID / KID ------------------------------------------------------
def test_frechet_updates_equal_the_distance_of_the_concatenation() -> None:
    g = _generator(2)
    real, synthetic = torch.randn(9, 3, generator=g), torch.randn(11, 3, generator=g) + 0.5
    distance = FrechetDistance()
    distance.update(real[:4], synthetic[:7])
    distance.update(real[4:], synthetic[7:])
    assert distance.count == 9
    assert distance.compute() == feature_frechet_distance(real, synthetic)


def test_frechet_of_several_samples_is_the_mean_over_matched_sets() -> None:
    g = _generator(3)
    real = torch.randn(6, 2, generator=g)
    shifts = torch.tensor([[0.0, 0.0], [3.0, 0.0]])  # sample 0 = real, sample 1 = real + (3, 0)
    synthetic = (real[:, None] + shifts).reshape(12, 2)  # item-major
    distance = FrechetDistance(samples=2)
    distance.update(real[:2], synthetic[:4])
    distance.update(real[2:], synthetic[4:])
    sets = [feature_frechet_distance(real, synthetic[k::2]) for k in (0, 1)]
    assert distance.compute() == float(np.mean(sets))
    assert distance.compute() == pytest.approx(9 / 2, rel=1e-6)


class RowMeans(nn.Module):
    """Features: per-channel means, one image at a time (independent of the batch)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.double().mean(dim=(2, 3))


def test_fid_kid_updates_equal_one_pass_over_the_concatenation() -> None:
    g = _generator(4)
    real = torch.randint(0, 255, (10, 3, 4, 4), generator=g, dtype=torch.uint8)
    synthetic = torch.randint(20, 255, (8, 3, 4, 4), generator=g, dtype=torch.uint8)
    scores = FidKid(RowMeans(), batch_size=3, kid_subsets=4, kid_subset_size=5, seed=1)
    scores.update(real[:6], synthetic[:2])
    scores.update(real[6:], synthetic[2:])
    assert scores.count == 10
    expected = fid_kid(real, synthetic, RowMeans(), 3, 4, 5, 1)
    assert scores.compute() == expected
    assert expected["fid"] > 0


def test_fid_kid_of_several_samples_averages_the_matched_sets() -> None:
    g = _generator(5)
    real = torch.randint(0, 200, (6, 3, 4, 4), generator=g, dtype=torch.uint8)
    synthetic = torch.stack([real, real + 40], 1).flatten(0, 1)  # item-major
    scores = FidKid(RowMeans(), samples=2, kid_subsets=3, kid_subset_size=4)
    scores.update(real[:3], synthetic[:6])
    scores.update(real[3:], synthetic[6:])
    features = RowMeans()(real)
    per_set = [
        fid_kid_from_features(features, RowMeans()(synthetic[k::2]), 3, 4, 0) for k in (0, 1)
    ]
    got = scores.compute()
    assert got == {key: float(np.mean([s[key] for s in per_set])) for key in per_set[0]}
    assert got["fid"] == pytest.approx(3 * 40**2 / 2, rel=1e-6)  # every channel mean + 40


# -- intra-mask diversity ----------------------------------------------------------------
def test_diversity_updates_equal_the_mean_over_sets() -> None:
    g = _generator(6)
    samples = torch.rand(3, 3, 2, 16, 16, generator=g) * 100  # N K C H W
    mean, std = torch.tensor([40.0, 60.0]), torch.tensor([10.0, 20.0])
    low, high = torch.tensor([0.0, 10.0]), torch.tensor([100.0, 90.0])
    diversity = IntraMaskDiversity(mean, std, low, high)
    diversity.update(samples[:1])
    diversity.update(samples[1:])
    l1 = [pairwise_l1((s - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)) for s in samples]
    unit = [
        ms_ssim_diversity(
            ((s - low.view(1, -1, 1, 1)) / (high - low).view(1, -1, 1, 1)).clamp(0, 1)
        )
        for s in samples
    ]
    assert diversity.compute() == {
        "diversity_l1": float(np.mean(l1)),
        "diversity_ms_ssim": float(np.mean(unit)),
    }
    empty = IntraMaskDiversity(mean, std, low, high)
    assert empty.compute() == {"diversity_l1": None, "diversity_ms_ssim": None}


def test_diversity_l1_is_in_band_std_units() -> None:
    base = torch.zeros(2, 16, 16)
    sets = torch.stack(
        [
            torch.stack([base, base + d * torch.tensor([1.0, 0.0]).view(2, 1, 1)])
            for d in (1.0, 2.0, 3.0)
        ]
    )  # set i: the samples differ by d on band 0
    diversity = IntraMaskDiversity(
        torch.zeros(2), torch.tensor([2.0, 1.0]), torch.zeros(2), torch.full((2,), 10.0)
    )
    diversity.update(sets)
    # per set d / std / bands = d / 4, averaged over d = 1, 2, 3
    assert diversity.compute()["diversity_l1"] == pytest.approx(0.5, rel=1e-6)


# -- seams ------------------------------------------------------------------------------
def test_seam_updates_average_the_tiles() -> None:
    rng = np.random.default_rng(7)
    real = [rng.normal(0, 1, (2, 40, 40)) for _ in range(2)]
    samples = [[im + rng.normal(0, 0.5, im.shape), im * 2] for im in real]
    grids = [[(16, 4), None], [None, None]]  # tile 1: no sample on a known grid
    seams = SeamScores()
    for name, image, synthetic, tile_grids in zip(("a", "b"), real, samples, grids):
        seams.update(name, image, synthetic, tile_grids)
    assert set(seams.tiles) == {"a"} and seams.grids == {(16, 4)} and seams.without_grid == 3
    expected = tile_seam_scores(real[0], samples[0], grids[0])
    assert expected is not None
    assert seams.compute() == {name: expected[name] for name in seams.compute()}
    on_grid = seam_scores(samples[0][0], 16, 4)
    assert all(expected[key] == on_grid[key] for key in SEAM_KEYS)
    assert seams.details() == {"a": expected}
    empty = SeamScores()
    assert all(value is None for value in empty.compute().values())
    assert list(empty.compute()) == [n for key in SEAM_KEYS for n in (key, f"{key}_real")]
    assert math.isnan(nanmean([])) and nanmean([1.0, float("nan"), 2.0]) == 1.5


# -- the segmenter's metrics ------------------------------------------------------------
class PixelModel(nn.Module):
    """Per-pixel logits from an identity encoder over 2 bands."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Identity()
        self.head = nn.Conv2d(2, 3, 1)
        with torch.no_grad():
            self.head.weight.copy_(
                torch.tensor([[1.0, 0], [0, 1.0], [-1.0, -1.0]]).view(3, 2, 1, 1)
            )
            self.head.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))


def test_segmenter_metrics_updates_equal_the_one_shot_functions() -> None:
    g = _generator(8)
    real = torch.rand(5, 2, 8, 8, generator=g) * 50
    synthetic = torch.stack([real, real + 5], 1)  # N K C H W
    masks = torch.randint(0, 3, (5, 8, 8), generator=g)
    normalizer = Normalizer(np.array([20.0, 30.0]), np.array([5.0, 10.0]))
    model = PixelModel().eval()
    segmenter = Segmenter(model, normalizer, model.encoder)
    metadata = {"classes": ["x", "y", "z"], "scored_classes": [1, 2], "ignore_index": 0}
    metrics = SegmenterMetrics(segmenter, metadata, samples=2, batch_size=3)
    metrics.update(real[:2], synthetic[:2], masks[:2])
    metrics.update(real[2:], synthetic[2:], masks[2:])
    headline, details = metrics.compute()

    real_in, flat = normalizer.normalize(real), normalizer.normalize(synthetic.flatten(0, 1))
    scores = [
        consistency_miou(model, x, m, 3, [1, 2], 0, ["x", "y", "z"])
        for x, m in ((real_in, masks), (flat, masks.repeat_interleave(2, 0)))
    ]
    pooled = [x.mean(dim=(2, 3)) for x in (real_in, flat)]
    fd = [feature_frechet_distance(pooled[0], pooled[1][k::2]) for k in (0, 1)]
    assert headline == {
        "consistency_miou": scores[1]["miou"],
        "real_miou": scores[0]["miou"],
        "domain_fd": float(np.mean(fd)),
    }
    assert details == {"consistency_iou": scores[1]["iou"], "real_iou": scores[0]["iou"]}
    # one chip: no Fréchet distance; no encoder: none either
    one = SegmenterMetrics(segmenter, metadata, samples=2)
    one.update(real[:1], synthetic[:1], masks[:1])
    assert one.compute()[0]["domain_fd"] is None
    bare = SegmenterMetrics(Segmenter(model, normalizer), metadata, samples=2)
    bare.update(real, synthetic, masks)
    assert bare.compute()[0]["domain_fd"] is None and bare.domain.count == 0
