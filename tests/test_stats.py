"""Paired statistics over seeds, on hand-made numbers whose results are known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from synthsat.stats import (
    PairedComparison,
    bootstrap_ci,
    compare_paired,
    paired_differences,
)

BASELINE = {0: 0.50, 1: 0.52, 2: 0.48}
ARM = {0: 0.52, 1: 0.56, 2: 0.47}  # differences +0.02, +0.04, -0.01


def test_paired_differences_over_the_common_seeds() -> None:
    diffs = paired_differences({**ARM, 7: 0.9}, {**BASELINE, 9: 0.1})
    assert list(diffs) == [0, 1, 2]  # seeds 7 and 9 have no partner
    assert diffs == pytest.approx({0: 0.02, 1: 0.04, 2: -0.01}, abs=1e-12)
    assert paired_differences({2: 0.3, 0: 0.1}, {0: 0.0, 2: 0.5}) == pytest.approx(
        {0: 0.1, 2: -0.2}
    )
    assert list(paired_differences({2: 0.3, 0: 0.1}, {0: 0.0, 2: 0.5})) == [0, 2]


def test_paired_differences_need_a_common_seed() -> None:
    with pytest.raises(ValueError, match="no seed in common"):
        paired_differences({0: 0.5}, {1: 0.5})
    with pytest.raises(ValueError, match="no seed in common"):
        paired_differences({}, BASELINE)


def test_bootstrap_ci_of_a_constant_sample_is_the_constant() -> None:
    assert bootstrap_ci([0.25] * 5) == (0.25, 0.25)
    assert bootstrap_ci([0.7]) == (0.7, 0.7)  # one value: no resampling at all
    assert bootstrap_ci([-3.0], level=0.5, n_boot=1, seed=9) == (-3.0, -3.0)


def test_bootstrap_ci_percentiles_of_the_exact_bootstrap_distribution() -> None:
    """With 10 000 resamples the empirical quantiles sit on those of the exact bootstrap
    distribution, which is known here.

    [1, 2, 3, 4]: the sum of 4 draws is 4..16 with counts 1, 4, 10, 20, ... of 256, so the
    mean is at most 1.25 with probability 5/256 = 2.0 % and at most 1.5 with 15/256 = 5.9 %:
    the 2.5 % quantile is 1.5 and, by symmetry, the 97.5 % quantile 3.5.
    {0, 1}: the mean of 2 draws is 0 with probability 1/4 > 2.5 %, 1 with 1/4: CI (0, 1).
    """
    assert bootstrap_ci([1.0, 2.0, 3.0, 4.0], seed=0) == (1.5, 3.5)
    assert bootstrap_ci([4.0, 2.0, 1.0, 3.0], seed=123) == (1.5, 3.5)  # any seed, any order
    assert bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)
    assert bootstrap_ci([0.0, 1.0], seed=5) == (0.0, 1.0)
    # 80 %: P(mean <= 1.5) = 15/256 = 5.9 % < 10 % <= P(mean <= 1.75) = 35/256 = 13.7 %
    assert bootstrap_ci([1.0, 2.0, 3.0, 4.0], level=0.8) == (1.75, 3.25)


def test_bootstrap_ci_pinned_with_few_resamples() -> None:
    """n_boot = 4, seed 0: default_rng(0).integers(0, 4, (4, 4)) draws the index rows
    [3 2 2 1], [1 0 0 0], [0 3 2 3], [2 2 3 2], i.e. resample means of [1, 2, 3, 4] of
    3, 1.25, 3, 3.25; sorted 1.25, 3, 3, 3.25. The 25 % quantile lies at position
    0.25 * 3 = 0.75: 1.25 + 0.75 * 1.75 = 2.5625; the 75 % one at 2.25: 3 + 0.25 * 0.25."""
    idx = np.random.default_rng(0).integers(0, 4, size=(4, 4))
    np.testing.assert_array_equal(idx, [[3, 2, 2, 1], [1, 0, 0, 0], [0, 3, 2, 3], [2, 2, 3, 2]])
    low, high = bootstrap_ci([1.0, 2.0, 3.0, 4.0], level=0.5, n_boot=4, seed=0)
    assert (low, high) == pytest.approx((2.5625, 3.0625), abs=1e-12)


def test_bootstrap_ci_is_reproducible_and_seeded() -> None:
    values = [0.013, -0.02, 0.041, 0.007, 0.0, 0.025]
    first = bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3) == first  # same seed, same interval
    assert bootstrap_ci(np.array(values), seed=3) == first  # any iterable
    assert bootstrap_ci(values, seed=4) != first  # another seed draws other resamples
    low, high = first
    assert min(values) <= low < np.mean(values) < high <= max(values)
    wider = bootstrap_ci(values, level=0.99, seed=3)
    assert wider[0] <= low and high <= wider[1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"values": []}, "at least one value"),
        ({"values": [1.0, 2.0], "level": 1.0}, "level"),
        ({"values": [1.0, 2.0], "level": 0.0}, "level"),
        ({"values": [1.0, 2.0], "n_boot": 0}, "n_boot"),
    ],
)
def test_bootstrap_ci_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        bootstrap_ci(**kwargs)


def test_compare_paired_on_hand_made_seeds() -> None:
    c = compare_paired(ARM, BASELINE)
    assert isinstance(c, PairedComparison)
    assert c.mean == pytest.approx(1.55 / 3, abs=1e-12)
    assert c.std == pytest.approx(np.std([0.52, 0.56, 0.47], ddof=1), abs=1e-12)
    assert c.std == pytest.approx(0.0450925, abs=1e-7)
    assert c.n == 3 and c.n_paired == 3 and c.n_improved == 2
    assert c.mean_diff == pytest.approx(0.0166667, abs=1e-7)
    # 3 seeds: the smallest and the largest difference each come up (all three draws the
    # same seed) with probability 1/27 = 3.7 % > 2.5 %, so the CI is (min, max)
    assert (c.ci_low, c.ci_high) == pytest.approx((-0.01, 0.04), abs=1e-12)


def test_compare_paired_counts_only_common_seeds_for_the_difference() -> None:
    arm = {0: 0.6, 1: 0.4, 5: 1.0}  # seed 5 has no real-only partner
    c = compare_paired(arm, {0: 0.5, 1: 0.5}, n_boot=2000)
    assert c.n == 3 and c.mean == pytest.approx(2.0 / 3)  # the arm over all its seeds
    assert c.n_paired == 2 and c.n_improved == 1  # Δ +0.1, -0.1
    assert c.mean_diff == pytest.approx(0.0, abs=1e-12)
    assert (c.ci_low, c.ci_high) == pytest.approx((-0.1, 0.1), abs=1e-12)
    tie = compare_paired({0: 0.5}, {0: 0.5})  # a tie is not an improvement
    assert (tie.n_improved, tie.n_paired, tie.std, tie.ci_low, tie.ci_high) == (0, 1, 0, 0, 0)
