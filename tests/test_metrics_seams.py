"""Chip-seam metrics on images with known answers: seamless textures, constant chips, a
texture fixed in chip coordinates, and tiles made by the real tile synthesiser."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import ToyChipGenerator
from rasterio.transform import from_origin
from scipy.ndimage import gaussian_filter
from torch import Tensor, nn

from synthsat.metrics.seams import (
    GRADIENT_FLOOR,
    autocorrelation,
    border_positions,
    gradient_profiles,
    seam_ratio,
    seam_scores,
)
from synthsat.metrics.synthetic import sample_grid
from synthsat.synthesis import TileSynthesizer, make_requests
from synthsat.synthesis.windows import ChipGrid


def _chips(h: int, w: int, chip: int, overlap: int, values: object) -> np.ndarray:
    """A 3-band tile painted chip by chip on a :class:`ChipGrid`; later chips overwrite.

    ``values(i, j)`` gives the ``(3, chip, chip)`` (or broadcastable) content of chip
    ``(i, j)``.
    """
    grid = ChipGrid(h, w, chip, overlap)
    image = np.zeros((3, h, w))
    for i, r in enumerate(grid.rows):
        for j, c in enumerate(grid.cols):
            image[:, r : r + chip, c : c + chip] = values(i, j)  # type: ignore[operator]
    return image


def _constant_chips(h: int, w: int, chip: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return _chips(h, w, chip, 0, lambda i, j: rng.normal(size=(3, 1, 1)))


def _white(seed: int = 0, size: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(3, size, size))


def _smooth(seed: int = 0, size: int = 512) -> np.ndarray:
    return gaussian_filter(np.random.default_rng(seed).normal(size=(3, size, size)), (0, 2, 2))


# -- definitions -------------------------------------------------------------------------
def test_border_positions_are_the_differences_across_chip_edges() -> None:
    # difference i is between pixels i and i + 1; edges at chip starts > 0 and ends < length
    assert border_positions(128, 32, 0).tolist() == [31, 63, 95]
    # last chip aligned to the edge (starts 0, 32, 64, 68): the chip at 64 ends at 96
    assert border_positions(100, 32, 0).tolist() == [31, 63, 67, 95]
    # overlap 8 (starts 0, 24, ..., 96): every start and every end is an edge
    assert border_positions(128, 32, 8).tolist() == [23, 31, 47, 55, 71, 79, 95, 103]
    assert border_positions(32, 32, 0).tolist() == []
    assert border_positions(20, 32, 8).tolist() == []


def test_gradient_profiles_average_bands_and_the_other_axis() -> None:
    image = np.zeros((2, 4, 6), np.uint8)
    image[0] = 3 * np.arange(6)  # steps of 3 along x in band 0, nothing in band 1
    image[1, 2:] = 10  # one step of 10 along y in band 1, between rows 1 and 2
    rows, cols = gradient_profiles(image)
    np.testing.assert_allclose(cols, [1.5] * 5)
    np.testing.assert_allclose(rows, [0.0, 5.0, 0.0])


def test_a_constant_image_has_no_seam_score() -> None:
    # no gradient anywhere: 0 / 0, defined as nan (so are the autocorrelations)
    scores = seam_scores(np.full((3, 64, 64), 7.0), 16, 0)
    assert all(math.isnan(v) for v in scores.values())
    # a tile within one chip has no chip edge: nan whatever the texture
    assert math.isnan(seam_ratio(_white(size=24), 32, 8))


# -- seamless imagery --------------------------------------------------------------------
@pytest.mark.parametrize("texture", [_white, _smooth], ids=["white", "smooth"])
@pytest.mark.parametrize(("chip", "overlap"), [(32, 0), (64, 16)])
def test_seamless_textures_score_one_and_no_peak(texture: object, chip: int, overlap: int) -> None:
    scores = seam_scores(texture(), chip, overlap)  # type: ignore[operator]
    assert scores["seam_ratio"] == pytest.approx(1, abs=0.1)
    assert abs(scores["acf_peak"]) < 0.05 and abs(scores["acf_step"]) < 0.05


def test_autocorrelation_is_the_mean_over_the_two_axes() -> None:
    # a sinusoid of period 16 along x, constant along y: the high-passed residual is the
    # same sinusoid scaled, so x gives cos(2 pi lag / 16) and y (identical rows) gives 1
    x = np.cos(2 * np.pi * np.arange(256) / 16)
    image = np.broadcast_to(x, (2, 128, 256))
    acf = autocorrelation(image, [4, 8, 16])
    assert acf[16] == pytest.approx(1.0, abs=0.01)
    assert acf[8] == pytest.approx(0.0, abs=0.01)  # (-1 + 1) / 2
    assert acf[4] == pytest.approx(0.5, abs=0.01)  # (0 + 1) / 2


# -- seams -------------------------------------------------------------------------------
@pytest.mark.parametrize(("size", "borders"), [(128, 3), (100, 4)])
def test_constant_chips_score_the_floored_ratio(size: int, borders: int) -> None:
    # zero gradient inside the chips: the denominator is the floor, GRADIENT_FLOOR times
    # the profile's mean = sum(border values) / n, so ratio = n / (borders * GRADIENT_FLOOR)
    # exactly on both axes, whatever the chips' values (n = size - 1 differences)
    ratio = seam_ratio(_constant_chips(size, size, 32), 32, 0)
    assert ratio == pytest.approx((size - 1) / (borders * GRADIENT_FLOOR), rel=1e-9)
    assert ratio > 10_000


def test_steps_between_noisy_chips_score_step_over_noise() -> None:
    # chips alternate between 0 and 10 (a chip-sized checkerboard) under unit white noise:
    # across an edge |10 + N(0, 2)| ~ 10, elsewhere median |N(0, 2)| ~ 2 / sqrt(pi)
    step = 10.0
    blocks = _chips(256, 256, 32, 0, lambda i, j: step * ((i + j) % 2))
    ratio = seam_ratio(blocks + _white(size=256), 32, 0)
    assert ratio == pytest.approx(step * math.sqrt(math.pi) / 2, rel=0.05)


# -- repetition at the chip step ---------------------------------------------------------
@pytest.mark.parametrize("overlap", [0, 8])
def test_texture_fixed_in_chip_coordinates_peaks_at_the_step(overlap: int) -> None:
    # a "checkerboard generator": every chip is the same random texture, tiled at the
    # stride chip - overlap, plus independent noise of the same variance
    pattern = np.random.default_rng(1).normal(size=(3, 32, 32))
    noise = _white(seed=2, size=256)
    scores = seam_scores(_chips(256, 256, 32, overlap, lambda i, j: pattern) + noise, 32, overlap)
    assert scores["acf_peak"] > 0.3
    if overlap == 0:  # exactly periodic: half the (high-passed) variance repeats
        assert scores["acf_step"] == pytest.approx(0.5, abs=0.03)
    alone = seam_scores(noise, 32, overlap)
    assert abs(alone["acf_peak"]) < 0.05


# -- tiles made by the tile synthesiser --------------------------------------------------
class ConstantGenerator(ToyChipGenerator):
    """Every chip the same constant (the style): a seamless, flat tile."""

    out_bands = 3
    z_dim = 3

    def generate(self, onehot: Tensor, z: Tensor) -> Tensor:
        b, _, h, w = onehot.shape
        return z[:, :, None, None].expand(b, self.out_bands, h, w).clone()

    def encode(self, image: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class CheckerGenerator(ConstantGenerator):
    """A smooth checkerboard cos(2 pi x / 12) cos(2 pi y / 12) in chip coordinates.

    The period does not divide the chip, so the pattern restarts out of phase at every
    chip edge: from x = 31 (cos(31 pi / 6) = -cos(pi / 6)) to x = 0 (1).
    """

    period = 12

    def generate(self, onehot: Tensor, z: Tensor) -> Tensor:
        b, _, h, w = onehot.shape
        y, x = torch.arange(h).view(h, 1), torch.arange(w).view(1, w)
        wave = torch.cos(2 * math.pi * x / self.period) * torch.cos(2 * math.pi * y / self.period)
        return wave.expand(b, self.out_bands, h, w).clone()


def _synthesise(generator: nn.Module, overlap: int, tmp_path: Path) -> tuple[np.ndarray, Path]:
    mask = tmp_path / "masks" / "t.tif"
    mask.parent.mkdir(parents=True)
    with rasterio.open(
        mask,
        "w",
        driver="GTiff",
        width=128,
        height=128,
        count=1,
        dtype="uint8",
        crs="EPSG:32618",
        transform=from_origin(500000, 4000000, 2, 2),
    ) as dst:
        dst.write(np.ones((1, 128, 128), np.uint8))
    request = make_requests([("t", mask, None)], tmp_path / "out", 1, 0)[0]
    synth = TileSynthesizer(
        generator=generator,  # type: ignore[arg-type]
        mean=[100.0] * 3,
        std=[30.0] * 3,
        ignore_index=0,
        overlap=overlap,
        batch_size=4,
        dtype="float32",
    )
    synth.run(request)
    with rasterio.open(request.output) as src:
        return src.read(), request.output


def test_synthesised_constant_tile_is_seamless(tmp_path: Path) -> None:
    image, path = _synthesise(ConstantGenerator(), 8, tmp_path)
    assert sample_grid(path, {}) == (32, 8)
    # flat up to the float32 rounding of the blend (an ulp here and there): no gradient
    assert np.ptp(image, axis=(1, 2)).max() < 1e-4
    assert all(math.isnan(v) for v in seam_scores(image, 32, 8).values())


def test_synthesised_checkerboard_in_chip_coordinates_has_seams(tmp_path: Path) -> None:
    image, path = _synthesise(CheckerGenerator(), 0, tmp_path)
    grid = sample_grid(path, {})
    assert grid == (32, 0)
    scores = seam_scores(image, *grid)
    # per axis: the step at an edge, 1 + cos(pi / 6), over the median inside the chips of
    # |cos(2 pi (x + 1) / 12) - cos(2 pi x / 12)| = 2 sin(pi / 12) sin(pi / 4) = cos(pi / 6)
    # - cos(pi / 3) (the other axis's factor is the same at every position and cancels)
    assert scores["seam_ratio"] == pytest.approx((5 + 3 * math.sqrt(3)) / 2, rel=1e-4)
    assert scores["acf_peak"] > 0.3


def test_lag_correlation_is_pearson_on_uncentred_residuals() -> None:
    """Known answers on hand-made residuals whose means are far from 0."""
    from synthsat.metrics.seams import _lag_correlations

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(6, 40)) + 5.0).astype(np.float32)
    out = _lag_correlations(x, [0, 3, 7, 40], axis=1, flat=0.0)
    assert sorted(out) == [3, 7]  # lag 0 and lags >= the length are skipped
    for lag in (3, 7):
        a, b = x[:, : 40 - lag].ravel(), x[:, lag:].ravel()
        assert out[lag] == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-6)
    # axis 0 correlates along the rows: the transpose along axis 1
    assert _lag_correlations(x.T.copy(), [3], axis=0, flat=0.0)[3] == pytest.approx(out[3])
    # a side with a standard deviation at most ``flat`` is left out, the rest kept
    y = x.copy()
    y[:, :15] = 5.0  # at lag 25 the first side is y[:, :15]: flat
    assert sorted(_lag_correlations(y, [3, 25], axis=1, flat=1e-3)) == [3]


def test_acf_peak_is_the_step_minus_its_neighbours() -> None:
    from synthsat.metrics.seams import autocorrelation, step_autocorrelation

    texture = np.random.default_rng(3).normal(size=(3, 16, 16))
    image = _chips(96, 96, 16, 0, lambda i, j: texture)
    scores = step_autocorrelation(image, 16)
    near = [14, 18, 13, 19, 12, 20]
    acf = autocorrelation(image, [16, *near])
    assert scores["acf_step"] == pytest.approx(acf[16])
    assert scores["acf_peak"] == pytest.approx(acf[16] - np.mean([acf[lag] for lag in near]))
    # small steps only compare with the positive lags
    small = step_autocorrelation(image, 3)
    acf3 = autocorrelation(image, [3, 1, 5, 6, 7])
    assert small["acf_peak"] == pytest.approx(acf3[3] - np.mean([acf3[k] for k in (1, 5, 6, 7)]))
    assert autocorrelation(image[0], [16])[16] == pytest.approx(
        autocorrelation(image[:1], [16])[16]
    )
