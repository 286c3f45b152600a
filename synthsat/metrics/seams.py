"""Chip seams: visible chip edges and texture that repeats at the chip step.

A synthetic tile is generated chip by chip on a :class:`~synthsat.synthesis.windows.ChipGrid`
(chips of side ``chip`` advancing by ``step = chip - overlap``, the last one aligned to the
tile's edge). Two defects give the grid away:

- **seams** — :func:`seam_ratio`: the mean absolute difference of neighbouring pixels
  (averaged over bands and along the other axis into a profile per axis) at the differences
  that straddle a chip edge, divided by its median everywhere else. Seamless imagery scores
  about 1, imagery with steps at the chip edges far above 1.
- **repetition** — :func:`step_autocorrelation`: the Pearson autocorrelation of the
  high-passed image at a shift of ``step`` pixels, and its *peak* above the neighbouring
  shifts. A generator that paints the same texture into every chip peaks; real imagery
  gives about 0.

Both are computed on raw values (any dtype), one band at a time in float32, so tiles a few
thousand pixels on a side need a few of their bands' worth of memory; both are invariant to
an affine change of the values, so real and synthetic tiles can be compared as they are.
:class:`SeamScores` scores a set of tiles, each sample on the chip grid it was generated on
and its real tile on the same grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import uniform_filter

from synthsat.synthesis.windows import chip_starts

#: Floor of the seam ratio's denominator, relative to the axis's mean gradient: a tile
#: that is flat but for its chip edges scores a large finite ratio (not infinity).
GRADIENT_FLOOR = 1e-3
#: Gradients (and high-passed standard deviations) up to this fraction of the largest
#: absolute pixel value count as none: the rounding of a float32 blend leaves differences
#: of an ulp in a flat tile, which are no texture to score.
FLAT_TOLERANCE = 1e-6
#: Side of the box blur subtracted before the autocorrelation (the high-pass).
HIGH_PASS = 5
#: Offsets from the step of the shifts the autocorrelation peak is compared with.
NEAR_LAGS = (2, 3, 4)
#: The scores of :func:`seam_scores`; a set of tiles reports each for the samples and
#: (``<key>_real``) for their real tiles on the same chip grids.
SEAM_KEYS = ("seam_ratio", "acf_step", "acf_peak")


def border_positions(length: int, chip: int, overlap: int) -> np.ndarray:
    """Neighbour differences (index ``i``: pixels ``i`` and ``i + 1``) across a chip edge.

    The edges are the chip starts above 0 and the chip ends below ``length`` of the
    chips along an axis of ``length`` pixels (:attr:`ChipGrid.rows
    <synthsat.synthesis.windows.ChipGrid.rows>`, :func:`~synthsat.synthesis.windows.chip_starts`).

    Returns:
        sorted int array of difference indices in ``[0, length - 1)`` (empty for an axis
        covered by one chip).
    """
    starts = chip_starts(length, chip, overlap)
    edges = {s for s in starts if s > 0} | {s + chip for s in starts if s + chip < length}
    return np.array(sorted(e - 1 for e in edges), dtype=np.int64)


def gradient_profiles(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean absolute neighbour differences along each axis, averaged over bands.

    Args:
        image: ``(C, H, W)`` (or ``(H, W)``) array of any numeric dtype.

    Returns:
        ``(rows, cols)``: ``rows[i]`` is the mean of ``|x[:, i + 1, :] - x[:, i, :]|``
        (length ``H - 1``), ``cols[j]`` that of ``|x[:, :, j + 1] - x[:, :, j]|`` (length
        ``W - 1``).
    """
    image = image[None] if image.ndim == 2 else image
    _, h, w = image.shape
    rows, cols = np.zeros(max(h - 1, 0)), np.zeros(max(w - 1, 0))
    for band in image:
        x = np.asarray(band, dtype=np.float32)
        rows += np.abs(np.diff(x, axis=0)).mean(axis=1, dtype=np.float64)
        cols += np.abs(np.diff(x, axis=1)).mean(axis=0, dtype=np.float64)
    return rows / len(image), cols / len(image)


def _axis_ratio(profile: np.ndarray, borders: np.ndarray, flat: float) -> float:
    """Mean of the profile at ``borders`` over the (floored) median elsewhere; nan if there
    is no border, no other position or no gradient above ``flat``."""
    inside = np.ones(len(profile), dtype=bool)
    inside[borders] = False
    if not len(borders) or not inside.any() or profile.max() <= flat:
        return float("nan")
    floor = GRADIENT_FLOOR * float(profile.mean())
    return float(profile[borders].mean()) / max(float(np.median(profile[inside])), floor)


def seam_ratio(image: np.ndarray, chip: int, overlap: int) -> float:
    """How much stronger the gradient is across chip edges than elsewhere.

    Per axis: the gradient profile (:func:`gradient_profiles`) averaged over the
    :func:`border_positions` of the chip grid, divided by its median over all other
    positions (floored at :data:`GRADIENT_FLOOR` times the profile's mean, so steps in an
    otherwise flat image give ``n / (b * GRADIENT_FLOOR)`` for ``b`` border positions out
    of ``n``). The ratio is the mean over the axes that have a border position and some
    gradient (a profile value above :data:`FLAT_TOLERANCE` times the largest absolute
    pixel value).

    Args:
        image: ``(C, H, W)`` tile.
        chip: chip side of the grid the tile was generated on.
        overlap: the grid's minimum chip overlap.

    Returns:
        about 1 for seamless imagery, far above 1 with seams; nan when no axis has a chip
        edge (a tile within one chip) or any gradient (a constant tile).
    """
    rows, cols = gradient_profiles(image)
    h, w = image.shape[-2:]
    largest = max(abs(float(image.max())), abs(float(image.min()))) if image.size else 0.0
    flat = FLAT_TOLERANCE * largest
    ratios = [
        _axis_ratio(rows, border_positions(h, chip, overlap), flat),
        _axis_ratio(cols, border_positions(w, chip, overlap), flat),
    ]
    valid = [r for r in ratios if not np.isnan(r)]
    return float(np.mean(valid)) if valid else float("nan")


def high_pass(band: np.ndarray, size: int = HIGH_PASS) -> np.ndarray:
    """``band`` minus its ``size x size`` box blur (mirrored at the edges), in float32."""
    x = np.asarray(band, dtype=np.float32)
    return x - uniform_filter(x, size=size, mode="mirror")


def _lag_correlations(
    residual: np.ndarray, lags: list[int], axis: int, flat: float
) -> dict[int, float]:
    """Pearson correlation of ``residual`` with itself shifted by each lag along ``axis``
    (leaving out lags where either side's standard deviation is at most ``flat``)."""
    x = residual if axis == 1 else residual.T
    length = x.shape[1]
    s1 = x.sum(axis=0, dtype=np.float64)  # per-column sums, for the means and variances
    s2 = np.square(x).sum(axis=0, dtype=np.float64)
    out = {}
    for lag in lags:
        if not 0 < lag < length:
            continue
        n = x.shape[0] * (length - lag)
        ma, mb = s1[: length - lag].sum() / n, s1[lag:].sum() / n
        va = s2[: length - lag].sum() / n - ma * ma
        vb = s2[lag:].sum() / n - mb * mb
        if min(va, vb) <= flat * flat:
            continue
        cross = (x[:, : length - lag] * x[:, lag:]).sum(dtype=np.float64) / n
        out[lag] = float((cross - ma * mb) / np.sqrt(va * vb))
    return out


def autocorrelation(image: np.ndarray, lags: list[int]) -> dict[int, float]:
    """Mean Pearson autocorrelation of the high-passed image at shifts of ``lags`` pixels.

    Each band is high-passed (:func:`high_pass`) and correlated with itself shifted along
    x and along y; the value at a lag is the mean over bands and axes (those at least
    ``lag + 1`` px long, and not flat: a residual standard deviation above
    :data:`FLAT_TOLERANCE` times the band's largest absolute value).

    Returns:
        ``{lag: correlation}`` for the lags measured on some band and axis.
    """
    image = image[None] if image.ndim == 2 else image
    found: dict[int, list[float]] = {}
    for band in image:
        residual = high_pass(band)
        flat = FLAT_TOLERANCE * max(abs(float(band.max())), abs(float(band.min())))
        for axis in (0, 1):
            for lag, r in _lag_correlations(residual, lags, axis, flat).items():
                found.setdefault(lag, []).append(r)
    return {lag: float(np.mean(found[lag])) for lag in lags if lag in found}


def step_autocorrelation(image: np.ndarray, step: int) -> dict[str, float]:
    """Texture repeating every ``step`` pixels (the chip grid's stride).

    Returns:
        ``acf_step``: :func:`autocorrelation` at ``step``; ``acf_peak``: ``acf_step``
        minus the mean autocorrelation at ``step +- 2, 3, 4`` (those above 0 and measured).
        Real imagery gives a peak of about 0, a texture fixed in chip coordinates a
        clearly positive one; nan where the image is too small or constant.
    """
    near = [step + s * d for d in NEAR_LAGS for s in (-1, 1) if step + s * d > 0]
    acf = autocorrelation(image, [step, *near])
    at_step = acf.get(step, float("nan"))
    around = [acf[lag] for lag in near if lag in acf]
    peak = at_step - float(np.mean(around)) if around else float("nan")
    return {"acf_step": at_step, "acf_peak": peak}


def seam_scores(image: np.ndarray, chip: int, overlap: int) -> dict[str, float]:
    """:func:`seam_ratio` and :func:`step_autocorrelation` at the grid stride.

    Args:
        image: ``(C, H, W)`` tile.
        chip: chip side of the grid.
        overlap: the grid's minimum chip overlap (stride ``chip - overlap``).

    Returns:
        ``seam_ratio``, ``acf_step`` and ``acf_peak`` (nan where undefined).
    """
    return {
        "seam_ratio": seam_ratio(image, chip, overlap),
        **step_autocorrelation(image, chip - overlap),
    }


def nanmean(values: Sequence[float]) -> float:
    """Mean of the values that are not nan; nan if there is none."""
    finite = [v for v in values if not np.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def tile_seam_scores(
    real: np.ndarray, synthetic: Sequence[np.ndarray], grids: Sequence[tuple[int, int] | None]
) -> dict[str, float] | None:
    """Seam scores of a tile's samples and of the real tile, each on the sample's grid.

    Args:
        real: the real ``(C, H, W)`` tile.
        synthetic: its samples.
        grids: per sample, the ``(chip_size, overlap)`` it was generated on, or None.

    Returns:
        the :data:`SEAM_KEYS` averaged over the samples with a grid (nan ignored), and
        ``<key>_real`` those of the real tile on the same grids; None if no sample has one.
    """
    pairs = [(image, grid) for image, grid in zip(synthetic, grids) if grid is not None]
    if not pairs:
        return None
    on_real = {grid: seam_scores(real, *grid) for grid in dict.fromkeys(g for _, g in pairs)}
    scores = [(seam_scores(image, *grid), on_real[grid]) for image, grid in pairs]
    out = {}
    for key in SEAM_KEYS:
        out[key] = nanmean([s[key] for s, _ in scores])
        out[f"{key}_real"] = nanmean([r[key] for _, r in scores])
    return out


def _none_if_nan(value: float) -> float | None:
    return None if np.isnan(value) else value


class SeamScores:
    """Seam scores of a set of tiles (:func:`tile_seam_scores`), accumulated tile by tile.

    Attributes:
        tiles: per tile name, its scores (tiles without a sample on a known grid left out).
        grids: every ``(chip_size, overlap)`` a sample was generated on.
        without_grid: samples whose grid is unknown (left out).
    """

    def __init__(self) -> None:
        self.tiles: dict[str, dict[str, float]] = {}
        self.grids: set[tuple[int, int]] = set()
        self.without_grid = 0

    def update(
        self,
        name: str,
        real: np.ndarray,
        synthetic: Sequence[np.ndarray],
        grids: Sequence[tuple[int, int] | None],
    ) -> None:
        """Add tile ``name``: its real image, its samples and each sample's grid (or None)."""
        self.grids.update(g for g in grids if g is not None)
        self.without_grid += list(grids).count(None)
        scores = tile_seam_scores(real, synthetic, grids)
        if scores is not None:
            self.tiles[name] = scores

    def compute(self) -> dict[str, float | None]:
        """Each of :data:`SEAM_KEYS` and ``<key>_real``, the mean over tiles (nan ignored;
        None where no tile has a value)."""
        return {
            name: _none_if_nan(nanmean([s[name] for s in self.tiles.values()]))
            for key in SEAM_KEYS
            for name in (key, f"{key}_real")
        }

    def details(self) -> dict[str, dict[str, float | None]]:
        """Per tile, its scores (None where undefined)."""
        return {
            name: {key: _none_if_nan(v) for key, v in scores.items()}
            for name, scores in self.tiles.items()
        }
