"""Tile synthesis with small stand-in generators: georeference, blending, streaming,
seeding, resumption and bad input."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from conftest import RECORD_HEAD, write_geotiff
from rasterio.transform import from_origin
from torch import Tensor, nn

from synthsat.data import DataError
from synthsat.errors import IncompleteOutput
from synthsat.locks import host_tag
from synthsat.synthesis import (
    TileSynthesizer,
    derive_seed,
    load_chip_generator,
    make_requests,
    predict,
    read_provenance,
    run_synthesis,
)
from synthsat.synthesis.windows import ChipGrid
from synthsat.synthesis.writer import busy_writer, remove_stale_temps

MEAN = [100.0, 110.0, 120.0, 130.0]
STD = [30.0, 30.0, 30.0, 30.0]


class ConstantGenerator(nn.Module):
    """Spatially constant chips: band ``c`` of a chip is ``z[c]`` everywhere.

    ``encode`` gives the chip's band means as ``mu`` with (almost) zero variance, so
    with ``style=encoder`` each chip is the constant mean of its real chip.
    """

    num_classes = 7
    out_bands = 4
    chip_size = 32
    z_dim = 4

    def generate(self, onehot: Tensor, z: Tensor) -> Tensor:
        b, _, h, w = onehot.shape
        return z[:, : self.out_bands, None, None].expand(b, self.out_bands, h, w).clone()

    def encode(self, image: Tensor) -> tuple[Tensor, Tensor]:
        mu = image.mean(dim=(2, 3))
        return mu, torch.full_like(mu, -60.0)


class MaskGenerator(nn.Module):
    """A tiny convolutional generator: class colours modulated by a conv and the style."""

    num_classes = 7
    out_bands = 4
    chip_size = 32
    z_dim = 8

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(self.num_classes, self.out_bands, 3, padding=1)
        self.style = nn.Linear(self.z_dim, self.out_bands)
        self.enc = nn.Linear(self.out_bands, 2 * self.z_dim)

    def generate(self, onehot: Tensor, z: Tensor) -> Tensor:
        return torch.tanh(self.conv(onehot) + self.style(z)[:, :, None, None]) * 2

    def encode(self, image: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.enc(image.mean(dim=(2, 3))).chunk(2, dim=1)
        return mu, logvar


def _toy(root: Path) -> list[tuple[str, Path, Path]]:
    return [
        (name, root / "masks" / f"{name}.tif", root / "images" / f"{name}.tif")
        for name in ("tile_000", "tile_001")
    ]


def _synth(generator: nn.Module, **kw: object) -> TileSynthesizer:
    args = {
        "mean": MEAN,
        "std": STD,
        "ignore_index": 0,
        "overlap": 8,
        "batch_size": 4,
        "provenance": {"checkpoint": "stand-in.ckpt", "lambda_div": 0.0},
    }
    args.update(kw)
    return TileSynthesizer(generator, **args)  # type: ignore[arg-type]


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def _write_raster(path: Path, data: np.ndarray, transform: Any = None) -> Path:
    data = data if data.ndim == 3 else data[None]
    return write_geotiff(path, data, "EPSG:32618", transform or from_origin(500000, 4000000, 2, 2))


def test_output_georeference_matches_the_mask(toy_root: Path, tmp_path: Path) -> None:
    requests = make_requests(_toy(toy_root), tmp_path / "out", samples=2, seed=3)
    writer = run_synthesis(_synth(MaskGenerator(), style="random"), requests, tmp_path / "out")
    assert len(writer.written) == 4
    for req in requests:
        assert req.output.name == f"{req.tile}_s{req.sample}.tif"
        with rasterio.open(req.mask) as mask, rasterio.open(req.output) as out:
            assert out.crs == mask.crs
            assert out.transform == mask.transform
            assert (out.width, out.height) == (mask.width, mask.height)
            assert out.count == 4
            assert out.dtypes[0] == "uint8"
            assert out.profile["tiled"] and out.compression is not None
            assert out.read().std() > 0
    a, b = (_read(tmp_path / "out" / f"tile_000_s{k}.tif") for k in (0, 1))
    assert not np.array_equal(a, b), "samples of one tile should differ"
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())["outputs"]
    assert [m["path"] for m in manifest] == sorted(r.output.name for r in requests)
    first = manifest[0]
    assert first["source_mask"] == str(requests[0].mask)
    assert (
        first["checkpoint"],
        first["seed"],
        first["style"],
        first["lambda_div"],
        first["sample"],
    ) == ("stand-in.ckpt", 3, "random", 0.0, 0)
    assert not list((tmp_path / "out").glob(".*"))


def test_no_seams_with_a_spatially_constant_generator(toy_root: Path, tmp_path: Path) -> None:
    # one constant everywhere: the blended tile is exactly that constant
    requests = make_requests(_toy(toy_root)[:1], tmp_path / "a", samples=1, seed=0)
    synth = _synth(ConstantGenerator(), style="random")
    synth.run(requests[0])
    out = _read(requests[0].output)
    z = torch.randn(1, 4, generator=torch.Generator().manual_seed(requests[0].tile_seed))
    expected = np.clip(np.rint(z[0].numpy() * STD + np.array(MEAN)), 0, 255)
    for band in range(4):
        assert np.all(out[band] == expected[band])

    # chips of different constants (style from a real image with a step in it): the
    # tile changes gradually across chip borders, never by the full step
    real = np.full((4, 96, 96), 60, np.uint8)
    real[:, :, 48:] = 200
    mask = np.ones((96, 96), np.uint8)
    image = _write_raster(tmp_path / "b" / "images" / "t.tif", real)
    mask_path = _write_raster(tmp_path / "b" / "masks" / "t.tif", mask)
    req = make_requests([("t", mask_path, image)], tmp_path / "b" / "out", 1, 0)[0]
    _synth(ConstantGenerator(), style="encoder", style_scope="chip").run(req)
    out = _read(req.output).astype(np.float64)
    chip_step = 200 - 60
    jumps = np.abs(np.diff(out, axis=2))
    assert out.max() - out.min() > chip_step / 2  # the style does change across the tile
    assert jumps.max() < chip_step / 4  # but smoothly: no seam
    assert np.abs(np.diff(out, axis=1)).max() == 0  # constant along columns

    # one style per tile (the default): the pooled posterior of the 3 x 3 chips without
    # overlap, whose means are 60, 130 and 200 by column -> 130 everywhere, no blocks
    req = make_requests([("t", mask_path, image)], tmp_path / "b" / "tile", 1, 0)[0]
    _synth(ConstantGenerator(), style="encoder").run(req)
    assert np.all(_read(req.output) == 130)


class SpreadGenerator(ConstantGenerator):
    """:class:`ConstantGenerator` whose posterior has a spread: ``logvar = mu / 4 - 2``
    per band, so chips of different means have different variances."""

    def encode(self, image: Tensor) -> tuple[Tensor, Tensor]:
        mu = image.mean(dim=(2, 3))
        return mu, mu / 4 - 2


def test_a_tile_style_is_a_draw_from_the_pooled_posterior(tmp_path: Path) -> None:
    """``style=encoder`` (tile scope): ``z = mu + eps * sigma``, with ``mu`` the mean of
    the 3 x 3 chips' means, ``sigma`` the root of the mean of their variances
    ``exp(logvar)`` and ``eps`` the tile seed's draw; 8 samples, each exact to rounding.
    A draw scaled by the variance, or by the mean sigma, misses by several units."""
    real = np.full((4, 96, 96), 60, np.uint8)
    real[:, :, 48:] = 200  # chip columns of mean 60, 130 and 200
    image = _write_raster(tmp_path / "images" / "t.tif", real)
    mask = _write_raster(tmp_path / "masks" / "t.tif", np.ones((96, 96), np.uint8))
    mean, std = np.array(MEAN), np.array(STD)
    chips = (np.array([60.0, 130.0, 200.0])[:, None] - mean) / std  # (column, band)
    mu = chips.mean(axis=0)
    sigma = np.sqrt(np.exp(chips / 4 - 2).mean(axis=0))
    assert np.all(np.abs(sigma - sigma**2) * std > 5)  # sigma and the variance set apart
    requests = make_requests([("t", mask, image)], tmp_path / "out", samples=8, seed=0)
    draws = []
    for req in requests:
        _synth(SpreadGenerator(), style="encoder").run(req)
        out = _read(req.output).astype(np.float64)
        eps = torch.randn(1, 4, generator=torch.Generator().manual_seed(req.tile_seed))[0]
        expected = np.clip(np.rint((mu + eps.numpy() * sigma) * std + mean), 0, 255)
        for band in range(4):
            assert np.abs(out[band] - expected[band]).max() <= 1
        draws.append((out[:, 0, 0] - mean) / std)
    spread = np.std(draws, axis=0) / sigma  # per band, in units of the pooled sigma
    assert np.all(np.abs(spread - 1) < 0.6)


def test_streamed_rows_equal_a_whole_tile_blend(toy_root: Path) -> None:
    """The row-band accumulator gives exactly the whole-tile weighted average."""
    gen = MaskGenerator()
    synth = _synth(gen, style="random", batch_size=3)
    req = make_requests(_toy(toy_root)[:1], "unused", 1, 5)[0]
    streamed = np.concatenate(list(synth.stream(req)), axis=1)
    with rasterio.open(req.mask) as src:
        mask = torch.from_numpy(src.read(1).astype(np.int64))
    grid = ChipGrid(128, 128, 32, 8)
    z = torch.randn(1, gen.z_dim, generator=torch.Generator().manual_seed(req.tile_seed))
    whole = np.zeros((4, 128, 128))
    from synthsat.models.spade import mask_to_onehot

    with torch.no_grad():
        for i, r in enumerate(grid.rows):
            for j, c in enumerate(grid.cols):
                onehot = mask_to_onehot(mask[None, r : r + 32, c : c + 32], 7)
                out = gen.generate(onehot, z)[0].numpy()
                whole[:, r : r + 32, c : c + 32] += out * grid.chip_weight(i, j)
    assert streamed.shape == (4, 128, 128)
    np.testing.assert_allclose(streamed, whole, atol=1e-5)


def test_small_tiles_are_padded(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    mask = _write_raster(tmp_path / "m" / "small.tif", rng.integers(1, 7, (20, 45), np.uint8))
    image = _write_raster(tmp_path / "i" / "small.tif", rng.integers(0, 255, (4, 20, 45), np.uint8))
    for style in ("random", "encoder"):
        req = make_requests([("small", mask, image)], tmp_path / style, 1, 0)[0]
        _synth(MaskGenerator(), style=style).run(req)
        with rasterio.open(req.output) as out, rasterio.open(mask) as src:
            assert (out.height, out.width, out.count) == (20, 45, 4)
            assert out.transform == src.transform
            assert out.read().std() > 0


def test_each_tile_written_is_logged_with_its_throughput(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Mpx = the tile's height x width (not bands, not the padded chip grid); Mpx/s over
    the time from the writer starting the tile to its file being complete."""
    rng = np.random.default_rng(0)
    mask = _write_raster(tmp_path / "m" / "small.tif", rng.integers(1, 7, (40, 50), np.uint8))
    image = _write_raster(tmp_path / "i" / "small.tif", rng.integers(0, 255, (4, 40, 50), np.uint8))
    requests = make_requests([("small", mask, image)], tmp_path / "out", 1, 0)
    ticks = iter([10.0, 12.5])  # the writer starts the tile at 10 s and is done at 12.5 s
    monkeypatch.setattr(predict, "_clock", lambda: next(ticks))
    with caplog.at_level(logging.INFO, logger="synthsat.synthesis.predict"):
        run_synthesis(_synth(MaskGenerator(), style="random"), requests, tmp_path / "out")
    assert f"wrote {requests[0].output}: 0.002 Mpx in 2.5 s, 0.0008 Mpx/s" in caplog.messages


def test_seeded_rerun_is_bit_for_bit_identical_and_order_free(
    toy_root: Path, tmp_path: Path
) -> None:
    tiles = _toy(toy_root)
    for style in ("random", "encoder"):
        synth = _synth(MaskGenerator(), style=style)
        a = make_requests(tiles, tmp_path / style / "a", 2, seed=7)
        b = make_requests(tiles[::-1], tmp_path / style / "b", 2, seed=7)[::-1]
        c = make_requests(tiles[:1], tmp_path / style / "c", 1, seed=8)
        for req in a + b + c:
            synth.run(req)
        for name in ("tile_000_s0.tif", "tile_001_s1.tif"):
            first, second = (_read(tmp_path / style / d / name) for d in "ab")
            assert np.array_equal(first, second)
        other = _read(tmp_path / style / "c" / "tile_000_s0.tif")
        assert not np.array_equal(_read(tmp_path / style / "a" / "tile_000_s0.tif"), other)
    assert derive_seed(7, "tile_000", 0) == derive_seed(7, "tile_000", 0)
    assert (
        len(
            {derive_seed(7, "tile_000", k) for k in range(4)}
            | {derive_seed(7, "tile_001", 0), derive_seed(8, "tile_000", 0)}
        )
        == 6
    )


def test_rerun_skips_finished_outputs_and_cleans_temporaries(
    toy_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    requests = make_requests(_toy(toy_root), out, 1, 0)
    synth = _synth(MaskGenerator())
    synth.run(requests[0])
    stamp = requests[0].output.stat().st_mtime_ns
    dead = subprocess.Popen(["true"])
    dead.wait()
    killed = out / f".tile_001_s0.pid{dead.pid}@{host_tag()}.x1y2z3ab.tif.part"
    killed.write_bytes(b"half a tiff")  # a killed writer's
    writer = run_synthesis(synth, requests, out)
    assert [r["tile"] for r in writer.written] == ["tile_001"]
    assert writer.skipped == [requests[0].output]
    assert requests[0].output.stat().st_mtime_ns == stamp
    assert not list(out.glob(".*"))
    assert len(json.loads((out / "manifest.json").read_text())["outputs"]) == 2


def test_a_live_writers_temporary_is_kept_and_its_tile_skipped(
    toy_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two synthesis runs on one ``out``: the second neither deletes the first's
    ``.part`` file nor writes that tile, but waits for it at its end; a dead writer's
    ``.part`` file is removed."""
    out = tmp_path / "out"
    out.mkdir()
    requests = make_requests(_toy(toy_root), out, 1, 0)
    finished = make_requests(_toy(toy_root)[:1], tmp_path / "elsewhere", 1, 0)[0]
    _synth(MaskGenerator()).run(finished)  # the tile as the other process will publish it
    dead = subprocess.Popen(["sleep", "0"])
    dead.wait()
    live = subprocess.Popen(["sleep", "60"])  # stands in for the other synthesis process
    here = host_tag()
    busy = out / f".tile_000_s0.pid{live.pid}@{here}.abcd1234.tif.part"
    gone = out / f".tile_001_s0.pid{dead.pid}@{here}.abcd1234.tif.part"
    for path in (busy, gone):
        path.write_bytes(b"half a tiff")
    result: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: result.update(writer=run_synthesis(_synth(MaskGenerator()), requests, out))
    )
    try:
        assert busy_writer(requests[0].output) == f"pid {live.pid} on {here}"
        assert busy_writer(requests[1].output) is None  # its writer is gone
        with caplog.at_level(logging.INFO, logger="synthsat.synthesis.predict"):
            thread.start()
            deadline = time.monotonic() + 600  # a failure bound; the tile is the signal
            while not requests[1].output.exists() and thread.is_alive():
                assert time.monotonic() < deadline, "the second run never wrote its tile"
                time.sleep(0.05)
            time.sleep(0.5)  # the second run waits for the first's tile ...
            assert thread.is_alive() and not requests[0].output.exists()
            assert busy.read_bytes() == b"half a tiff" and not gone.exists()
            shutil.copy(finished.output, requests[0].output)  # ... which the first publishes
            busy.unlink()
            thread.join(timeout=600)
        writer = result["writer"]
        assert [r["tile"] for r in writer.written] == ["tile_001"]
        assert writer.skipped == [requests[0].output]
        assert f"removed {gone}, left by an interrupted run" in caplog.messages
        assert f"skip {requests[0].output}: pid {live.pid} on {here} is writing it" in (
            caplog.messages
        )
    finally:
        live.kill()
        live.wait()
        thread.join(timeout=600)


def test_a_tile_another_host_is_writing_and_never_finishes_is_an_error(
    toy_root: Path, tmp_path: Path
) -> None:
    """Its writer cannot be checked from here: the run ends non-zero naming the tile
    (its other tiles written); the other host's file is kept."""
    out = tmp_path / "out"
    out.mkdir()
    requests = make_requests(_toy(toy_root), out, 1, 0)
    remote = out / ".tile_000_s0.pid4242@other-box.abcd1234.tif.part"
    remote.write_bytes(b"half a tiff")
    with pytest.raises(IncompleteOutput) as missing:
        run_synthesis(_synth(MaskGenerator()), requests, out)
    assert str(missing.value) == (
        f"{out}: 1 tile(s) missing, being written by processes on other hosts: "
        "tile_000_s0.tif (pid 4242 on other-box); rerun once they end"
    )
    assert requests[1].output.exists() and remote.exists()
    # Once its writer is gone, another host's file is still kept (it cannot be checked).
    assert remove_stale_temps(out) == []


def test_failure_mid_tile_leaves_no_file(toy_root: Path, tmp_path: Path) -> None:
    class Failing(MaskGenerator):
        calls = 0

        def generate(self, onehot: Tensor, z: Tensor) -> Tensor:
            self.calls += 1
            if self.calls > 3:
                raise RuntimeError("out of memory (simulated)")
            return super().generate(onehot, z)

    req = make_requests(_toy(toy_root)[:1], tmp_path, 1, 0)[0]
    with pytest.raises(RuntimeError, match="simulated"):
        _synth(Failing(), batch_size=1).run(req)
    assert list(tmp_path.iterdir()) == []


_KILL_SCRIPT = """
import sys, time, torch
from pathlib import Path
from torch import nn
from synthsat.synthesis import TileSynthesizer, make_requests, run_synthesis

class Slow(nn.Module):
    num_classes, out_bands, chip_size, z_dim = 7, 4, 32, 4
    def generate(self, onehot, z):
        time.sleep(0.05)
        return torch.zeros(onehot.shape[0], 4, 32, 32) + z[:, :4, None, None]
    def encode(self, image):
        raise NotImplementedError

root, out = Path(sys.argv[1]), Path(sys.argv[2])
tiles = [(n, root / "masks" / f"{n}.tif", root / "images" / f"{n}.tif")
         for n in ("tile_000", "tile_001")]
synth = TileSynthesizer(Slow(), [100.0] * 4, [30.0] * 4, 0, overlap=8, batch_size=1,
                        provenance={"checkpoint": "slow"})
run_synthesis(synth, make_requests(tiles, out, 1, 0), out)
"""


def _start_job(script: Path, toy_root: Path, out: Path) -> subprocess.Popen[str]:
    """Start the stand-in synthesis job (``script``) on ``out``."""
    return subprocess.Popen(
        [sys.executable, str(script), str(toy_root), str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_writing(proc: subprocess.Popen[str], out: Path, seconds: float = 600.0) -> Path:
    """Wait for the job's signal that it writes a tile: its ``.part`` file in ``out``
    (``seconds`` bounds a failure only: a busy machine may take minutes to start it)."""
    deadline = time.monotonic() + seconds
    while not (parts := list(out.glob(".*.part"))):
        if proc.poll() is not None:
            raise AssertionError(f"the job ended before writing:\n{proc.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, "the job never started writing"
        time.sleep(0.05)
    return parts[0]


def test_resume_after_kill_9(toy_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    script = tmp_path / "job.py"
    script.write_text(_KILL_SCRIPT)
    proc = _start_job(script, toy_root, out)
    try:
        _wait_writing(proc, out)
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    finals = list(out.glob("*.tif"))
    assert len(finals) < 2
    for path in finals:  # anything with a final name is complete
        assert read_provenance(path) is not None
    requests = make_requests(_toy(toy_root), out, 1, 0)
    gen = ConstantGenerator()
    run_synthesis(
        _synth(gen, overlap=8, batch_size=1, provenance={"checkpoint": "slow"}), requests, out
    )
    assert sorted(p.name for p in out.glob("*.tif")) == ["tile_000_s0.tif", "tile_001_s0.tif"]
    assert not list(out.glob(".*"))
    for req in requests:
        assert _read(req.output).shape == (4, 128, 128)


def test_a_second_synthesis_on_the_same_out_leaves_the_first_alone(
    toy_root: Path, tmp_path: Path
) -> None:
    """The first run (a slow job in its own process) is writing a tile when a second
    run on the same ``out`` starts: the first is not disturbed and finishes."""
    out = tmp_path / "out"
    script = tmp_path / "job.py"
    script.write_text(_KILL_SCRIPT.replace("time.sleep(0.05)", "time.sleep(0.1)"))
    proc = _start_job(script, toy_root, out)
    try:
        first = _wait_writing(proc, out)
        requests = make_requests(_toy(toy_root), out, 1, 0)
        synth = _synth(
            ConstantGenerator(), overlap=8, batch_size=1, provenance={"checkpoint": "slow"}
        )
        run_synthesis(synth, requests, out)
        assert proc.wait(timeout=120) == 0, proc.communicate()[1][-2000:]
    finally:
        proc.kill()
        proc.wait()
    assert first.name.startswith(".tile_000_s0.pid")
    assert sorted(p.name for p in out.glob("*.tif")) == ["tile_000_s0.tif", "tile_001_s0.tif"]
    assert read_provenance(out / "tile_000_s0.tif") is not None
    assert not list(out.glob(".*"))


def test_unknown_classes_in_a_mask(tmp_path: Path) -> None:
    mask = np.ones((40, 40), np.uint8)
    mask[5, 7] = 9
    mask_path = _write_raster(tmp_path / "masks" / "bad.tif", mask)
    image = _write_raster(tmp_path / "images" / "bad.tif", np.zeros((4, 40, 40), np.uint8))
    req = make_requests([("bad", mask_path, image)], tmp_path / "out", 1, 0)[0]
    with pytest.raises(DataError, match=r"bad\.tif.*\[9\]"):
        _synth(MaskGenerator()).run(req)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    # a label map that maps the raw value to a class makes it valid
    _synth(MaskGenerator(), label_map={9: 2}).run(req)
    assert req.output.exists()


def test_band_count_unlike_the_checkpoints(toy_root: Path, tmp_path: Path) -> None:
    image = _write_raster(
        tmp_path / "rgb.tif",
        np.zeros((3, 128, 128), np.uint8),
        transform=from_origin(350000, 4320000, 1, 1),
    )
    req = make_requests(
        [("tile_000", toy_root / "masks" / "tile_000.tif", image)], tmp_path / "out", 1, 0
    )[0]
    with pytest.raises(DataError, match=r"rgb\.tif.*3 band\(s\).*4"):
        _synth(MaskGenerator(), style="encoder").run(req)


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothing\.ckpt.*does not exist"):
        load_chip_generator(tmp_path / "nothing.ckpt")


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="style"):
        _synth(MaskGenerator(), style="painting")
    with pytest.raises(ValueError, match="4 band"):
        TileSynthesizer(MaskGenerator(), [0.0] * 3, [1.0] * 3, 0)
    with pytest.raises(ValueError, match="samples"):
        make_requests([], "out", 0, 0)


def test_toy_world_tiles_larger_than_a_block(tmp_path: Path) -> None:
    """Block-aligned strips: a tile taller than one GeoTIFF block row is written whole."""
    rng = np.random.default_rng(1)
    mask = _write_raster(tmp_path / "m" / "big.tif", rng.integers(0, 7, (300, 280), np.uint8))
    image = _write_raster(tmp_path / "i" / "big.tif", np.zeros((4, 300, 280), np.uint8))
    req = make_requests([("big", mask, image)], tmp_path / "out", 1, 0)[0]
    synth = _synth(MaskGenerator(), block_size=128)
    synth.run(req)
    streamed = np.concatenate(list(synth.stream(req)), axis=1)
    from synthsat.synthesis.writer import to_raw

    expected = to_raw(streamed, np.array(MEAN, np.float32), np.array(STD, np.float32), "uint8")
    with rasterio.open(req.output) as out:
        assert out.block_shapes[0] == (128, 128)
        assert np.array_equal(out.read(), expected)


class NoiseEcho(nn.Module):
    """Outputs its noise input (band b = noise channel b): shows which noise each chip got."""

    num_classes = 7
    out_bands = 4
    chip_size = 32
    z_dim = 4
    noise_dim = 4
    noise_cell = 4

    def generate(self, onehot: Tensor, z: Tensor, noise: Tensor | None = None) -> Tensor:
        assert noise is not None and noise.shape == (onehot.shape[0], 4, 32, 32)
        return noise.clone()

    def encode(self, image: Tensor) -> tuple[Tensor, Tensor]:
        raise AssertionError("not used")


def test_chips_cut_their_noise_from_one_field_per_tile(toy_root: Path) -> None:
    """Overlapping chips get the same noise where they overlap, so the blended tile is
    exactly the tile's noise field: no chip grid in the texture, whatever the overlap."""
    from synthsat.models.noise import NoiseField

    req = make_requests(_toy(toy_root)[:1], "unused", 1, 5)[0]
    rng = torch.Generator().manual_seed(req.tile_seed)
    torch.randn(1, 4, generator=rng)  # the style draw comes first
    field = NoiseField(4, 128, 128, 4, rng).crop(0, 0, 128, 128).numpy()
    for overlap in (8, 16):
        synth = _synth(NoiseEcho(), style="random", overlap=overlap)
        tile = np.concatenate(list(synth.stream(req)), axis=1)
        np.testing.assert_allclose(tile, field, atol=1e-5)
    other = make_requests(_toy(toy_root)[:1], "unused", 2, 5)[1]  # another sample: new field
    tile = np.concatenate(list(_synth(NoiseEcho(), style="random").stream(other)), axis=1)
    assert np.abs(tile - field).mean() > 0.5


def test_default_overlap_is_half_a_chip(toy_root: Path) -> None:
    synth = _synth(MaskGenerator(), overlap=None)
    assert synth.overlap == 16
    req = make_requests(_toy(toy_root)[:1], "unused", 1, 0)[0]
    assert synth.record(req)["overlap"] == 16 and synth.record(req)["style_scope"] == "tile"


def test_bf16_autocast_stays_close_to_float32(toy_root: Path) -> None:
    req = make_requests(_toy(toy_root)[:1], "unused", 1, 0)[0]
    fp32 = np.concatenate(list(_synth(MaskGenerator()).stream(req)), axis=1)
    bf16 = np.concatenate(list(_synth(MaskGenerator(), autocast=True).stream(req)), axis=1)
    err = np.abs(fp32 - bf16)
    assert 0 < err.max() < 0.05  # bf16 keeps 8 bits of mantissa: outputs differ, slightly


def test_auto_style_follows_the_encoder() -> None:
    class NoEncoder(MaskGenerator):
        has_encoder = False

    assert _synth(MaskGenerator(), style="auto").style == "encoder"
    assert _synth(NoEncoder(), style="auto").style == "random"
    with pytest.raises(ValueError, match="style_scope"):
        _synth(MaskGenerator(), style_scope="pixel")


class ThreeBandGenerator(MaskGenerator):
    """:class:`MaskGenerator` making three bands (an RGB product)."""

    out_bands = 3

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(self.num_classes, 3, 3, padding=1)
        self.style = nn.Linear(self.z_dim, 3)


def _mask_with_unlabelled(path: Path, height: int, width: int) -> np.ndarray:
    """Classes 1..6 in stripes, class 0 (the ignore index) in the top-left corner."""
    mask = (np.arange(width)[None, :] // 16 % 6 + 1).repeat(height, 0).astype(np.uint8)
    mask[: height // 3, : width // 4] = 0
    _write_raster(path, mask)
    return mask


def _tiff_shorts(path: Path) -> dict[int, tuple[int, ...]]:
    """The SHORT tags of a classic TIFF's first IFD (262 photometric, 338 extra samples)."""
    data = path.read_bytes()
    order = "<" if data[:2] == b"II" else ">"
    assert struct.unpack(order + "H", data[2:4])[0] == 42, "classic TIFF expected"
    ifd = struct.unpack(order + "I", data[4:8])[0]
    tags = {}
    for i in range(struct.unpack(order + "H", data[ifd : ifd + 2])[0]):
        entry = data[ifd + 2 + 12 * i : ifd + 14 + 12 * i]
        tag, kind, count, offset = struct.unpack(order + "HHII", entry)
        if kind == 3:  # SHORT: inline when it fits in 4 bytes
            raw = entry[8:] if count <= 2 else data[offset : offset + 2 * count]
            tags[tag] = struct.unpack(order + f"{count}H", raw[: 2 * count])
    return tags


def test_outputs_are_gis_clean_geotiffs(tmp_path: Path) -> None:
    """4 bands (R, G, B, NIR): MINISBLACK with no alpha band (NIR was tagged alpha); band
    names as descriptions; the unlabelled pixels hidden by an internal nodata mask with
    their values kept; files 0644 under umask 022 (mkstemp's 0600 before); provenance."""
    mask_path = tmp_path / "masks" / "m.tif"
    mask = _mask_with_unlabelled(mask_path, 70, 90)
    image = _write_raster(tmp_path / "images" / "m.tif", np.full((4, 70, 90), 120, np.uint8))
    requests = make_requests([("m", mask_path, image)], tmp_path / "out", 1, 0)
    old_umask = os.umask(0o022)
    try:
        synth = _synth(
            MaskGenerator(),
            style="random",
            band_names=["red", "green", "blue", "nir"],
            rgb_bands=[0, 1, 2],
        )
        run_synthesis(synth, requests, tmp_path / "out")
    finally:
        os.umask(old_umask)
    out = requests[0].output
    with rasterio.open(out) as src:
        assert [c.name for c in src.colorinterp] == ["red", "green", "blue", "undefined"]
        assert src.descriptions == ("red", "green", "blue", "nir")
        assert src.nodata is None
        assert [f.name for f in src.mask_flag_enums[3]] == ["per_dataset"]
        valid = src.dataset_mask()
        values = src.read()
        assert src.overviews(1) == []
        assert json.loads(src.tags()["SYNTHSAT_PROVENANCE"])["seed"] == 0
    shorts = _tiff_shorts(out)
    assert shorts[262] == (1,)  # MINISBLACK
    assert shorts[338] == (0, 0, 0)  # three extra samples, unspecified (not alpha = 2)
    np.testing.assert_array_equal(valid, np.where(mask == 0, 0, 255))
    assert int((valid == 0).sum()) == 23 * 22
    modes = [p.stat().st_mode & 0o777 for p in (out, tmp_path / "out" / "manifest.json")]
    assert modes == [0o644, 0o644]

    # the same synthesis without names or RGB bands: the same pixel values
    plain = make_requests([("m", mask_path, image)], tmp_path / "plain", 1, 0)
    run_synthesis(_synth(MaskGenerator(), style="random"), plain, tmp_path / "plain")
    np.testing.assert_array_equal(_read(plain[0].output), values)
    with rasterio.open(plain[0].output) as src:
        assert [c.name for c in src.colorinterp] == ["gray", "undefined", "undefined", "undefined"]
        assert src.descriptions == (None, None, None, None)


def test_three_band_cloud_optimised_output(tmp_path: Path) -> None:
    """3 bands: photometric RGB; ``cog=True``: COG layout with overviews, the same
    pixels and mask as the plain GeoTIFF."""
    mask_path = tmp_path / "masks" / "m.tif"
    mask = _mask_with_unlabelled(mask_path, 150, 200)
    outputs = {}
    for cog in (False, True):
        requests = make_requests([("m", mask_path, None)], tmp_path / str(cog), 1, 5)
        synth = _synth(
            ThreeBandGenerator(),
            mean=MEAN[:3],
            std=STD[:3],
            style="random",
            dtype="uint8",
            block_size=64,
            band_names=["r", "g", "b"],
            cog=cog,
        )
        run_synthesis(synth, requests, tmp_path / str(cog))
        outputs[cog] = requests[0].output
    with rasterio.open(outputs[False]) as a, rasterio.open(outputs[True]) as b:
        for src in (a, b):
            assert [c.name for c in src.colorinterp] == ["red", "green", "blue"]
            assert src.descriptions == ("r", "g", "b")
            assert src.block_shapes[0] == (64, 64)
        assert a.overviews(1) == [] and "LAYOUT" not in a.tags(ns="IMAGE_STRUCTURE")
        assert b.overviews(1) == [2, 4] and b.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        np.testing.assert_array_equal(a.read(), b.read())
        np.testing.assert_array_equal(b.dataset_mask(), np.where(mask == 0, 0, 255))
        assert json.loads(b.tags()["SYNTHSAT_PROVENANCE"])["seed"] == 5
    for path in outputs.values():
        assert _tiff_shorts(path)[262] == (2,) and 338 not in _tiff_shorts(path)  # RGB
    assert (outputs[True].stat().st_mode & 0o077) == (0o666 & ~_umask()) & 0o077
    assert not list((tmp_path / "True").glob(".*"))


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


def test_names_and_records_have_one_owner() -> None:
    import synthsat.synthesis as synthesis
    from synthsat.data import synthetic_tiles
    from synthsat.synthesis import writer

    for name in ("output_name", "read_provenance", "write_manifest"):
        assert getattr(synthesis, name) is getattr(synthetic_tiles, name)
    assert (synthesis.PROVENANCE_TAG, synthesis.MANIFEST) == (
        "SYNTHSAT_PROVENANCE",
        "manifest.json",
    )
    assert writer.PROVENANCE_TAG is synthetic_tiles.PROVENANCE_TAG
    (first, second) = make_requests([("a", Path("m/a.tif"), None)], "out", 2, seed=3)
    assert second.output == Path("out/a_s1.tif")
    assert derive_seed(3, "tile_000", 1) == 3576258240928014603  # pinned: outputs depend on it
    assert first.tile_seed == derive_seed(3, "a", 0)


def test_gan_provenance_fields_and_order(toy_root: Path) -> None:
    from synthsat.synthesis import SynthesizerBase

    synth = _synth(MaskGenerator(), style="random")
    assert isinstance(synth, SynthesizerBase)
    (request,) = make_requests(_toy(toy_root)[:1], "out", 1, seed=3)
    record = synth.record(request)
    assert list(record) == [
        *RECORD_HEAD,
        "style",
        "style_scope",
        "chip_size",
        "overlap",
        "checkpoint",
        "lambda_div",
    ]
    assert [record[k] for k in ("style", "style_scope", "chip_size", "overlap")] == [
        "random",
        "tile",
        32,
        8,
    ]


def test_a_survivor_writes_the_tile_of_a_synthesis_killed_beside_it(
    toy_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two syntheses on one ``out``; the first (a slow job in its own process) is killed
    with SIGKILL while writing ``tile_000``, which the second skipped as busy: the second
    waits for it, finds its writer gone and writes it, so no tile is missing."""
    out = tmp_path / "out"
    script = tmp_path / "job.py"
    script.write_text(_KILL_SCRIPT.replace("time.sleep(0.05)", "time.sleep(2)"))
    proc = _start_job(script, toy_root, out)
    requests = make_requests(_toy(toy_root), out, 1, 0)
    synth = _synth(ConstantGenerator(), overlap=8, batch_size=1, provenance={"checkpoint": "slow"})
    result: dict[str, object] = {}

    def second() -> None:
        try:
            result["writer"] = run_synthesis(synth, requests, out)
        except BaseException as err:  # noqa: BLE001 - reported by the test
            result["error"] = err

    thread = threading.Thread(target=second)
    try:
        _wait_writing(proc, out)
        with caplog.at_level(logging.INFO, logger="synthsat.synthesis.predict"):
            thread.start()
            wait = time.monotonic() + 600  # a failure bound: the second's tile is the signal
            while not requests[1].output.exists() and thread.is_alive():
                assert time.monotonic() < wait, "the second synthesis never wrote its tile"
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)
            thread.join(timeout=600)
    finally:
        proc.kill()
        proc.wait()
    assert not thread.is_alive() and "error" not in result, result
    writer = result["writer"]
    assert isinstance(writer, predict.SynthesisWriter)
    assert sorted(r["tile"] for r in writer.written) == ["tile_000", "tile_001"]
    assert writer.skipped == []
    assert f"{requests[0].output}: its writer is gone; writing it here" in caplog.messages
    assert sorted(p.name for p in out.glob("*.tif")) == ["tile_000_s0.tif", "tile_001_s0.tif"]
    assert read_provenance(requests[0].output) is not None
    assert not list(out.glob(".*"))
