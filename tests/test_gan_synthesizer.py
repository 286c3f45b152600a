"""The GAN tile synthesiser's settings, styles and chip blending
(synthsat.synthesis.gan_synthesizer), with stand-in generators whose outputs are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from torch import Tensor, nn

from synthsat.data import DataError
from synthsat.synthesis import TileSynthesizer, make_requests
from synthsat.synthesis.requests import TileRequest

MEAN = [100.0, 50.0]
STD = [20.0, 10.0]


class Echo(nn.Module):
    """Band 0: the class index of each pixel; band 1: ``z[0]``. ``encode``: the chip's
    band means as ``mu``, ``logvar`` -60 (no spread)."""

    num_classes = 5
    out_bands = 2
    chip_size = 16
    z_dim = 3

    def __init__(self) -> None:
        super().__init__()
        self.encoded: list[Tensor] = []

    def generate(self, onehot: Tensor, z: Tensor) -> Tensor:
        classes = onehot.argmax(dim=1, keepdim=True).float()
        style = z[:, :1, None, None].expand_as(classes)
        return torch.cat([classes, style], dim=1)

    def encode(self, image: Tensor) -> tuple[Tensor, Tensor]:
        self.encoded.append(image.clone())
        mu = image.mean(dim=(2, 3))
        mu = torch.cat([mu, torch.zeros(mu.shape[0], 1)], dim=1)
        return mu, torch.full_like(mu, -60.0)


def _tif(path: Path, data: np.ndarray, nodata: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = data if data.ndim == 3 else data[None]
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        crs="EPSG:32618",
        transform=from_origin(500000, 4000000, 2, 2),
        nodata=nodata,
    ) as dst:
        dst.write(data)
    return path


def _synth(generator: nn.Module | None = None, **kw: object) -> TileSynthesizer:
    args: dict[str, object] = {"mean": MEAN, "std": STD, "ignore_index": 0}
    args.update(kw)
    return TileSynthesizer(generator or Echo(), **args)  # type: ignore[arg-type]


def _request(tmp_path: Path, mask: np.ndarray, image: np.ndarray | None = None) -> TileRequest:
    m = _tif(tmp_path / "masks" / "t.tif", mask)
    i = None if image is None else _tif(tmp_path / "images" / "t.tif", image)
    return make_requests([("t", m, i)], tmp_path / "out", 1, 3)[0]


def _eps(request: TileRequest, z_dim: int = 3) -> Tensor:
    return torch.randn(1, z_dim, generator=torch.Generator().manual_seed(request.tile_seed))


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError) as err:
        _synth(style="painting")
    assert str(err.value) == "style must be one of ('random', 'encoder', 'auto'), got 'painting'"
    with pytest.raises(ValueError) as err:
        _synth(style_scope="pixel")
    assert str(err.value) == "style_scope must be one of ('tile', 'chip'), got 'pixel'"
    with pytest.raises(ValueError, match="^batch_size must be at least 1, got 0$"):
        _synth(batch_size=0)
    _synth(batch_size=1)
    with pytest.raises(ValueError) as err:
        _synth(mean=[1.0], std=[1.0, 2.0])
    assert str(err.value) == (
        "the generator makes 2 band(s) but the normalisation has 1 mean(s) and 2 std(s)"
    )
    with pytest.raises(ValueError, match="^the generator makes 2 band"):
        _synth(mean=[1.0, 2.0], std=[1.0])

    class NoEncoder(Echo):
        has_encoder = False

    with pytest.raises(ValueError, match="^style=encoder needs a style encoder"):
        _synth(NoEncoder(), style="encoder")
    assert _synth(NoEncoder(), style="auto").style == "random"
    assert _synth(Echo(), style="auto").style == "encoder"  # no has_encoder: assumed
    assert _synth(NoEncoder()).style == "random"


def test_chip_grid_settings_and_record() -> None:
    synth = _synth()
    assert (synth.chip, synth.overlap, synth.noise_dim, synth.noise_cell) == (16, 8, 0, 1)
    assert synth.settings_record() == {
        "style": "random",
        "style_scope": "tile",
        "chip_size": 16,
        "overlap": 8,
    }
    larger = _synth(chip_size=40, overlap=None, style="encoder", style_scope="chip")
    assert larger.settings_record() == {
        "style": "encoder",
        "style_scope": "chip",
        "chip_size": 40,
        "overlap": 20,
    }
    assert _synth(overlap=0).overlap == 0
    assert (synth.output_bands, synth.mask_classes) == (2, 5)
    assert synth.denormalisation() == (MEAN, STD)


def test_a_random_style_tile_is_its_mask_and_its_draw(tmp_path: Path) -> None:
    """Every chip's class band is the mask: the blend gives the mask back exactly,
    whatever the overlap, and band 1 is the tile seed's single draw everywhere."""
    mask = np.random.default_rng(0).integers(1, 5, (37, 29)).astype(np.uint8)
    req = _request(tmp_path, mask)
    for overlap, batch in ((8, 2), (4, 1), (0, 8)):
        strips = list(_synth(overlap=overlap, batch_size=batch).stream(req))
        tile = np.concatenate(strips, axis=1)
        assert tile.shape == (2, 37, 29) and all(s.dtype == np.float32 for s in strips)
        np.testing.assert_allclose(tile[0], mask, atol=1e-5)
        np.testing.assert_allclose(tile[1], float(_eps(req)[0, 0]), atol=1e-5)
    # rows are handed on as soon as no later chip touches them: chip rows 0, 8, 16, 21
    heights = [s.shape[1] for s in _synth(overlap=8).stream(req)]
    assert heights == [8, 8, 5, 16]


def test_encoder_styles(tmp_path: Path) -> None:
    """``chip``: each chip's own posterior (its normalised mean); ``tile``: one code, the
    mean of the chips' means. Nodata pixels are read as the mean (0)."""
    real = np.zeros((2, 32, 32), np.float32)
    real[0] = 100 + 20 * np.repeat([1.0, 3.0], 16)[None, :]  # left chips 1, right chips 3
    real[1] = 50.0
    real[0, 0, 0] = -9  # nodata: read as 0 (normalised), like padding
    real[1, 0, 0] = -9
    mask = _tif(tmp_path / "masks" / "t.tif", np.ones((32, 32), np.uint8))
    image = _tif(tmp_path / "images" / "t.tif", real, nodata=-9)
    (req,) = make_requests([("t", mask, image)], tmp_path / "out", 1, 3)
    gen = Echo()
    chip = np.concatenate(
        list(_synth(gen, style="encoder", style_scope="chip", overlap=0).stream(req)), axis=1
    )
    # chip means of band 0: (16 * 16 - 1) / 256 of 1 top-left (the nodata pixel is 0), 3
    top_left = 255 / 256
    eps = float(_eps(req)[0, 0])
    sigma = float(np.exp(-30.0))
    np.testing.assert_allclose(chip[1, :16, :16], top_left + eps * sigma, atol=1e-5)
    np.testing.assert_allclose(chip[1, :16, 16:], 3.0, atol=1e-5)
    np.testing.assert_allclose(chip[1, 16:, :16], 1.0, atol=1e-5)
    first = gen.encoded[0]
    assert first.shape == (2, 2, 16, 16) and float(first[0, 0, 0, 0]) == 0.0
    assert float(first[0, 0, 0, 1]) == 1.0 and float(first[0, 1, 5, 5]) == 0.0  # (50-50)/10
    tile = np.concatenate(list(_synth(style="encoder", overlap=0).stream(req)), axis=1)
    pooled = (top_left + 3 + 1 + 3) / 4  # the chips' means averaged
    np.testing.assert_allclose(tile[1], pooled, atol=1e-5)
    np.testing.assert_allclose(tile[0], 1.0, atol=1e-5)


def test_a_tile_style_encodes_a_chip_grid_without_overlap(tmp_path: Path) -> None:
    real = np.full((2, 20, 40), 100.0, np.float32)
    req = _request(tmp_path, np.ones((20, 40), np.uint8), real)
    gen = Echo()
    list(_synth(gen, style="encoder", overlap=8, batch_size=2).stream(req))
    # 20 x 40 in 16-pixel chips without overlap: 2 x 3 chips, in batches of at most 2
    assert [e.shape[0] for e in gen.encoded] == [2, 1, 2, 1]
    last_row = gen.encoded[2]
    assert float(last_row[0, 0, 3, 0]) == 0.0 and float(last_row[0, 0, 4, 0]) == 0.0


def test_the_real_image_check(tmp_path: Path) -> None:
    mask = _tif(tmp_path / "masks" / "t.tif", np.ones((16, 16), np.uint8))
    (no_image,) = make_requests([("t", mask, None)], tmp_path / "out", 1, 0)
    with pytest.raises(DataError) as err:
        _synth().check_image(no_image)
    assert str(err.value) == (
        f"{mask}: no real image is paired with this mask, but style=random and dtype=null need one"
    )
    with pytest.raises(DataError) as err:
        _synth(style="encoder", dtype="uint8").check_image(no_image)
    assert str(err.value) == (f"{mask}: no real image is paired with this mask, but style=encoder")
    _synth(dtype="uint8").check_image(no_image)  # random style with a dtype: none needed
    three = _tif(tmp_path / "images" / "t.tif", np.zeros((3, 16, 16), np.uint8))
    (req,) = make_requests([("t", mask, three)], tmp_path / "out", 1, 0)
    _synth().check_image(req)  # only read for its dtype
    with pytest.raises(DataError, match="3 band"):
        _synth(style="encoder").check_image(req)
    (tmp_path / "images" / "bad.tif").write_bytes(b"not a raster")
    (bad,) = make_requests([("t", mask, tmp_path / "images" / "bad.tif")], tmp_path / "o", 1, 0)
    with pytest.raises(DataError):
        _synth().check_image(bad)
