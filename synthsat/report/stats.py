"""Paired statistics over seeds: an arm's scores against a baseline's, seed by seed.

The study trains every arm (a mixing ratio with one synthetic source) and the real-only
baseline with the same seeds, so seed ``s`` of an arm and seed ``s`` of the baseline share
their initialisation and data order. The paired difference ``arm[s] - baseline[s]`` removes
that shared seed-to-seed variation; its mean, a confidence interval of that mean and the
number of seeds on which the arm did better summarise the comparison.

The interval is the paired t interval (:func:`t_interval`): with the handful of seeds a
study affords, the percentile bootstrap of the mean is too narrow (with 3 seeds it is the
range of the three differences, which covers the mean only about 75 % of the time). The
bootstrap interval (:func:`bootstrap_ci`, scipy's percentile bootstrap) is added beside it from
:data:`MIN_BOOTSTRAP_N` paired seeds on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Resamples drawn by :func:`bootstrap_ci` unless told otherwise.
N_BOOT = 10_000
#: Paired seeds from which :func:`compare_paired` adds the bootstrap interval.
MIN_BOOTSTRAP_N = 10
#: How :class:`PairedComparison`'s interval is computed, for reports.
CI_METHOD = "paired t interval"


def paired_differences(arm: Mapping[int, float], baseline: Mapping[int, float]) -> dict[int, float]:
    """Per-seed differences ``arm[s] - baseline[s]`` over the seeds both have.

    Args:
        arm: Score of the arm by seed.
        baseline: Score of the baseline by seed.

    Returns:
        The differences by seed, in ascending seed order; seeds that only one side has are
        left out.

    Raises:
        ValueError: If the two have no seed in common.
    """
    common = sorted(set(arm) & set(baseline))
    if not common:
        raise ValueError(
            f"no seed in common: arm has {sorted(arm)}, baseline has {sorted(baseline)}"
        )
    return {s: float(arm[s]) - float(baseline[s]) for s in common}


def bootstrap_ci(
    values: Iterable[float], level: float = 0.95, n_boot: int = N_BOOT, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean of ``values``.

    ``scipy.stats.bootstrap`` with ``method="percentile"``: ``n_boot`` resamples of
    ``len(values)`` values with replacement (the paired differences are resampled as whole
    seeds, so the pairing is kept), drawn by ``numpy.random.default_rng(seed)``, and the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resample means (linear
    interpolation between order statistics). The same arguments always give the same
    interval; it equals the numpy resampling this function did before scipy (the same
    index draws, ``integers(0, n, size=(n_boot, n))``, and quantiles).

    Args:
        values: The sample (e.g. paired differences over seeds).
        level: Coverage of the interval, in (0, 1).
        n_boot: Number of bootstrap resamples (at least 1).
        seed: Seed of the random generator that draws the resamples.

    Returns:
        ``(low, high)``; ``(v, v)`` for a single value ``v``.

    Raises:
        ValueError: If ``values`` is empty, ``level`` is not in (0, 1) or ``n_boot < 1``.
    """
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if arr.size == 1:
        return float(arr[0]), float(arr[0])
    import scipy
    from scipy import stats  # scipy: loaded when an interval is computed

    draws = generator_argument(scipy.__version__, np.random.default_rng(seed))
    result = stats.bootstrap(
        (arr,),
        np.mean,
        n_resamples=n_boot,
        confidence_level=level,
        method="percentile",
        vectorized=True,
        axis=-1,
        **draws,
    )
    interval = result.confidence_interval
    return float(interval.low), float(interval.high)


def generator_argument(scipy_version: str, generator: np.random.Generator) -> dict[str, Any]:
    """The keyword that hands ``generator`` to ``scipy.stats.bootstrap``.

    scipy 1.15 renamed it from ``random_state`` to ``rng``.

    Args:
        scipy_version: scipy's ``__version__`` (only major and minor are read, so a
            pre-release such as ``1.15.0rc1`` counts as 1.15).
        generator: The generator that draws the resamples.

    Returns:
        ``{"rng": generator}`` from scipy 1.15 on, else ``{"random_state": generator}``.
    """
    major, minor = (int(p) for p in scipy_version.split(".")[:2])
    return {"rng": generator} if (major, minor) >= (1, 15) else {"random_state": generator}


def t_interval(values: Iterable[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean of ``values``.

    ``mean -/+ t_{(1 + level) / 2, n - 1} * s / sqrt(n)``, with ``s`` the sample standard
    deviation (``ddof=1``): exact coverage when the values are independent draws from a
    normal distribution, the usual interval for a mean of few paired differences.

    Args:
        values: The sample (e.g. paired differences over seeds).
        level: Coverage of the interval, in (0, 1).

    Returns:
        ``(low, high)``; ``(nan, nan)`` for a single value (no spread to estimate).

    Raises:
        ValueError: If ``values`` is empty or ``level`` is not in (0, 1).
    """
    from scipy.stats import t  # scipy: loaded when an interval is computed

    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        raise ValueError("t_interval needs at least one value")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if arr.size == 1:
        return float("nan"), float("nan")
    half = float(t.ppf((1.0 + level) / 2.0, arr.size - 1)) * arr.std(ddof=1) / np.sqrt(arr.size)
    mean = float(arr.mean())
    return mean - half, mean + half


@dataclass(frozen=True)
class PairedComparison:
    """An arm's scores over seeds and their paired comparison with the baseline.

    Attributes:
        mean: Mean of the arm's scores over all its seeds.
        std: Sample standard deviation (``ddof=1``) of those scores; 0 with one seed.
        n: Number of the arm's seeds.
        mean_diff: Mean paired difference (arm minus baseline) over the common seeds.
        ci_low: Lower bound of the paired t confidence interval of ``mean_diff``
            (nan with one paired seed).
        ci_high: Upper bound of that interval.
        n_improved: Common seeds on which the arm scored strictly above the baseline.
        n_paired: Number of seeds the arm and the baseline have in common.
        boot_low: Lower bound of the percentile-bootstrap interval of ``mean_diff``, from
            :data:`MIN_BOOTSTRAP_N` paired seeds on (None below).
        boot_high: Upper bound of that interval (None below).
    """

    mean: float
    std: float
    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    n_improved: int
    n_paired: int
    boot_low: float | None = None
    boot_high: float | None = None

    @property
    def ci_excludes_zero(self) -> bool:
        """Whether the interval lies wholly above or wholly below 0."""
        return bool(self.ci_low > 0 or self.ci_high < 0)


def compare_paired(
    arm: Mapping[int, float],
    baseline: Mapping[int, float],
    level: float = 0.95,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> PairedComparison:
    """Summarise an arm against the baseline, pairing their scores by seed.

    Args:
        arm: Score of the arm by seed (at least one).
        baseline: Score of the baseline by seed.
        level: Coverage of the confidence intervals of the mean difference.
        n_boot: Bootstrap resamples (from :data:`MIN_BOOTSTRAP_N` paired seeds on).
        seed: Seed of the bootstrap's random generator.

    Returns:
        The arm's mean, std and seed count over all its seeds, and the mean paired
        difference, its paired t interval (:func:`t_interval`), with
        :data:`MIN_BOOTSTRAP_N` or more paired seeds its bootstrap interval
        (:func:`bootstrap_ci`), and the number of seeds improved over the seeds both have.

    Raises:
        ValueError: If the two have no seed in common.
    """
    diffs = paired_differences(arm, baseline)
    scores = np.asarray([float(v) for v in arm.values()], dtype=np.float64)
    d = np.asarray(list(diffs.values()), dtype=np.float64)
    low, high = t_interval(d, level=level)
    boot = bootstrap_ci(d, level, n_boot, seed) if d.size >= MIN_BOOTSTRAP_N else (None, None)
    return PairedComparison(
        mean=float(scores.mean()),
        std=float(scores.std(ddof=1)) if scores.size > 1 else 0.0,
        n=int(scores.size),
        mean_diff=float(d.mean()),
        ci_low=low,
        ci_high=high,
        n_improved=int((d > 0).sum()),
        n_paired=int(d.size),
        boot_low=boot[0],
        boot_high=boot[1],
    )
