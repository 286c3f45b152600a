"""The synthesis benchmark's two methods do the same job (benchmarks/synthesis.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import rasterio

SPEC = importlib.util.spec_from_file_location(
    "bench_synthesis", Path(__file__).resolve().parents[1] / "benchmarks" / "synthesis.py"
)
assert SPEC is not None and SPEC.loader is not None
bench = importlib.util.module_from_spec(SPEC)
sys.modules[SPEC.name] = bench  # dataclasses look their module up
SPEC.loader.exec_module(bench)


def test_preset_defaults_are_merged() -> None:
    cfg = bench.load_preset("cpu")
    assert "defaults" not in cfg and cfg["patch_size"] == 64 and cfg["net"]["noise_dim"] > 0


def test_centre_window_peaks_in_the_middle_with_a_floor() -> None:
    w = bench.centre_window(256)
    assert w.shape == (256, 256) and np.allclose(w, w.T) and np.allclose(w, w[::-1, ::-1])
    assert w.argmax() in {127 * 256 + 127, 127 * 256 + 128, 128 * 256 + 127, 128 * 256 + 128}
    assert w.min() >= bench.REF_FLOOR**2 * 0.999 and w.max() <= 1.0


def test_reference_and_ours_agree_on_a_single_chip(tmp_path: Path) -> None:
    """One 256 px chip: both blends reduce to the chip itself (same z, noise and weights)."""
    mask = bench.make_mask(tmp_path / "mask.tif", 256, 256)
    gen = bench.build_generator()
    bench.reference_job(gen, mask, tmp_path / "ref.tif")
    synth = bench.synthesizer(gen, bench.CONFIGS["ours-256"], batch_size=16)
    synth.run(bench.request(mask, tmp_path / "ours.tif"))
    with rasterio.open(tmp_path / "ref.tif") as a, rasterio.open(tmp_path / "ours.tif") as b:
        ref, ours = a.read().astype(int), b.read().astype(int)
    assert ref.shape == ours.shape == (4, 256, 256)
    assert ref.std() > 1.0  # not a constant image
    assert np.abs(ref - ours).max() <= 1  # rounding of channels-last vs contiguous floats
