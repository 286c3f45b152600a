"""Paired statistics over seeds, on hand-made numbers whose results are known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from synthsat.report.stats import (
    MIN_BOOTSTRAP_N,
    PairedComparison,
    bootstrap_ci,
    compare_paired,
    generator_argument,
    paired_differences,
    t_interval,
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
    with pytest.raises(ValueError, match=r"^no seed in common: arm has \[0\], baseline has \[1\]$"):
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
        ({"values": []}, r"^bootstrap_ci needs at least one value$"),
        ({"values": [1.0, 2.0], "level": 1.0}, r"^level must lie in \(0, 1\), got 1.0$"),
        ({"values": [1.0, 2.0], "level": 0.0}, r"^level must lie in \(0, 1\), got 0.0$"),
        ({"values": [1.0, 2.0], "n_boot": 0}, r"^n_boot must be at least 1, got 0$"),
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
    # paired t: s = 0.0251661 (ddof 1), t_{0.975, 2} = 4.302653, half width
    # 4.302653 * 0.0251661 / sqrt(3) = 0.0625161 (the bootstrap would give (min, max) Δ)
    assert (c.ci_low, c.ci_high) == pytest.approx((-0.0458494, 0.0791828), abs=1e-7)
    assert not c.ci_excludes_zero
    assert (c.boot_low, c.boot_high) == (None, None)  # 3 seeds: no bootstrap


def test_compare_paired_counts_only_common_seeds_for_the_difference() -> None:
    arm = {0: 0.6, 1: 0.4, 5: 1.0}  # seed 5 has no real-only partner
    c = compare_paired(arm, {0: 0.5, 1: 0.5}, n_boot=2000)
    assert c.n == 3 and c.mean == pytest.approx(2.0 / 3)  # the arm over all its seeds
    assert c.n_paired == 2 and c.n_improved == 1  # Δ +0.1, -0.1
    assert c.mean_diff == pytest.approx(0.0, abs=1e-12)
    # Δ +0.1, -0.1: s = sqrt(0.02), t_{0.975, 1} = 12.7062: half width 12.7062 * 0.1
    assert (c.ci_low, c.ci_high) == pytest.approx((-1.270620, 1.270620), abs=1e-5)
    tie = compare_paired({0: 0.5}, {0: 0.5})  # a tie is not an improvement
    assert (tie.n_improved, tie.n_paired, tie.std) == (0, 1, 0)
    assert np.isnan(tie.ci_low) and np.isnan(tie.ci_high)  # one seed: no interval


def test_t_interval_known_quantiles() -> None:
    """t_{0.975, 1} = 12.7062, t_{0.975, 4} = 2.776445, t_{0.95, 4} = 2.131847."""
    assert t_interval([0.0, 2.0]) == pytest.approx((1 - 12.706205, 1 + 12.706205), abs=1e-5)
    values = [1.0, 2.0, 3.0, 4.0, 5.0]  # mean 3, s = sqrt(2.5), s / sqrt(5) = 0.7071068
    assert t_interval(values) == pytest.approx((3 - 1.963243, 3 + 1.963243), abs=1e-5)
    assert t_interval(values, level=0.9) == pytest.approx((3 - 1.507443, 3 + 1.507443), abs=1e-5)
    assert t_interval([0.3] * 4) == pytest.approx((0.3, 0.3))
    low, high = t_interval([7.0])
    assert np.isnan(low) and np.isnan(high)
    with pytest.raises(ValueError, match=r"^t_interval needs at least one value$"):
        t_interval([])
    with pytest.raises(ValueError, match=r"^level must lie in \(0, 1\), got 1.0$"):
        t_interval([1.0, 2.0], level=1.0)
    with pytest.raises(ValueError, match=r"^level must lie in \(0, 1\), got 0.0$"):
        t_interval([1.0, 2.0], level=0.0)
    # computed in float64: float32 input gives its float64 values' interval
    as32 = np.array([0.1, 0.2, 0.7], dtype=np.float32)
    assert t_interval(as32) == t_interval([float(v) for v in as32])


def test_t_interval_covers_the_mean_95_percent_of_the_time() -> None:
    """Over 4000 normal samples of 3 values the interval covers the true mean at the
    nominal rate (the percentile bootstrap of 3 values covers it far less often)."""
    rng = np.random.default_rng(0)
    samples = rng.normal(0.0, 1.0, size=(4000, 3))
    t_cover = np.mean([lo <= 0 <= hi for lo, hi in map(t_interval, samples)])
    boot_cover = np.mean(
        [lo <= 0 <= hi for lo, hi in (bootstrap_ci(s, n_boot=200) for s in samples[:400])]
    )
    assert 0.94 <= t_cover <= 0.96
    assert boot_cover < 0.85


def test_compare_paired_adds_the_bootstrap_from_ten_seeds() -> None:
    base = {s: 0.5 for s in range(MIN_BOOTSTRAP_N)}
    arm = {s: 0.5 + 0.01 * (s % 3) for s in range(MIN_BOOTSTRAP_N)}
    c = compare_paired(arm, base, n_boot=500)
    d = [0.01 * (s % 3) for s in range(MIN_BOOTSTRAP_N)]
    assert (c.boot_low, c.boot_high) == pytest.approx(bootstrap_ci(d, n_boot=500), abs=1e-12)
    assert (c.ci_low, c.ci_high) == pytest.approx(t_interval(d), abs=1e-12)
    assert c.ci_excludes_zero  # all Δ >= 0, mean 0.009
    nine = compare_paired({s: arm[s] for s in range(9)}, base, n_boot=500)
    assert nine.boot_low is None


def test_bootstrap_ci_is_scipys_percentile_bootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    """The interval comes from ``scipy.stats.bootstrap`` (issue 28), percentile method, the
    seeded generator's draws; on a sample of 6 paired differences, pinned."""
    from scipy import stats

    calls: list[dict] = []
    real = stats.bootstrap

    def spy(data: tuple, statistic: object, **kwargs: object) -> object:
        calls.append(kwargs)
        return real(data, statistic, **kwargs)

    monkeypatch.setattr(stats, "bootstrap", spy)
    values = [0.013, -0.02, 0.041, 0.007, 0.0, 0.025]
    low, high = bootstrap_ci(values, seed=3)
    (kwargs,) = calls
    assert (kwargs["method"], kwargs["n_resamples"], kwargs["confidence_level"]) == (
        "percentile",
        10_000,
        0.95,
    )
    assert (low, high) == pytest.approx((-0.0045, 0.0261666667), abs=1e-9)
    # one vectorised call over the resamples' axis (a Python call per resample is 10 000
    # calls), the seeded generator handed over under scipy's name for it
    assert kwargs["vectorized"] is True and kwargs["axis"] == -1
    assert set(kwargs) >= {"rng"} and "random_state" not in kwargs


@pytest.mark.parametrize(
    ("version", "keyword"),
    [
        ("1.14.1", "random_state"),
        ("1.9.3", "random_state"),
        ("0.19.0", "random_state"),
        ("1.15.0", "rng"),
        ("1.15.0rc1", "rng"),  # a pre-release: only major and minor are read
        ("1.16.2", "rng"),
        ("2.0.0", "rng"),
        ("2.3", "rng"),
    ],
)
def test_the_generator_keyword_follows_scipys_version(version: str, keyword: str) -> None:
    """scipy 1.15 renamed bootstrap's ``random_state`` to ``rng``."""
    generator = np.random.default_rng(0)
    draws = generator_argument(version, generator)
    assert list(draws) == [keyword] and draws[keyword] is generator


def test_bootstrap_ci_computes_in_float64_whatever_the_input_dtype() -> None:
    """float32 values give the interval of their float64 values (float32 resample means
    would round differently)."""
    values = np.array([0.1, 0.2, 0.3, 0.7, 1.1], dtype=np.float32)
    as64 = [float(v) for v in values]
    assert bootstrap_ci(values, seed=1, n_boot=50) == bootstrap_ci(as64, seed=1, n_boot=50)
    assert bootstrap_ci(list(values), seed=2) == bootstrap_ci(as64, seed=2)


def test_compare_paired_intervals_at_the_level_asked() -> None:
    """level=0.9: t_{0.95, 2} = 2.919986 instead of t_{0.975, 2} = 4.302653."""
    c = compare_paired(ARM, BASELINE, level=0.9)
    half = 2.919986 * 0.0251661 / np.sqrt(3)
    assert (c.ci_low, c.ci_high) == pytest.approx((0.0166667 - half, 0.0166667 + half), abs=1e-6)
    d = [0.01 * (s % 3) for s in range(MIN_BOOTSTRAP_N)]
    ten = compare_paired(
        {s: 0.5 + v for s, v in enumerate(d)}, {s: 0.5 for s in range(10)}, level=0.5, n_boot=300
    )
    assert (ten.boot_low, ten.boot_high) == pytest.approx(
        bootstrap_ci(d, level=0.5, n_boot=300), abs=1e-12
    )


def test_compare_paired_draws_the_bootstrap_with_its_seed() -> None:
    d = [0.01 * (s % 4) - 0.01 for s in range(MIN_BOOTSTRAP_N)]
    arm, base = {s: 0.5 + v for s, v in enumerate(d)}, {s: 0.5 for s in range(10)}
    diffs = list(paired_differences(arm, base).values())
    seeded = compare_paired(arm, base, n_boot=30, seed=7)
    assert (seeded.boot_low, seeded.boot_high) == bootstrap_ci(diffs, n_boot=30, seed=7)
    assert (seeded.boot_low, seeded.boot_high) != bootstrap_ci(diffs, n_boot=30, seed=0)


def test_compare_paired_std_of_two_seeds() -> None:
    c = compare_paired({0: 0.6, 1: 0.4}, {0: 0.5, 1: 0.5})
    assert c.std == pytest.approx(np.sqrt(0.02), abs=1e-12)  # ddof 1 from two seeds on
