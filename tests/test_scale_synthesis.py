"""``data.scale`` for the generator: trained, synthesised and mixed at the scaled grid."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from conftest import (
    TOY_METADATA,
    compose_job,
    tiny_generator_cfg,
    toy_data_overrides,
    toy_datamodule,
)
from rasterio.transform import Affine

from synthsat.data import DataError, LandCoverDataModule
from synthsat.data.cache import TileCache, resample_image, rescale, rescale_mask, scaled_shape
from synthsat.data.raster_io import read_raster
from synthsat.data.synthetic_tiles import read_provenance
from synthsat.data.tiles import TilePair
from synthsat.errors import ConfigError
from synthsat.jobs.synthesize import run
from synthsat.jobs.train_generator import train
from synthsat.synthesis import TileSynthesizer, load_chip_generator, make_requests


def _generator_cfg(toy_root: Path, tmp_path: Path, *extra: str) -> Any:
    cache = f"paths.cache_dir={tmp_path / 'cache'}"
    return tiny_generator_cfg(toy_root, tmp_path, "gen", cache, "trainer.max_steps=1", *extra)


def _dihedral(mask: np.ndarray) -> list[np.ndarray]:
    """The 8 flips and 90-degree rotations of ``mask``."""
    turns = [np.rot90(mask, k) for k in range(4)]
    return turns + [np.fliplr(t) for t in turns]


def test_generator_trains_on_the_scaled_cache(
    toy_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``train_generator data.scale=0.25``: its patches are cut from 32 px tiles (the
    128 px toy tiles area-averaged, masks by the nearest centre) and the checkpoint's
    data metadata records the scale, which synthesis reads."""
    datasets: list[Any] = []
    original = LandCoverDataModule.train_dataset

    def recorded(self: LandCoverDataModule) -> Any:
        datasets.append(original(self))
        return datasets[-1]

    monkeypatch.setattr(LandCoverDataModule, "train_dataset", recorded)
    metrics = train(_generator_cfg(toy_root, tmp_path, "data.scale=0.25"))
    # 32 px patches of 32 px tiles: each training patch is a whole scaled training tile
    scaled = [
        rescale(
            np.zeros((1, 128, 128), np.uint8), read_raster(toy_root / "masks" / f"{n}.tif")[0], 0.25
        )[1]
        for n in ("tile_000", "tile_001")
    ]
    for i in range(4):
        patch = datasets[0][i]["mask"].numpy()
        assert any(np.array_equal(patch, v) for m in scaled for v in _dihedral(m))
    state = torch.load(metrics["checkpoint"], map_location="cpu", weights_only=False)
    assert state["hyper_parameters"]["metadata"]["scale"] == 0.25
    masks = {p.parent.name.rsplit("-", 1)[0]: p for p in (tmp_path / "cache").glob("*/mask.npy")}
    assert sorted(masks) == ["tile_000", "tile_001", "tile_002", "tile_003"]
    for name, path in masks.items():
        image = read_raster(toy_root / "images" / f"{name}.tif")
        mask = read_raster(toy_root / "masks" / f"{name}.tif")[0].astype(np.uint8)
        if name == "tile_003":  # the test tile: native, as for segmentation
            assert np.array_equal(np.load(path), mask)
            continue
        small, small_mask = rescale(image, mask, 0.25)  # train (000, 001) and val (002)
        assert np.load(path).shape == scaled_shape(128, 128, 0.25) == (32, 32)
        assert np.array_equal(np.load(path), small_mask)
        assert np.array_equal(np.load(path.parent / "image.npy"), small)


# -- mixing: a synthetic source on any grid -----------------------------------------------


def _write(path: Path, values: np.ndarray, like: Path | None = None, **profile: Any) -> Path:
    """``values`` (C, H, W) as a GeoTIFF: the CRS of ``like`` (if given) and ``profile``."""
    meta: dict[str, Any] = {"driver": "GTiff", "count": values.shape[0], "dtype": values.dtype}
    meta.update(height=values.shape[1], width=values.shape[2])
    if like is not None:
        with rasterio.open(like) as src:
            meta["crs"] = src.crs
    meta.update(profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **meta) as dst:
        dst.write(values)
    return path


def _quarter_grid(toy_root: Path, out: Path, tiles: list[str], seed: int = 0) -> dict[str, Path]:
    """Random 4-band synthetic tiles on the 1/4 grid of the toy masks (32 px, same bounds)."""
    rng = np.random.default_rng(seed)
    paths = {}
    for name in tiles:
        mask = toy_root / "masks" / f"{name}.tif"
        with rasterio.open(mask) as src:
            transform = src.transform @ Affine.scale(4, 4)
        values = rng.integers(0, 256, (4, 32, 32), dtype=np.uint8)
        paths[name] = _write(out / f"{name}_s0.tif", values, mask, transform=transform)
    return paths


def _mixed(toy_root: Path, tmp_path: Path, source: Path, scale: float) -> Any:
    dm = toy_datamodule(
        toy_root,
        tmp_path / "cache",
        patch_size=16,
        scale=scale,
        mix={"ratio": 1.0, "source": str(source)},
    )
    return dm, dm.train_dataset()


def test_a_quarter_grid_source_is_read_at_any_training_scale(
    toy_root: Path, tmp_path: Path
) -> None:
    """Written at 1/4 the size, a synthetic tile is used as it is at ``scale=0.25`` and
    enlarged (bilinear) to the native grid at ``scale=1``; its mask is the real tile's
    on the training grid either way."""
    paths = _quarter_grid(toy_root, tmp_path / "synthetic", ["tile_000", "tile_001"])
    dm, dataset = _mixed(toy_root, tmp_path, tmp_path / "synthetic", 0.25)
    for real, (synthetic,) in zip(dm.tiles["train"], dataset.synthetic, strict=True):
        assert np.array_equal(synthetic.image, read_raster(paths[real.name]))  # as written
        assert np.array_equal(synthetic.mask, real.mask) and real.shape == (32, 32)
    dm, dataset = _mixed(toy_root, tmp_path, tmp_path / "synthetic", 1.0)
    for real, (synthetic,) in zip(dm.tiles["train"], dataset.synthetic, strict=True):
        written = torch.from_numpy(read_raster(paths[real.name]).astype(np.float32))[None]
        big = F.interpolate(written, size=(128, 128), mode="bilinear", align_corners=False)
        expected = np.clip(np.rint(big[0].numpy()), 0, 255).astype(np.uint8)
        assert synthetic.image.shape == (4, 128, 128) and synthetic.image.dtype == np.uint8
        assert np.array_equal(synthetic.image, expected)
        assert np.array_equal(synthetic.mask, real.mask) and real.shape == (128, 128)


def test_a_source_on_the_masks_grid_is_cached_as_before(toy_root: Path, tmp_path: Path) -> None:
    """Same grid: ``load_synthetic`` builds the same cache entry, byte for byte, as ``load``."""
    cache_a = TileCache(tmp_path / "a", 4, 7, 0, scale=0.5)
    cache_b = TileCache(tmp_path / "b", 4, 7, 0, scale=0.5)
    pair = TilePair(
        "tile_000_s0", toy_root / "images" / "tile_000.tif", toy_root / "masks" / "tile_000.tif"
    )
    a, b = cache_a.load(pair), cache_b.load_synthetic(pair)
    entry_a, entry_b = (Path(t.image.filename).parent for t in (a, b))
    assert entry_a.name == entry_b.name
    for name in ("image.npy", "mask.npy", "meta.json"):
        assert (entry_a / name).read_bytes() == (entry_b / name).read_bytes()


def test_grids_that_do_not_cover_the_mask_are_refused(toy_root: Path, tmp_path: Path) -> None:
    mask = toy_root / "masks" / "tile_000.tif"
    with rasterio.open(mask) as src:
        transform = src.transform
    values = np.zeros((4, 32, 32), np.uint8)
    cache = TileCache(tmp_path / "cache", 4, 7, 0, scale=0.25)
    # 32 px at the mask's own pixel size: a quarter of its extent
    small = _write(tmp_path / "small.tif", values, mask, transform=transform)
    with pytest.raises(DataError) as err:
        cache.load_synthetic(TilePair("small", small, mask))
    message = str(err.value)
    assert str(small) in message and str(mask) in message
    assert "32x32 px" in message and "128x128 px" in message
    assert "does not cover the mask's extent" in message
    # shifted by one coarse pixel: same size and pixel size, other bounds
    shifted = _write(
        tmp_path / "shifted.tif",
        values,
        mask,
        transform=transform @ Affine.translation(4, 0) @ Affine.scale(4, 4),
    )
    with pytest.raises(DataError, match="does not cover the mask's extent"):
        cache.load_synthetic(TilePair("shifted", shifted, mask))
    # real pairs still share one grid, even when the extents agree
    quarter = _quarter_grid(toy_root, tmp_path / "q", ["tile_000"])["tile_000"]
    with pytest.raises(DataError, match="they must share one pixel grid"):
        cache.load(TilePair("tile_000", quarter, mask))


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_ungeoreferenced_sources_go_by_their_size(tmp_path: Path) -> None:
    """Without a CRS, the size says the scale; a nodata pixel of the coarse grid leaves
    out every training pixel it reaches."""
    mask = _write(tmp_path / "mask.tif", np.ones((1, 8, 8), np.uint8))
    image = np.arange(16, dtype=np.uint8).reshape(1, 4, 4) + 10
    coarse = _write(tmp_path / "coarse.tif", image)
    half = TileCache(tmp_path / "half", 1, 2, 0, scale=0.5).load_synthetic(
        TilePair("c", coarse, mask)
    )
    assert np.array_equal(half.image, image) and half.mask.tolist() == [[1] * 4] * 4
    holed = _write(tmp_path / "holed.tif", image, nodata=10)  # pixel (0, 0)
    full = TileCache(tmp_path / "full", 1, 2, 0, scale=1.0).load_synthetic(
        TilePair("h", holed, mask)
    )
    assert full.shape == (8, 8)
    # bilinear: coarse pixel 0 weighs on fine pixels 0..2 of each axis (centres < 1.0)
    assert np.argwhere(np.asarray(full.mask) == 0).tolist() == [
        [r, c] for r in range(3) for c in range(3)
    ]
    assert full.count == 64 - 9
    skewed = _write(tmp_path / "skewed.tif", np.zeros((1, 4, 2), np.uint8))
    with pytest.raises(DataError, match="not scaled alike"):
        TileCache(tmp_path / "s", 1, 2, 0).load_synthetic(TilePair("s", skewed, mask))


# -- synthesis at a scale ---------------------------------------------------------------


def _generator_checkpoint(path: Path, scale: float | None) -> Path:
    """A tiny random-init generator of the toy world whose data metadata records
    ``scale`` (None: none, as checkpoints before ``data.scale``)."""
    import lightning as L

    from synthsat.tasks.generator import GeneratorTask

    data = dict(TOY_METADATA) if scale is None else {**TOY_METADATA, "scale": scale}
    torch.manual_seed(0)
    task = GeneratorTask(
        metadata=data, patch_size=32, z_dim=8,
        net=dict(ngf=4, start_size=4, max_mult=2, spade_hidden=8),
        nef=4, ndf=4, num_D=1, n_layers=2,
    )  # fmt: skip
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(task)
    path.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(path)
    return path


def _synthesis_cfg(toy_root: Path, tmp_path: Path, *extra: str) -> Any:
    overrides = [
        *toy_data_overrides(toy_root),
        f"data.cache_dir={tmp_path / 'cache'}",
        f"paths.root={tmp_path}",
        f"paths.output_dir={tmp_path / 'run'}",
        "trainer=cpu",
        "logger=none",
        "splits=[train]",
        *extra,
    ]
    return compose_job("synthesize", overrides)


def test_synthesis_at_the_checkpoints_scale(toy_root: Path, tmp_path: Path) -> None:
    """A generator trained at ``data.scale=0.5`` writes 64 px tiles for the 128 px masks:
    the mask's bounds at twice the pixel size, its nodata where the scaled mask (nearest
    centre, as the cache) is unlabelled; mixing reads them as they are at 0.5 and
    enlarged at 1."""
    ckpt = _generator_checkpoint(tmp_path / "half.ckpt", 0.5)
    out = tmp_path / "synthetic"
    run(_synthesis_cfg(toy_root, tmp_path, f"ckpt={ckpt}", f"out={out}", "style=encoder"))
    outputs = {p.stem[:-3]: p for p in sorted(out.glob("*_s0.tif"))}
    assert sorted(outputs) == ["tile_000", "tile_001"]
    for name, path in outputs.items():
        mask_path = toy_root / "masks" / f"{name}.tif"
        native = read_raster(mask_path)[0]
        with rasterio.open(path) as dst, rasterio.open(mask_path) as src:
            assert (dst.width, dst.height) == scaled_shape(128, 128, 0.5)[::-1] == (64, 64)
            assert dst.crs == src.crs and dst.transform == src.transform @ Affine.scale(2, 2)
            assert dst.bounds == src.bounds
            valid = dst.dataset_mask() > 0
        assert np.array_equal(valid, rescale_mask(native, 0.5) != 0)
        record = read_provenance(path)
        assert record is not None
        assert record["scale"] == 0.5 and record["source_mask"] == str(mask_path)
    manifest = json.loads((out / "manifest.json").read_text())["outputs"]
    assert {m["scale"] for m in manifest} == {0.5}

    dm, dataset = _mixed(toy_root, tmp_path, out, 0.5)
    for real, (synthetic,) in zip(dm.tiles["train"], dataset.synthetic, strict=True):
        assert np.array_equal(synthetic.image, read_raster(outputs[real.name]))
        assert np.array_equal(synthetic.mask, real.mask)
    dm, dataset = _mixed(toy_root, tmp_path, out, 1.0)
    for real, (synthetic,) in zip(dm.tiles["train"], dataset.synthetic, strict=True):
        written = read_raster(outputs[real.name])
        expected = resample_image(written, (128, 128))
        assert synthetic.image.shape == (4, 128, 128)
        assert np.array_equal(synthetic.image, expected)
        assert np.array_equal(synthetic.mask, real.mask)


def test_a_scaled_synthesis_is_the_synthesis_of_the_scaled_tile(
    toy_root: Path, tmp_path: Path
) -> None:
    """Synthesis at 0.5 from the native mask and image gives exactly the pixels of a
    synthesis at 1 of the mask and image the cache makes at 0.5 (nearest centre, area),
    written on the scaled grid: the generator sees what it was trained on."""
    generator = load_chip_generator(_generator_checkpoint(tmp_path / "g.ckpt", None))
    name = "tile_001"
    mask, image = toy_root / "masks" / f"{name}.tif", toy_root / "images" / f"{name}.tif"
    small_image, small_mask = rescale(read_raster(image), read_raster(mask)[0], 0.5)
    with rasterio.open(mask) as src:
        grid = {"crs": src.crs, "transform": src.transform @ Affine.scale(2, 2)}
    coarse_mask = _write(tmp_path / "coarse" / "masks" / f"{name}.tif", small_mask[None], **grid)
    coarse_image = _write(tmp_path / "coarse" / "images" / f"{name}.tif", small_image, **grid)

    def synthesise(scale: float, mask: Path, image: Path, folder: str) -> np.ndarray:
        synthesizer = TileSynthesizer(
            generator, TOY_METADATA["mean"], TOY_METADATA["std"], 0, style="encoder", scale=scale
        )
        request = make_requests([(name, mask, image)], tmp_path / folder, 1, 3)[0]
        synthesizer.run(request)
        return read_raster(request.output)

    scaled = synthesise(0.5, mask, image, "scaled")
    assert scaled.shape == (4, 64, 64)
    assert np.array_equal(scaled, synthesise(1.0, coarse_mask, coarse_image, "coarse"))


def test_scale_one_writes_the_same_bytes(toy_root: Path, tmp_path: Path) -> None:
    """``scale=null`` with a checkpoint that records no scale (as before) and ``scale=1``
    write the same file, byte for byte, on the mask's grid with no ``scale`` in its
    provenance; a checkpoint trained at scale 1 writes the same pixels."""
    old = _generator_checkpoint(tmp_path / "old.ckpt", None)
    one = _generator_checkpoint(tmp_path / "one.ckpt", 1.0)
    paths = {}
    for label, ckpt, extra in (
        ("default", old, ()),
        ("explicit", old, ("scale=1",)),
        ("recorded", one, ()),
    ):
        out = tmp_path / label
        run(
            _synthesis_cfg(
                toy_root, tmp_path, f"ckpt={ckpt}", f"out={out}", "tiles=[tile_000]", *extra
            )
        )
        paths[label] = out / "tile_000_s0.tif"
    digest = {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in paths.items()}
    assert digest["explicit"] == digest["default"]
    record = read_provenance(paths["default"])
    assert record is not None and "scale" not in record
    with (
        rasterio.open(paths["recorded"]) as a,
        rasterio.open(paths["default"]) as b,
        rasterio.open(toy_root / "masks" / "tile_000.tif") as mask,
    ):
        assert (a.width, a.height, a.transform) == (b.width, b.height, b.transform)
        assert (b.width, b.height, b.transform) == (mask.width, mask.height, mask.transform)
        assert np.array_equal(a.read(), b.read())


def test_scale_is_for_generators(toy_root: Path, tmp_path: Path) -> None:
    cfg = _synthesis_cfg(toy_root, tmp_path, "method=classcolour", "scale=0.5")
    with pytest.raises(
        ConfigError, match="scale=0.5: synthesis at a scale is for method=generator"
    ):
        run(cfg)


def test_resample_image_rules() -> None:
    """Same size: the array itself; an axis that shrinks: block means; one that grows:
    linear between pixel centres; both at once: each axis by its own rule."""
    image = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    assert resample_image(image, (4, 4)) is image
    assert resample_image(image, (2, 2))[0].tolist() == [[2.5, 4.5], [10.5, 12.5]]
    row = np.array([[[0.0, 4.0]]], np.float32)  # 1 x 2 -> 1 x 4: centres at -0.25 .. 1.25
    assert resample_image(row, (1, 4))[0].tolist() == [[0.0, 1.0, 3.0, 4.0]]
    mixed = resample_image(image, (2, 8))  # rows: pairs averaged; columns: interpolated
    rows = (image[0, 0::2] + image[0, 1::2]) / 2
    assert mixed[0, :, 0].tolist() == rows[:, 0].tolist()
    assert mixed[0, :, 1].tolist() == (rows[:, 0] * 0.75 + rows[:, 1] * 0.25).tolist()
    ints = resample_image(np.array([[[0, 255]]], np.uint8), (1, 4))
    assert ints.dtype == np.uint8 and ints.tolist() == [[[0, 64, 191, 255]]]


def test_scaled_mask_files_read_like_mask_files(toy_root: Path) -> None:
    """Windows of the scaled mask are windows of the cache's nearest-centre mask."""
    from rasterio.windows import Window

    from synthsat.synthesis.scaled import ScaledMaskReader

    path = toy_root / "masks" / "tile_002.tif"
    expected = rescale_mask(read_raster(path)[0], 0.25)
    reader = ScaledMaskReader(scale=0.25)
    with reader.open(path) as mask:
        assert (mask.height, mask.width) == (32, 32)
        assert np.array_equal(mask.read(), expected)
        assert np.array_equal(mask.read(Window(3, 5, 7, 11)), expected[5:16, 3:10])
    assert reader.values(path).tolist() == np.unique(read_raster(path)[0]).tolist()
    with ScaledMaskReader(scale=1.0).open(path) as native:
        assert (native.height, native.width) == (128, 128)
