"""Fidelity and diversity metrics of synthetic imagery, on inputs with known answers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from conftest import toy_datamodule
from hydra import compose, initialize_config_dir
from rasterio.transform import Affine
from torch import Tensor, nn

from synthsat.data import LandCoverDataModule
from synthsat.data.cache import resample_image
from synthsat.data.datasets import Normalizer
from synthsat.data.errors import DataError
from synthsat.data.raster_io import read_raster
from synthsat.data.synthetic_tiles import PROVENANCE_TAG, find_samples
from synthsat.data.toyworld import CLASSES
from synthsat.jobs.evaluate_synthetic import run
from synthsat.metrics.consistency import consistency_miou
from synthsat.metrics.diversity import ms_ssim_betas, ms_ssim_diversity, pairwise_l1
from synthsat.metrics.fidelity import (
    INCEPTION_WEIGHTS_FILE,
    FidelityUnavailableError,
    fid_kid,
    fid_kid_from_features,
    find_inception_weights,
    to_uint8,
)
from synthsat.metrics.frechet import (
    feature_frechet_distance,
    frechet_distance,
    gaussian_fit,
    pooled_features,
)
from synthsat.metrics.seams import GRADIENT_FLOOR, SEAM_KEYS, seam_scores
from synthsat.metrics.segmentation import SegmentationScores
from synthsat.metrics.segmenter import Segmenter
from synthsat.metrics.spectral import (
    class_pixel_positions,
    gather_pixels,
    spectral_distances,
    wasserstein_per_band,
)
from synthsat.metrics.synthetic import sample_grid, synthetic_metrics
from synthsat.synthesis.windows import ChipGrid

REPO = Path(__file__).resolve().parents[1]


# -- spectral distance -------------------------------------------------------------------
def _tiles(seed: int = 0, n: int = 2, size: int = 32) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    images = [rng.normal(100, 20, (3, size, size)) for _ in range(n)]
    masks = [rng.integers(0, 4, (size, size)) for _ in range(n)]  # 0 = ignore
    return images, masks


def test_wasserstein_identical_is_zero_and_shift_is_the_shift() -> None:
    images, masks = _tiles()
    same = spectral_distances(images, [[im, im] for im in images], masks, [1, 2, 3])
    assert sorted(same) == [1, 2, 3]
    for d in same.values():
        np.testing.assert_allclose(d, 0, atol=1e-12)
    shift = np.array([5.0, -2.0, 0.5])[:, None, None]
    # subsampled (max_pixels below the class counts): same positions, so still exactly c
    shifted = spectral_distances(
        images, [[im + shift] for im in images], masks, [1, 2, 3], max_pixels=100
    )
    for d in shifted.values():
        np.testing.assert_allclose(d, [5.0, 2.0, 0.5], atol=1e-9)


def test_wasserstein_compares_classes_separately() -> None:
    images, masks = _tiles()
    synthetic = [[np.where(m == 2, im + 7, im)] for im, m in zip(images, masks)]
    d = spectral_distances(images, synthetic, masks, [1, 2, 3])
    np.testing.assert_allclose(d[2], 7, atol=1e-9)
    np.testing.assert_allclose(d[1], 0, atol=1e-12)
    np.testing.assert_allclose(d[3], 0, atol=1e-12)


def test_pixel_sample_is_uniform_capped_and_reproducible() -> None:
    _, masks = _tiles(n=3)
    a = class_pixel_positions(masks, [1, 2], max_pixels=50, seed=1)
    b = class_pixel_positions(masks, [1, 2], max_pixels=50, seed=1)
    for c in (1, 2):
        assert sum(len(p.get(c, [])) for p in a) == 50
        for t, p in enumerate(a):
            assert np.array_equal(p[c], b[t][c])
            assert np.all(masks[t].ravel()[p[c]] == c)
    everything = class_pixel_positions(masks, [1], max_pixels=10**9)
    assert sum(len(p[1]) for p in everything) == sum(int((m == 1).sum()) for m in masks)


# -- Fréchet distance --------------------------------------------------------------------
def test_frechet_identical_zero_and_mean_shift_squared() -> None:
    x = torch.randn(200, 6, generator=torch.Generator().manual_seed(0))
    m = torch.tensor([1.0, -2.0, 0.0, 0.5, 3.0, 0.0])
    assert feature_frechet_distance(x, x) == pytest.approx(0, abs=1e-8)
    assert feature_frechet_distance(x, x + m) == pytest.approx(float(m.square().sum()), rel=1e-6)
    eye = torch.eye(3)
    # N(0, 4 I) vs N(0, I): 3 * (2 - 1)^2
    assert frechet_distance(torch.zeros(3), 4 * eye, torch.zeros(3), eye) == pytest.approx(3)


def test_frechet_matches_torchmetrics_fid_on_the_same_features() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(64, 5, generator=g), torch.randn(64, 5, generator=g) * 1.5 + 0.3
    ours = feature_frechet_distance(a, b)
    theirs = fid_kid_from_features(a, b, kid_subsets=2, kid_subset_size=16)["fid"]
    assert ours == pytest.approx(theirs, rel=1e-5)


def test_pooled_features_take_the_deepest_map() -> None:
    maps = [torch.ones(2, 3, 8, 8), torch.arange(2 * 4 * 4.0).view(2, 1, 4, 4).expand(2, 5, 4, 4)]
    f = pooled_features(lambda x: maps, torch.zeros(2, 3, 8, 8))
    assert f.shape == (2, 5)
    torch.testing.assert_close(f[:, 0], torch.tensor([7.5, 23.5]))


# -- diversity ---------------------------------------------------------------------------
def test_identical_samples_have_zero_diversity() -> None:
    one = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    same = one.expand(4, -1, -1, -1)
    assert pairwise_l1(same) == 0
    assert ms_ssim_diversity(same) == pytest.approx(0, abs=1e-5)
    different = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert ms_ssim_diversity(different) > 0.5


def test_pairwise_l1_is_the_mean_over_pairs() -> None:
    samples = torch.stack([torch.full((2, 8, 8), float(v)) for v in (0, 1, 2)])
    assert pairwise_l1(samples) == pytest.approx((1 + 2 + 1) / 3)
    with pytest.raises(ValueError, match="at least 2 samples"):
        pairwise_l1(samples[:1])


def test_ms_ssim_scales_fit_small_images() -> None:
    assert len(ms_ssim_betas(256)) == 5
    assert sum(ms_ssim_betas(32)) == pytest.approx(1)
    assert len(ms_ssim_betas(32)) < 5
    with pytest.raises(ValueError, match="too small"):
        ms_ssim_betas(8)


# -- segmentation consistency ------------------------------------------------------------
class BandThreshold(nn.Module):
    """A stand-in 'real-trained' segmenter: class = round(band 0); deepest features = image."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.register_buffer("levels", torch.arange(num_classes, dtype=torch.float32))
        self.encoder = nn.Sequential(nn.AvgPool2d(4), nn.Conv2d(3, 6, 1))

    def forward(self, x: Tensor) -> Tensor:
        return -(x[:, :1] - self.levels.view(1, -1, 1, 1)).abs()


def _consistency_data() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    masks = torch.randint(0, 4, (6, 16, 16), generator=g)
    images = masks[:, None].float().expand(-1, 3, -1, -1).clone()
    images[:, 0, :4] = 3.0  # the real imagery fools the model in the top rows
    return images, masks


def test_perfect_generator_scores_the_real_mious() -> None:
    images, masks = _consistency_data()
    model = BandThreshold()
    real = consistency_miou(model, images, masks, 4, [1, 2, 3], ignore_index=0)
    # by hand: the top 4 rows are predicted 3, the rest exactly; class 0 is ignored
    pred = masks.clone()
    pred[:, :4] = 3
    labelled = masks != 0
    ious = []
    for c in (1, 2, 3):
        p, t = (pred == c) & labelled, (masks == c) & labelled
        ious.append(((p & t).sum() / (p | t).sum()).item())
    assert real["miou"] == pytest.approx(np.mean(ious), rel=1e-6)
    assert 0.3 < real["miou"] < 1  # not trivially perfect
    faithful = masks[:, None].float().expand(-1, 3, -1, -1)
    assert consistency_miou(model, faithful, masks, 4, [1, 2, 3], 0)["miou"] == 1.0
    blank = torch.zeros_like(images)
    assert consistency_miou(model, blank, masks, 4, [1, 2, 3], 0)["miou"] == 0.0


# -- FID / KID ---------------------------------------------------------------------------
def test_fid_without_weights_says_which_file_goes_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FidelityUnavailableError) as err:
        find_inception_weights()
    msg = str(err.value)
    assert INCEPTION_WEIGHTS_FILE in msg
    assert str(tmp_path / "hub" / "checkpoints" / INCEPTION_WEIGHTS_FILE) in msg
    assert "fid.weights_path" in msg and "fid.enabled=false" in msg
    with pytest.raises(FidelityUnavailableError, match="configured Inception weights file"):
        find_inception_weights(tmp_path / "nowhere.pth")


class TinyFeatures(nn.Module):
    """A random-init stand-in for Inception: uint8 (B, 3, H, W) -> (B, 8)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.float() / 255)


def test_fid_kid_with_a_custom_feature_extractor() -> None:
    g = torch.Generator().manual_seed(0)
    real = torch.randint(0, 200, (24, 3, 32, 32), generator=g, dtype=torch.uint8)
    same = fid_kid(real, real.clone(), TinyFeatures(), kid_subsets=5, kid_subset_size=12)
    assert same["fid"] == pytest.approx(0, abs=1e-4)
    assert abs(same["kid_mean"]) < 1e-4
    brighter = fid_kid(real, real + 50, TinyFeatures(), kid_subsets=5, kid_subset_size=12)
    assert brighter["fid"] > 1e-3 and brighter["kid_mean"] > 0


def test_to_uint8_scales_per_band() -> None:
    x = torch.tensor([0.0, 50.0, 100.0, 200.0]).view(1, 1, 2, 2).expand(1, 2, 2, 2)
    u = to_uint8(x, torch.tensor([0.0, 100.0]), torch.tensor([100.0, 200.0]))
    assert u.dtype == torch.uint8
    assert u[0, 0].flatten().tolist() == [0, 128, 255, 255]
    assert u[0, 1].flatten().tolist() == [0, 0, 0, 255]


# -- the whole set, and the command ------------------------------------------------------
def _write_samples(
    dm: LandCoverDataModule,
    out: Path,
    offsets: list[float] | list[np.ndarray],
    split: str = "train",
    grid: dict[str, int] | None = None,
) -> None:
    """Shifted copies of the real tiles (an offset per sample, scalar or per band);
    ``grid`` (chip_size, overlap) goes in the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    for tile in dm.tiles[split]:
        with rasterio.open(tile.pair.image) as src:
            profile, image = src.profile, src.read().astype(np.float64)
        for k, offset in enumerate(offsets):
            with rasterio.open(out / f"{tile.name}_s{k}.tif", "w", **profile) as dst:
                shift = np.asarray(offset, np.float64).reshape(-1, 1, 1)
                dst.write(np.clip(image + shift, 0, 255).astype(np.uint8))
    (out / "manifest.json").write_text(
        json.dumps(
            {
                "outputs": [
                    {"path": p.name, "checkpoint": "gen.ckpt", "lambda_div": 8.0, **(grid or {})}
                    for p in sorted(out.glob("*.tif"))
                ]
            }
        )
    )


class ToySegmenter(nn.Module):
    """A random-init 4-band segmenter with an encoder, for the whole-set metrics."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(8, 7, 1))
        self.encoder_calls = 0
        self.encoder.register_forward_hook(
            lambda *_: setattr(self, "encoder_calls", self.encoder_calls + 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))


def test_segmenter_reads_the_encoder_inside_the_forward_pass() -> None:
    model = ToySegmenter().eval()
    x = torch.randn(3, 4, 32, 32)
    seg = Segmenter(model, Normalizer(np.zeros(4), np.ones(4)), model.encoder)
    logits, features = seg.predict(x)
    assert model.encoder_calls == 1 and logits.shape == (3, 7, 32, 32)
    assert features is not None
    torch.testing.assert_close(features, model.encoder(x).mean(dim=(2, 3)))
    # an encoder the forward pass does not use is called on its own
    other = nn.Conv2d(4, 5, 1)
    _, features = Segmenter(model, seg.normalizer, other).predict(x)
    assert features is not None and features.shape == (3, 5)


def _segmenter(dm: LandCoverDataModule) -> Segmenter:
    assert dm.normalizer is not None
    model = ToySegmenter().eval()
    return Segmenter(model, Normalizer(dm.normalizer.mean, dm.normalizer.std), model.encoder)


def _shifted_metrics(dm: LandCoverDataModule, out: Path, offsets: list[float], **kw: Any) -> dict:
    """The metrics of shifted copies of the training tiles (:func:`_write_samples` of
    ``offsets`` into ``out``), segmented by :func:`_segmenter`, on at most 6 chips of 64 px."""
    _write_samples(dm, out, offsets)
    segmenter = _segmenter(dm)
    return synthetic_metrics(
        dm.tiles["train"], out, dm.metadata(), segmenter, chip_size=64, max_chips=6, **kw
    )


def test_perfect_synthetic_set_scores_zero_distance(toy_root: Path, tmp_path: Path) -> None:
    dm = toy_datamodule(toy_root, tmp_path / "cache")
    fid = {"enabled": True, "kid_subsets": 3}
    m = _shifted_metrics(dm, tmp_path / "synth", [0.0, 0.0], fid=fid, fid_extractor=TinyFeatures())
    assert m["spectral_w1"] == pytest.approx(0, abs=1e-12)
    assert m["diversity_l1"] == 0 and m["diversity_ms_ssim"] == pytest.approx(0, abs=1e-5)
    assert m["consistency_miou"] == pytest.approx(m["real_miou"])
    assert m["domain_fd"] == pytest.approx(0, abs=1e-6)
    assert m["fid"] == pytest.approx(0, abs=1e-6)
    assert abs(m["kid_mean"]) < 1e-4  # unbiased MMD^2 of random subsets: 0 on average
    info = m["info"]
    assert info["tiles"] == 2 and info["samples_per_tile"] == 2 and info["chips"] == 6
    assert info["synthesis"] == {"outputs": 4, "checkpoint": "gen.ckpt", "lambda_div": 8.0}
    assert set(m["details"]["spectral_w1"]["water"]) == {"b0", "b1", "b2", "b3"}
    # no chip grid recorded: no seam metrics, and a note saying why
    assert all(m[key] is None and m[f"{key}_real"] is None for key in SEAM_KEYS)
    assert info["seam_grids"] == [] and "chip_size / overlap" in info["seam_note"]


def _tag_grid(path: Path, chip_size: int, overlap: int) -> None:
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(
            **{PROVENANCE_TAG: json.dumps({"chip_size": chip_size, "overlap": overlap})}
        )


def test_seam_metrics_on_the_samples_chip_grid(toy_root: Path, tmp_path: Path) -> None:
    dm = toy_datamodule(toy_root, tmp_path / "cache")
    tiles, out = dm.tiles["train"], tmp_path / "synth"

    def metrics() -> dict:
        return synthetic_metrics(
            tiles, out, dm.metadata(), None, chip_size=64, max_chips=2, fid={"enabled": False}
        )

    # copies of the real tiles, grid from the manifest: samples score what the real tiles do
    _write_samples(dm, out, [0.0, 0.0], grid={"chip_size": 32, "overlap": 8})
    m = metrics()
    real = [seam_scores(t.image, 32, 8) for t in tiles]
    for key in SEAM_KEYS:
        assert m[key] == m[f"{key}_real"] == pytest.approx(np.mean([r[key] for r in real]))
    assert 0.5 < m["seam_ratio"] < 2 and abs(m["acf_peak"]) < 0.1  # the toy world is seamless
    assert m["info"]["seam_grids"] == [[32, 8]] and m["info"]["seam_note"] is None
    assert set(m["details"]["seams"]) == {t.name for t in tiles}

    # the provenance tag of a sample wins over the manifest; sample 1 is made of constant
    # chips on that grid: its seam ratio is n / (borders * floor) on both axes (127 / 3)
    # and the tile's score is the mean over its two samples
    for tile in tiles:
        rng = np.random.default_rng(0)
        grid = ChipGrid(128, 128, 32, 0)
        blocky = np.zeros((4, 128, 128), np.uint8)
        for r in grid.rows:
            for c in grid.cols:
                blocky[:, r : r + 32, c : c + 32] = rng.integers(0, 256, (4, 1, 1))
        path = out / f"{tile.name}_s1.tif"
        with rasterio.open(path, "r+") as dst:
            dst.write(blocky)
        for k in (0, 1):
            _tag_grid(out / f"{tile.name}_s{k}.tif", 32, 0)
    m = metrics()
    real = [seam_scores(t.image, 32, 0) for t in tiles]
    expected = np.mean([(r["seam_ratio"] + 127 / (3 * GRADIENT_FLOOR)) / 2 for r in real])
    assert m["seam_ratio"] == pytest.approx(expected, rel=1e-9)
    assert m["seam_ratio_real"] == pytest.approx(np.mean([r["seam_ratio"] for r in real]))
    assert m["info"]["seam_grids"] == [[32, 0]]


def test_shifted_samples_show_in_every_metric(toy_root: Path, tmp_path: Path) -> None:
    dm = toy_datamodule(toy_root, tmp_path / "cache")
    m = _shifted_metrics(dm, tmp_path / "synth", [0.0, 30.0], fid={"enabled": False})
    assert m["spectral_w1"] > 0 and m["diversity_l1"] > 0 and m["diversity_ms_ssim"] > 0
    assert m["domain_fd"] > 0
    assert m["fid"] is None and "disabled" in m["info"]["fid_note"]
    # one sample per tile: no diversity, the rest still there
    for path in (tmp_path / "synth").glob("*_s1.tif"):
        path.unlink()
    synth, off = tmp_path / "synth", {"enabled": False}
    m = synthetic_metrics(dm.tiles["train"], synth, dm.metadata(), None, chip_size=64, fid=off)
    assert m["diversity_l1"] is None and m["consistency_miou"] is None
    assert m["spectral_w1"] == pytest.approx(0, abs=1e-12)


def test_bad_synthetic_inputs_are_named(toy_root: Path, tmp_path: Path) -> None:
    dm = toy_datamodule(toy_root, tmp_path / "cache")
    with pytest.raises(DataError, match="does not exist"):
        find_samples(tmp_path / "missing", ["tile_000"])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "elsewhere_s0.tif").write_bytes(b"")
    with pytest.raises(DataError, match="elsewhere_s0.tif"):
        find_samples(tmp_path / "other", ["tile_000"])
    tile = dm.tiles["train"][0]
    bad = tmp_path / "bad"
    bad.mkdir()
    with rasterio.open(tile.pair.image) as src:
        profile = {**src.profile, "width": 64, "height": 64}
    with rasterio.open(bad / f"{tile.name}_s0.tif", "w", **profile) as dst:
        dst.write(np.zeros((4, 64, 64), np.uint8))
    # half the size on the tile's own pixel size: a quarter of its extent (as mixing says)
    with pytest.raises(
        DataError,
        match=f"{tile.name}_s0.tif: synthetic image is 64x64 px but its mask .* is 128x128 px, "
        "and it does not cover the mask's extent",
    ):
        synthetic_metrics([tile], bad, dm.metadata(), fid={"enabled": False})
    with rasterio.open(bad / f"{tile.name}_s0.tif", "w", **{**profile, "count": 3}) as dst:
        dst.write(np.zeros((3, 64, 64), np.uint8))
    with pytest.raises(DataError, match=f"{tile.name}_s0.tif: synthetic tile is 64x64 px with 3"):
        synthetic_metrics([tile], bad, dm.metadata(), fid={"enabled": False})
    with pytest.raises(FidelityUnavailableError):
        synthetic_metrics(
            [tile],
            bad,
            dm.metadata(),
            fid={"enabled": True, "weights_path": str(tmp_path / "no.pth")},
        )


def test_command_writes_metrics_json(
    toy_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dm = toy_datamodule(toy_root, tmp_path / "cache")
    _write_samples(dm, tmp_path / "synth", [0.0, 10.0], grid={"chip_size": 32, "overlap": 8})
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # no weights there
    run_dir = tmp_path / "run"
    overrides = [
        f"synthetic={tmp_path / 'synth'}",
        f"data.source.root={toy_root}",
        "data.source.tiles=4",
        "data.source.size=128",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.num_workers=0",
        "data.patch_size=64",
        "chip_size=64",
        "max_chips=4",
        "max_pixels=5000",
        "fid.enabled=auto",
        f"paths.root={tmp_path}",
        f"paths.output_dir={run_dir}",
        "device=cpu",
        "logger=csv",
    ]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="evaluate_synthetic", overrides=overrides)
    run(cfg)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["spectral_w1"] > 0 and metrics["diversity_l1"] > 0
    assert metrics["fid"] is None and INCEPTION_WEIGHTS_FILE in metrics["info"]["fid_note"]
    assert metrics["info"]["split"] == "train" and (run_dir / "config.yaml").exists()
    logged = (run_dir / "csv" / "metrics.csv").read_text()
    assert "synthetic/spectral_w1" in logged and "synthetic/fid" not in logged
    for key in SEAM_KEYS:
        assert isinstance(metrics[key], float) and isinstance(metrics[f"{key}_real"], float)
        assert f"synthetic/{key}" in logged
    assert metrics["info"]["seam_grids"] == [[32, 8]]


def test_real_segmentation_checkpoint_is_wired_in(toy_root: Path, tmp_path: Path) -> None:
    import lightning as L

    from synthsat.jobs.evaluate_synthetic import load_segmenter
    from synthsat.tasks.segmentation import SegmentationTask

    dm = toy_datamodule(toy_root, tmp_path / "cache")
    task = SegmentationTask(metadata=dm.metadata(), backbone="resnet18", encoder_depth=3)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(task)
    trainer.save_checkpoint(tmp_path / "seg.ckpt")
    segmenter = load_segmenter(tmp_path / "seg.ckpt", dm.metadata(), torch.device("cpu"))
    _write_samples(dm, tmp_path / "synth", [0.0, 0.0])
    tiles, synth = dm.tiles["train"], tmp_path / "synth"
    m = synthetic_metrics(
        tiles, synth, dm.metadata(), segmenter, chip_size=64, max_chips=3, fid={"enabled": False}
    )
    assert m["consistency_miou"] == pytest.approx(m["real_miou"])
    assert m["domain_fd"] == pytest.approx(0, abs=1e-6)
    with pytest.raises(DataError, match="bands=3"):
        load_segmenter(tmp_path / "seg.ckpt", {**dm.metadata(), "bands": 3}, torch.device("cpu"))


class PixelSegmenter(nn.Module):
    """A per-pixel segmenter whose encoder is the identity on the (normalised) bands."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Conv2d(4, 4, 1, bias=False)
        with torch.no_grad():
            self.encoder.weight.copy_(torch.eye(4).view(4, 4, 1, 1))
        self.head = nn.Conv2d(4, 7, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))


class ChannelMeans(nn.Module):
    """FID features: the per-channel means of the uint8 composite."""

    def forward(self, x: Tensor) -> Tensor:
        return x.float().mean(dim=(2, 3))


def _shifted_set_metrics(
    dm: LandCoverDataModule, tiles: list, out: Path, fid_bands: list[int]
) -> tuple[nn.Module, dict]:
    """Samples s0 = the real tile, s1 = the real tile + 10 on band 0, scored with a
    per-pixel segmenter and channel-mean FID features; returns the segmenter's model too."""
    assert dm.normalizer is not None
    _write_samples(dm, out, [np.zeros(4), np.array([10.0, 0, 0, 0])])
    model = PixelSegmenter().eval()
    norm = Normalizer(dm.normalizer.mean, dm.normalizer.std)
    fid = {"enabled": True, "kid_subsets": 2, "kid_subset_size": 4, "bands": fid_bands}
    segmenter = Segmenter(model, norm, model.encoder)
    kwargs = dict(chip_size=64, max_chips=None, fid=fid, fid_extractor=ChannelMeans())
    return model, synthetic_metrics(tiles, out, dm.metadata(), segmenter, **kwargs)


def test_known_shift_gives_known_values(toy_root: Path, tmp_path: Path) -> None:
    """Sample 0 copies each real tile, sample 1 adds 10 to band 0 (no clipping: the toy
    world's band 0 stays below 245). Every metric then has a closed-form value."""
    dm = toy_datamodule(toy_root, tmp_path / "cache")
    tiles, norm = dm.tiles["train"], dm.normalizer
    assert norm is not None and max(int(t.image[0].max()) for t in tiles) <= 245
    model, m = _shifted_set_metrics(dm, tiles, tmp_path / "synth", [0, 1, 2])
    s0 = float(norm.std[0])
    # W1(P, (P + (P + 10)) / 2) = 5 on band 0 of every class, 0 elsewhere; / std, band mean
    assert m["spectral_w1"] == pytest.approx(5 / s0 / 4, rel=1e-9)
    for per_band in m["details"]["spectral_w1"].values():
        assert per_band["b0"] == pytest.approx(5.0) and per_band["b1"] == 0
    # the two samples differ by 10 / std on one band of four
    assert m["diversity_l1"] == pytest.approx(10 / s0 / 4, rel=1e-6)
    # the encoder features move by (10 / std, 0, 0, 0) on sample 1, not at all on sample 0
    assert m["domain_fd"] == pytest.approx((10 / s0) ** 2 / 2, rel=1e-3)
    # FID features move by (10, 0, 0) on sample 1
    assert m["fid"] == pytest.approx(100 / 2, rel=1e-3)
    assert m["info"]["chips"] == 8 and m["info"]["samples_per_tile"] == 2

    # consistency: the segmenter on the samples against the masks, by a separate path
    def scores(*offsets: float) -> float:
        out = SegmentationScores(7, dm.metadata()["scored_classes"], 0)
        for offset in offsets:
            for tile in tiles:
                image = tile.image.astype(np.float32)
                image[0] += offset
                x = torch.from_numpy(norm(image))[None]
                with torch.no_grad():
                    out.update(model(x), torch.from_numpy(tile.mask.astype(np.int64))[None])
        return out.compute()["miou"]

    assert m["real_miou"] == pytest.approx(scores(0.0), rel=1e-9)
    assert m["consistency_miou"] == pytest.approx(scores(0.0, 10.0), rel=1e-9)
    assert m["consistency_miou"] != pytest.approx(m["real_miou"])


# -- known values and named errors of the metric building blocks ---------------------------------
def test_pixel_positions_values_and_errors() -> None:
    masks = [np.array([[1, 2], [1, 1]]), np.array([[2, 2], [0, 1]])]
    everything = class_pixel_positions(masks, [1, 2, 5], max_pixels=100)
    assert [sorted(p) for p in everything] == [[1, 2], [1, 2]]  # absent class 5 left out
    np.testing.assert_array_equal(everything[0][1], [0, 2, 3])
    np.testing.assert_array_equal(everything[1][2], [0, 1])
    capped = class_pixel_positions(masks, [1], max_pixels=2, seed=3)
    taken = np.concatenate([p.get(1, []) for p in capped])
    assert taken.size == 2 and all(np.all(np.diff(p[1]) > 0) for p in capped if 1 in p)
    with pytest.raises(ValueError, match="max_pixels must be positive, got 0"):
        class_pixel_positions(masks, [1], max_pixels=0)


def test_gather_and_per_band_wasserstein_values() -> None:
    image = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3)
    got = gather_pixels(image, {4: np.array([0, 5])})
    assert got[4].dtype == np.float64
    np.testing.assert_array_equal(got[4], [[0, 5], [6, 11]])
    real = np.array([[0.0, 1.0], [5.0, 5.0]])
    synthetic = np.array([[2.0, 3.0, 2.0, 3.0], [5.0, 6.0, 5.0, 6.0]])
    np.testing.assert_allclose(wasserstein_per_band(real, synthetic), [2.0, 0.5])
    with pytest.raises(ValueError, match="band counts differ: real 2, synthetic 1"):
        wasserstein_per_band(real, synthetic[:1])
    with pytest.raises(ValueError, match="got 1 images, 2 sample lists and 1 masks"):
        spectral_distances([image], [[image], [image]], [np.zeros((2, 3), int)], [1])


def test_gaussian_fit_and_frechet_errors() -> None:
    x = torch.tensor([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]])
    mu, sigma = gaussian_fit(x)
    assert mu.dtype == torch.float64
    torch.testing.assert_close(mu, torch.tensor([2.0, 2.0], dtype=torch.float64))
    # unbiased: divide by N - 1
    torch.testing.assert_close(sigma, torch.tensor([[4.0, 3.0], [3.0, 3.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"features must be \(N, D\), got shape \(3,\)"):
        gaussian_fit(torch.zeros(3))
    with pytest.raises(ValueError, match="at least 2 feature vectors, got 1"):
        gaussian_fit(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"feature dimensions differ: \(2,\) vs \(3,\)"):
        frechet_distance(torch.zeros(2), torch.eye(2), torch.zeros(3), torch.eye(3))
    # an anisotropic pair by hand: diag(1, 4) vs diag(4, 9) -> (1 - 2)^2 + (2 - 3)^2
    d = frechet_distance(
        torch.tensor([1.0, 0.0]),
        torch.diag(torch.tensor([1.0, 4.0])),
        torch.tensor([0.0, 0.0]),
        torch.diag(torch.tensor([4.0, 9.0])),
    )
    assert d == pytest.approx(1.0 + 1.0 + 1.0)
    # a rank-deficient covariance (fewer samples than dimensions) stays finite and >= 0
    assert feature_frechet_distance(torch.randn(3, 8), torch.randn(3, 8)) >= 0


def test_pooled_features_pass_pooled_vectors_and_refuse_other_shapes() -> None:
    pooled = pooled_features(lambda x: x[:, :, 0, 0].double(), torch.ones(2, 3, 4, 4))
    assert pooled.dtype == torch.float32 and pooled.shape == (2, 3)
    with pytest.raises(ValueError, match=r"got \(2, 3, 4\)"):
        pooled_features(lambda x: x[:, :, 0], torch.ones(2, 3, 4, 4))


def test_ms_ssim_known_scales_and_the_torchmetrics_value() -> None:
    betas = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # sum 1.0001: renormalised
    assert ms_ssim_betas(256) == pytest.approx(tuple(b / sum(betas) for b in betas), rel=1e-9)
    # 32 px: only two scales fit (32 // 1 > 10, but 32 // 4 = 8 is not)
    total = 0.0448 + 0.2856
    assert ms_ssim_betas(32) == pytest.approx((0.0448 / total, 0.2856 / total))
    assert ms_ssim_betas(160) == pytest.approx(
        tuple(b / (0.0448 + 0.2856 + 0.3001 + 0.2363) for b in (0.0448, 0.2856, 0.3001, 0.2363))
    )
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as ms

    g = torch.Generator().manual_seed(0)
    samples = torch.rand(3, 2, 32, 32, generator=g) * 2
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = 1 - np.mean(
        [
            float(
                ms(samples[i : i + 1], samples[j : j + 1], data_range=2.0, betas=ms_ssim_betas(32))
            )
            for i, j in pairs
        ]
    )
    assert ms_ssim_diversity(samples, data_range=2.0) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match=r"must be \(K, C, H, W\)"):
        pairwise_l1(torch.zeros(2, 8, 8))


def test_consistency_errors_and_batches() -> None:
    images, masks = _consistency_data()
    model = BandThreshold()
    whole = consistency_miou(model, images, masks, 4, [1, 2, 3], 0, ["a", "b", "c", "d"], 6)
    batched = consistency_miou(model, images, masks, 4, [1, 2, 3], 0, ["a", "b", "c", "d"], 4)
    assert batched["confusion_matrix"] == whole["confusion_matrix"]
    assert batched["miou"] == whole["miou"] and set(whole["iou"]) == {"a", "b", "c", "d"}
    with pytest.raises(ValueError, match="do not match"):
        consistency_miou(model, images[:2], masks, 4, [1, 2, 3], 0)
    with pytest.raises(ValueError, match="model gives 4 class logits, data has 5 classes"):
        consistency_miou(model, images, masks, 5, [1, 2, 3], 0)


def test_fid_needs_both_the_package_and_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    from synthsat.metrics import fidelity

    weights = tmp_path / "w.pth"
    weights.touch()
    real_find = importlib.util.find_spec
    installed = lambda name: object() if name == "torch_fidelity" else real_find(name)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", installed)
    assert find_inception_weights(weights) == weights
    assert find_inception_weights(str(weights)) == weights
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert (
        fidelity.default_weights_path() == tmp_path / "hub" / "checkpoints" / INCEPTION_WEIGHTS_FILE
    )
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    fidelity.default_weights_path().touch()
    assert find_inception_weights() == fidelity.default_weights_path()
    with pytest.raises(FidelityUnavailableError) as err:
        find_inception_weights(tmp_path / "nowhere.pth")
    assert str(err.value) == (
        "FID/KID need torch-fidelity's InceptionV3: the configured Inception weights file "
        f"{tmp_path / 'nowhere.pth'} does not exist; download {fidelity.INCEPTION_WEIGHTS_URL} "
        f"on a machine with internet access and copy it to {fidelity.default_weights_path()} "
        f"(or anywhere, and set fid.weights_path=/path/to/{INCEPTION_WEIGHTS_FILE}). "
        "Or set fid.enabled=false; the weight-free metrics do not need it."
    )
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FidelityUnavailableError) as err:
        find_inception_weights(weights)
    assert str(err.value) == (
        "FID/KID need torch-fidelity's InceptionV3: the package torch-fidelity is not "
        "installed (pip install torch-fidelity, or torchmetrics[image]). Or set "
        "fid.enabled=false; the weight-free metrics do not need it."
    )
    with pytest.raises(
        ValueError, match=r"fid.feature must be one of \(64, 192, 768, 2048\), got 100"
    ):
        fidelity.inception_extractor(100, weights)


def test_extracted_features_and_fid_kid_settings() -> None:
    from synthsat.metrics.fidelity import extract_features

    images = torch.arange(5 * 3 * 2 * 2, dtype=torch.float32).view(5, 3, 2, 2)
    calls: list[int] = []

    class Flat(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            calls.append(x.shape[0])
            return x[:, :, :1]  # (B, 3, 1, 2): flattened to (B, 6)

    features = extract_features(Flat(), images, batch_size=2)
    assert calls == [2, 2, 1] and features.dtype == torch.float64
    torch.testing.assert_close(features, images[:, :, :1].flatten(1).double())
    with pytest.raises(ValueError, match="at least 2 real and 2 synthetic images, got 1 and 5"):
        fid_kid_from_features(features[:1], features)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(12, 3, generator=g), torch.randn(10, 3, generator=g) + 1
    first = fid_kid_from_features(a, b, kid_subsets=4, kid_subset_size=50, seed=3)
    assert first == fid_kid_from_features(a, b, kid_subsets=4, kid_subset_size=50, seed=3)
    assert first["kid_std"] > 0  # subsets of 10 (capped at the smaller set) differ
    assert first["fid"] == pytest.approx(feature_frechet_distance(a, b), rel=1e-6)
    other = fid_kid_from_features(a, b, kid_subsets=4, kid_subset_size=50, seed=4)
    assert other["kid_mean"] != first["kid_mean"]


# -- the synthetic-set helpers: sample files, manifest, chips, FID set-up -------------------------
def test_segmenter_from_a_task() -> None:
    model = ToySegmenter()

    class Task(nn.Module):
        def __init__(self, hparams: dict) -> None:
            super().__init__()
            self.hparams = hparams
            self.model = model

        def predict_logits(self, x: Tensor) -> Tensor:
            return self.model(x) * 2

    meta = {"mean": [1.0, 2.0, 3.0, 4.0], "std": [2.0, 2.0, 2.0, 2.0]}
    for key in ("metadata", "data"):
        task = Task({key: meta}).train()
        seg = Segmenter.from_task(task)
        assert not task.training
        np.testing.assert_array_equal(seg.normalizer.mean, meta["mean"])
        np.testing.assert_array_equal(seg.normalizer.std, meta["std"])
        assert seg.encoder is model.encoder
        x = torch.randn(1, 4, 8, 8)
        logits, features = seg.predict(x)
        torch.testing.assert_close(logits, model(x) * 2)
        torch.testing.assert_close(features, model.encoder(x).mean(dim=(2, 3)))
    bare = Task({"metadata": meta})
    del bare.model
    assert Segmenter.from_task(bare).encoder is None
    with pytest.raises(
        ValueError,
        match=r"^the segmentation task's hparams hold no data metadata "
        r"\('metadata': classes, bands, mean, std, \.\.\.\)$",
    ):
        Segmenter.from_task(Task({}))


def test_find_samples_names_what_it_found(tmp_path: Path) -> None:
    for name in (
        "a.txt",
        "t1_s1.tif",
        "t1_s0.TIFF",
        ".t1_s2.tif",
        "t2_s0.tif",
        "x_s0.tif",
        "t1.tif",
    ):
        (tmp_path / name).touch()
    found = find_samples(tmp_path, ["t1", "t2", "t3"])
    # synthsat.data.synthetic_tiles: a plain <tile>.tif is one more sample, after the numbered
    assert {k: [p.name for p in v] for k, v in found.items()} == {
        "t1": ["t1_s0.TIFF", "t1_s1.tif", "t1.tif"],
        "t2": ["t2_s0.tif"],
    }
    with pytest.raises(DataError) as err:
        find_samples(tmp_path, ["u1", "u2", "u3", "u4"])
    assert str(err.value) == (
        f"{tmp_path}: no synthetic sample of the 4 tile(s) asked for (expected files named "
        "<tile>_s<k>.tif for tiles such as u1, u2, u3; found t1.tif, t1_s0.TIFF, t1_s1.tif, "
        "t2_s0.tif, x_s0.tif)"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"found no GeoTIFF\)$"):
        find_samples(empty, ["t1"])


def test_manifest_and_sample_grid(tmp_path: Path) -> None:
    from synthsat.data.synthetic_tiles import read_manifest

    assert read_manifest(tmp_path) == {}
    (tmp_path / "manifest.json").write_text('{"outputs": []}')
    assert read_manifest(tmp_path) == {"outputs": 0}
    (tmp_path / "manifest.json").write_text("{}")
    assert read_manifest(tmp_path) == {"outputs": 0}
    entries = [
        {"path": "a_s0.tif", "lambda_div": 2.0, "seed": 0, "chip_size": 64},
        {"path": "a_s1.tif", "lambda_div": 2.0, "seed": 1},
    ]
    (tmp_path / "manifest.json").write_text(json.dumps({"outputs": entries}))
    assert read_manifest(tmp_path) == {"outputs": 2, "lambda_div": 2.0}
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(DataError, match=r"manifest.json: not a synthesis manifest \("):
        read_manifest(tmp_path)
    path = tmp_path / "plain.tif"  # no provenance tag: the manifest decides
    profile = dict(driver="GTiff", width=1, height=1, count=1, dtype="uint8", crs="EPSG:32640")
    with rasterio.open(path, "w", transform=rasterio.transform.from_origin(0, 1, 1, 1), **profile):
        pass
    assert sample_grid(path, {"chip_size": 64, "overlap": None}) is None
    assert sample_grid(path, {"chip_size": 64, "overlap": 8}) == (64, 8)
    assert sample_grid(path, {"chip_size": None, "overlap": 8}) is None


def test_chip_side_and_chip_selection() -> None:
    from synthsat.metrics.chips import chip_side, select_chips
    from synthsat.metrics.seams import nanmean

    assert chip_side([(100, 200)], 256) == 96
    assert chip_side([(300, 300), (40, 500)], 256) == 32
    assert chip_side([(300, 300)], 33) == 32 and chip_side([(300, 300)], 32) == 32
    assert chip_side([(20, 300)], 256) == 20 and chip_side([(16, 300)], 256) == 16
    with pytest.raises(
        DataError, match=r"^tiles of 15 px are too small for chip metrics \(need 16 px\)$"
    ):
        chip_side([(15, 300)], 256)
    every = select_chips([(64, 96), (32, 32)], 32, None, 0)
    assert every == [
        (0, 0, 0),
        (0, 0, 32),
        (0, 0, 64),
        (0, 32, 0),
        (0, 32, 32),
        (0, 32, 64),
        (1, 0, 0),
    ]
    assert select_chips([(64, 96), (32, 32)], 32, 7, 0) == every
    some = select_chips([(64, 96), (32, 32)], 32, 3, 5)
    assert len(set(some)) == 3 and set(some) <= set(every) and some == sorted(some)
    assert some == select_chips([(64, 96), (32, 32)], 32, 3, 5)
    assert {tuple(select_chips([(64, 96)], 32, 3, s)) for s in range(8)} != {tuple(some)}
    assert math.isnan(nanmean([])) and math.isnan(nanmean([float("nan")]))
    assert nanmean([float("nan"), 1.0, 3.0]) == 2.0


def test_fid_extractor_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from synthsat.metrics.fidelity import resolve_fid_extractor

    with pytest.raises(ValueError, match=r"^fid.enabled must be true, false or auto, got 'yes'$"):
        resolve_fid_extractor({"enabled": "yes"}, None, torch.device("cpu"))
    assert resolve_fid_extractor({"enabled": False}, TinyFeatures(), torch.device("cpu")) == (
        None,
        "disabled (fid.enabled=false)",
    )
    extractor = TinyFeatures().train()
    got, note = resolve_fid_extractor({"enabled": True}, extractor, torch.device("cpu"))
    assert got is extractor and note is None and not extractor.training
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    settings = {"enabled": "auto", "feature": 2048, "weights_path": str(tmp_path / "w.pth")}
    with pytest.warns(UserWarning, match="skipping FID/KID: FID/KID need torch-fidelity"):
        got, note = resolve_fid_extractor(settings, None, torch.device("cpu"))
    assert got is None and str(tmp_path / "w.pth") in note
    with pytest.raises(FidelityUnavailableError, match="w.pth does not exist"):
        resolve_fid_extractor({**settings, "enabled": True}, None, torch.device("cpu"))


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
def test_whole_set_result_layout(toy_root: Path, tmp_path: Path) -> None:
    """Every key of the result, its info and details, on a set with a tile left out."""
    dm = toy_datamodule(toy_root, tmp_path / "cache")
    tiles = dm.tiles["train"] + dm.tiles["val"]
    fid = {"enabled": True, "kid_subsets": 2, "kid_subset_size": 4, "bands": [2, 1, 0]}
    with pytest.warns(UserWarning, match="4 of 4 sample\\(s\\) record no chip_size / overlap"):
        _, m = _shifted_set_metrics(dm, tiles, tmp_path / "synth", [2, 1, 0])
    assert set(m) == {
        "spectral_w1",
        "diversity_l1",
        "diversity_ms_ssim",
        "consistency_miou",
        "real_miou",
        "domain_fd",
        "fid",
        "kid_mean",
        "kid_std",
        *SEAM_KEYS,
        *(f"{k}_real" for k in SEAM_KEYS),
        "details",
        "info",
    }
    assert all(isinstance(m[k], float) for k in ("kid_mean", "kid_std", "domain_fd", "real_miou"))
    assert m["info"] == {
        "tiles": 2,
        "tiles_without_samples": 1,
        "samples_per_tile": 2,
        "chips": 8,
        "chip_size": 64,
        "max_pixels": 200_000,
        "spectral_units": "raw pixel values; spectral_w1 = mean of W1 / band std over scored "
        "classes and bands",
        "diversity_units": "diversity_l1 in band std units; diversity_ms_ssim = 1 - MS-SSIM",
        "fid_bands": ["b2", "b1", "b0"],
        "fid_note": None,
        "segmenter": True,
        "seam_grids": [],
        "seam_note": "4 of 4 sample(s) record no chip_size / overlap (provenance tag or "
        "manifest): seams skipped",
        "synthesis": {"outputs": 4, "checkpoint": "gen.ckpt", "lambda_div": 8.0},
    }
    assert set(m["details"]) == {"spectral_w1", "consistency_iou", "real_iou"}
    assert set(m["details"]["real_iou"]) == set(CLASSES)
    # MS-SSIM diversity on the 8-bit range: the chips' samples / 255, pair by pair
    expected = []
    for tile in dm.tiles["train"]:
        base = np.asarray(tile.image, np.float32)
        for r in (0, 64):
            for c in (0, 64):
                pair = torch.from_numpy(
                    np.stack([base, base + np.array([10.0, 0, 0, 0])[:, None, None]])
                )
                chip = pair[:, :, r : r + 64, c : c + 64] / 255
                expected.append(ms_ssim_diversity(chip))
    assert m["diversity_ms_ssim"] == pytest.approx(np.mean(expected), rel=1e-5)

    def with_bands(bands: list[int]) -> dict:
        settings = {**fid, "bands": bands}
        synth = tmp_path / "synth"
        return synthetic_metrics(
            tiles, synth, dm.metadata(), chip_size=64, fid=settings, fid_extractor=ChannelMeans()
        )

    with pytest.raises(
        ValueError, match=r"^FID/KID compare 3-band composites; fid.bands=\[0, 1\]$"
    ):
        with_bands([0, 1])
    with pytest.raises(ValueError, match=r"^fid.bands=\[0, 1, 4\] but the imagery has 4 bands$"):
        with_bands([0, 1, 4])


def test_inception_extractor_is_built_from_the_local_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    import torchmetrics.image.fid as tm_fid

    from synthsat.metrics import fidelity

    built: list[dict] = []
    monkeypatch.setattr(
        tm_fid, "NoTrainInceptionV3", lambda **kw: built.append(kw) or nn.Identity()
    )
    real_find = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n: object() if n == "torch_fidelity" else real_find(n)
    )
    weights = tmp_path / "w.pth"
    weights.touch()
    assert isinstance(fidelity.inception_extractor(weights_path=weights), nn.Identity)
    fidelity.inception_extractor(768, weights)
    assert built == [
        {
            "name": "inception-v3-compat",
            "features_list": [f],
            "feature_extractor_weights_path": str(weights),
        }
        for f in ("2048", "768")
    ]
    # both problems at once, the hub-cache wording
    monkeypatch.setattr(importlib.util, "find_spec", lambda n: None)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FidelityUnavailableError) as err:
        find_inception_weights()
    assert str(err.value).startswith(
        "FID/KID need torch-fidelity's InceptionV3: the package torch-fidelity is not installed "
        "(pip install torch-fidelity, or torchmetrics[image]); the Inception weights are not in "
        f"torch's hub cache: {tmp_path / 'hub' / 'checkpoints' / INCEPTION_WEIGHTS_FILE} "
        "does not exist"
    )


def test_fid_kid_defaults_and_subset_caps() -> None:
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(12, 3, generator=g), torch.randn(10, 3, generator=g) + 0.5
    assert fid_kid_from_features(a, b) == fid_kid_from_features(a, b, 100, 1000, 0)
    assert fid_kid(a, b, nn.Identity()) == fid_kid_from_features(a, b, 100, 1000, 0)
    assert fid_kid_from_features(a, b, 4, 10, 0) != fid_kid_from_features(a, b, 4, 9, 0)
    assert fid_kid_from_features(a, b, 4, 50, 0) == fid_kid_from_features(a, b, 4, 10, 0)
    assert fid_kid_from_features(a, b, 4, 9, 0) != fid_kid_from_features(a, b, 5, 9, 0)
    two = fid_kid_from_features(a[:2], b[:2], 2, 2, 0)  # the smallest sets allowed
    assert math.isfinite(two["fid"])
    # a value range narrower than 1 is scaled, not divided by a floor of 1
    x = torch.tensor([0.0, 0.25, 0.5]).view(1, 1, 1, 3)
    assert to_uint8(x, torch.tensor([0.0]), torch.tensor([0.5])).flatten().tolist() == [0, 128, 255]


def test_ms_ssim_scales_at_the_edges() -> None:
    assert len(ms_ssim_betas(11)) == 2  # 11 // 1 > 10 with the default 11 px kernel
    assert len(ms_ssim_betas(43)) == 2  # 43 // 4 = 10 is not > 10
    assert ms_ssim_betas(3, kernel_size=3) == (1.0,)  # one scale fits 3 px only
    assert len(ms_ssim_betas(4, kernel_size=3)) == 2  # 4 >= 2**2
    assert len(ms_ssim_betas(9, kernel_size=1)) == 3  # 9 < 2**4
    with pytest.raises(ValueError, match="got 1$"):
        pairwise_l1(torch.zeros(1, 2, 8, 8))
    # the default value range is [0, 1], whatever range the samples span
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as ms

    g = torch.Generator().manual_seed(1)
    pair = torch.rand(2, 1, 32, 32, generator=g) * 0.5
    expected = 1 - float(ms(pair[:1], pair[1:], data_range=1.0, betas=ms_ssim_betas(32)))
    assert ms_ssim_diversity(pair) == pytest.approx(expected, rel=1e-6)


def test_value_range_of_8_bit_and_other_data() -> None:
    from types import SimpleNamespace

    from synthsat.metrics.synthetic import _value_range

    norm = Normalizer(np.array([100.0, 50.0]), np.array([10.0, 5.0]))
    eight_bit = [SimpleNamespace(image=np.zeros((2, 4, 4), np.uint8))]
    low, high = _value_range(eight_bit, norm)  # type: ignore[arg-type]
    assert low.tolist() == [0.0, 0.0] and high.tolist() == [255.0, 255.0]
    mixed = [*eight_bit, SimpleNamespace(image=np.zeros((2, 4, 4), np.uint16))]
    low, high = _value_range(mixed, norm)  # type: ignore[arg-type]
    assert low.tolist() == [70.0, 35.0] and high.tolist() == [130.0, 65.0]


def _half_grid_samples(
    dm: LandCoverDataModule, out: Path, offsets: list[float], grid: tuple[int, int] | None = None
) -> dict[str, list[np.ndarray]]:
    """Samples of the train tiles written on half their masks' grid (same bounds), as a
    synthesis at ``data.scale=0.5`` writes them: the real image area-resampled, plus an
    offset per sample; returns them as written."""
    written: dict[str, list[np.ndarray]] = {}
    out.mkdir(parents=True, exist_ok=True)
    for tile in dm.tiles["train"]:
        with rasterio.open(tile.pair.mask) as src:
            profile = {**src.profile, "transform": src.transform @ Affine.scale(2, 2)}
        half = resample_image(read_raster(tile.pair.image), (64, 64))
        profile.update(count=4, dtype="uint8", width=64, height=64, nodata=None)
        for k, offset in enumerate(offsets):
            image = np.clip(half.astype(np.float64) + offset, 0, 255).astype(np.uint8)
            path = out / f"{tile.name}_s{k}.tif"
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(image)
            if grid is not None:
                _tag_grid(path, *grid)
            written.setdefault(tile.name, []).append(image)
    return written


def test_a_source_on_another_grid_is_compared_on_the_datas_grid(
    toy_root: Path, tmp_path: Path
) -> None:
    """A synthesis written at half the masks' grid is scored against the real tiles on
    the data's grid: resampled as mixing does (resample_image), so it scores exactly what
    the same images resampled beforehand to the masks' grid score; on data at scale 0.5
    it is the real tile itself (distance 0); seams are measured on the grid it was
    written on, the real tile brought to that grid."""
    dm = toy_datamodule(toy_root, tmp_path / "cache")
    tiles = dm.tiles["train"]
    written = _half_grid_samples(dm, tmp_path / "half", [0.0, 20.0])
    reference = tmp_path / "native"
    reference.mkdir()
    for tile in tiles:
        with rasterio.open(tile.pair.image) as src:
            profile = src.profile
        for k, image in enumerate(written[tile.name]):
            with rasterio.open(reference / f"{tile.name}_s{k}.tif", "w", **profile) as dst:
                dst.write(resample_image(image, tile.shape))

    def metrics(source: Path, data: LandCoverDataModule) -> dict:
        return synthetic_metrics(
            data.tiles["train"],
            source,
            data.metadata(),
            _segmenter(data),
            chip_size=64,
            max_chips=4,
            fid={"enabled": False},
        )

    half, native = metrics(tmp_path / "half", dm), metrics(reference, dm)
    for key in ("spectral_w1", "diversity_l1", "diversity_ms_ssim", "consistency_miou"):
        assert half[key] == native[key], key
    assert half["spectral_w1"] > 0 and half["info"]["tiles"] == 2

    # data at scale 0.5: the real tiles are on the samples' grid; sample 0 is the real tile
    small = toy_datamodule(
        toy_root, tmp_path / "cache_half", patch_size=32, eval_chip_size=64, scale=0.5
    )
    assert all(t.shape == (64, 64) for t in small.tiles["train"])
    _half_grid_samples(small, tmp_path / "half0", [0.0])
    assert metrics(tmp_path / "half0", small)["spectral_w1"] == 0

    # seams on the written grid (16 px chips, overlap 4), the real tile resampled to it
    written = _half_grid_samples(dm, tmp_path / "seams", [0.0], grid=(16, 4))
    m = synthetic_metrics(tiles, tmp_path / "seams", dm.metadata(), None, fid={"enabled": False})
    real = [seam_scores(resample_image(t.image, (64, 64)), 16, 4) for t in tiles]
    synth = [seam_scores(written[t.name][0], 16, 4) for t in tiles]
    for key in SEAM_KEYS:
        assert m[key] == pytest.approx(np.nanmean([s[key] for s in synth]), rel=1e-12)
        assert m[f"{key}_real"] == pytest.approx(np.nanmean([r[key] for r in real]), rel=1e-12)
    assert m["info"]["seam_grids"] == [[16, 4]]

    # a half-size tile on the mask's own pixel size covers a quarter: refused, as mixing does
    tile = tiles[0]
    bad = tmp_path / "bad"
    bad.mkdir()
    with rasterio.open(tile.pair.image) as src:
        profile = {**src.profile, "width": 64, "height": 64}
    with rasterio.open(bad / f"{tile.name}_s0.tif", "w", **profile) as dst:
        dst.write(written[tile.name][0])
    with pytest.raises(DataError, match="does not cover the mask's extent") as err:
        synthetic_metrics([tile], bad, dm.metadata(), fid={"enabled": False})
    assert str(tile.pair.mask) in str(err.value)
