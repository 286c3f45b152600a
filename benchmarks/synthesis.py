"""Synthesis speed, memory and seams: the streaming tile job vs the original method.

Cases: a 2048 x 2048 and an 8192 x 8192 4-band tile, made by

* ``ours`` — :class:`~synthsat.synthesis.tile_job.TileSynthesizer`: chips of the
  generator's patch size, a small overlap blended with a cosine taper, chips batched,
  ``torch.inference_mode``, channels-last, rows streamed to an atomic tiled GeoTIFF;
* ``reference`` — the original method, written plainly: 256 px chips at stride 128,
  one chip per generator call (``torch.no_grad``), every chip added with the same
  weight into whole-tile sum and count arrays, divided at the end, written at once.

Both use the ``cpu`` generator preset (``conf/generator/cpu.yaml``) with random
weights and ``style=random``. Each case runs in its own subprocess, which reports
its peak RSS (``ru_maxrss``), so the cases do not share memory.

By default (``--strip 256``) each case synthesises a full-width strip of ``--strip``
rows of the tile and its throughput is extrapolated to the whole tile by chip count
(time per chip x chips in the whole tile): per-chip cost does not depend on where the
chip is. The reference still allocates and fills its whole-tile arrays, so its
memory is that of the whole tile; ours streams, so its memory depends on the width
only. ``--strip 0`` runs whole tiles (slow on 2 cores: the reference needs ~4x the
generator work of ours).

The seam score is the mean absolute difference of neighbouring pixels across chip
borders (columns where a chip of that method starts or ends) divided by the same
over all other neighbouring columns: 1.0 means borders are invisible.

Run: ``python benchmarks/synthesis.py`` (``--sizes 2048 8192 --strip 256``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
import yaml
from rasterio.transform import from_origin

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = [90.0, 100.0, 80.0, 120.0], [40.0, 35.0, 30.0, 45.0]
REF_CHIP, REF_STRIDE = 256, 128


def make_mask(path: Path, height: int, width: int, seed: int = 0) -> Path:
    """A blocky 7-class mask (classes 1..6 in 32 px cells, some no-data), written in strips."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 7, (height // 32 + 1, width // 32 + 1), dtype=np.uint8)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=1,
        dtype="uint8",
        crs="EPSG:32618",
        tiled=True,
        compress="deflate",
        transform=from_origin(350000, 4320000, 1, 1),
    ) as dst:
        for row in range(0, height, 512):
            h = min(512, height - row)
            block = np.kron(
                cells[row // 32 : row // 32 + h // 32 + 1], np.ones((32, 32), np.uint8)
            )[:h, :width]
            dst.write(block[None], window=rasterio.windows.Window(0, row, width, h))
    return path


def build_generator() -> Any:
    """The ``cpu`` preset generator with random weights, as a chip generator."""
    from synthsat.synthesis.predict import TaskChipGenerator
    from synthsat.tasks.generator import GeneratorTask

    cfg = yaml.safe_load((ROOT / "conf/generator/cpu.yaml").read_text())
    cfg.pop("_target_")
    data = {
        "classes": [f"c{i}" for i in range(7)],
        "bands": 4,
        "rgb_bands": [0, 1, 2],
        "mean": MEAN,
        "std": STD,
        "ignore_index": 0,
    }
    torch.manual_seed(0)
    return TaskChipGenerator(GeneratorTask(data=data, **cfg))


def run_ours(mask: Path, out: Path, size: int, args: argparse.Namespace) -> dict[str, Any]:
    """The streaming tile job on ``mask``; chips of the full ``size`` tile for extrapolation."""
    from synthsat.synthesis.tile_job import TileSynthesizer, make_requests
    from synthsat.synthesis.windows import ChipGrid

    gen = build_generator()
    if args.channels_last:
        gen.net.to(memory_format=torch.channels_last)
    synth = TileSynthesizer(
        gen,
        MEAN,
        STD,
        ignore_index=0,
        style="random",
        overlap=args.overlap,
        batch_size=args.batch_size,
        chip_size=args.chip,
        dtype="uint8",
        channels_last=args.channels_last,
    )
    request = make_requests([("bench", mask, None)], out.with_suffix(""), 1, seed=0)[0]
    start = time.perf_counter()
    synth.run(request)
    elapsed = time.perf_counter() - start
    with rasterio.open(mask) as src:
        done = ChipGrid(src.height, src.width, synth.chip, args.overlap)
    full = ChipGrid(size, size, synth.chip, args.overlap)
    borders = sorted(
        {c for c in done.cols if c > 0}
        | {c + synth.chip for c in done.cols if c + synth.chip < size}
    )
    return {
        "elapsed": elapsed,
        "chips": len(done),
        "chips_full": len(full),
        "borders": borders,
        "chip": synth.chip,
        "out": str(request.output),
    }


def run_reference(mask: Path, out: Path, size: int, args: argparse.Namespace) -> dict[str, Any]:
    """The original method: fixed-weight averaging of 256 px chips at stride 128, in memory."""
    from synthsat.models.spade import mask_to_onehot
    from synthsat.synthesis.windows import chip_starts
    from synthsat.synthesis.writer import to_raw

    gen = build_generator()
    with rasterio.open(mask) as src:
        labels = torch.from_numpy(src.read(1).astype(np.int64))
        profile = src.profile
    height = labels.shape[0]
    # whole-tile accumulators, allocated and touched as the original does
    total = np.zeros((gen.out_bands, size, size), np.float32)
    count = np.zeros((size, size), np.float32)
    total.fill(0.0)
    count.fill(0.0)
    z = torch.randn(1, gen.z_dim, generator=torch.Generator().manual_seed(0))
    rows = [r for r in chip_starts(size, REF_CHIP, REF_CHIP - REF_STRIDE) if r + REF_CHIP <= height]
    cols = chip_starts(size, REF_CHIP, REF_CHIP - REF_STRIDE)
    start = time.perf_counter()
    with torch.no_grad():
        for r in rows:
            for c in cols:
                onehot = mask_to_onehot(labels[None, r : r + REF_CHIP, c : c + REF_CHIP], 7)
                total[:, r : r + REF_CHIP, c : c + REF_CHIP] += gen.generate(onehot, z)[0].numpy()
                count[r : r + REF_CHIP, c : c + REF_CHIP] += 1.0
    image = total / np.maximum(count, 1.0)
    raw = to_raw(image[:, :height], np.array(MEAN, np.float32), np.array(STD, np.float32), "uint8")
    profile.update(count=gen.out_bands, dtype="uint8", tiled=True, compress="deflate")
    out.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(raw)
    elapsed = time.perf_counter() - start
    n_full = len(chip_starts(size, REF_CHIP, REF_CHIP - REF_STRIDE)) ** 2
    borders = sorted(
        {c for c in cols if c > 0} | {c + REF_CHIP for c in cols if c + REF_CHIP < size}
    )
    return {
        "elapsed": elapsed,
        "chips": len(rows) * len(cols),
        "chips_full": n_full,
        "borders": borders,
        "chip": REF_CHIP,
        "out": str(out),
    }


def seam_score(path: str, borders: list[int], rows: int) -> float:
    """Mean |jump| across chip-border columns / mean |jump| across all other columns."""
    with rasterio.open(path) as src:
        image = src.read(window=rasterio.windows.Window(0, 0, src.width, min(rows, src.height)))
    jumps = np.abs(np.diff(image.astype(np.float32), axis=2)).mean(axis=(0, 1))
    at_border = np.zeros(len(jumps), bool)
    at_border[[b - 1 for b in borders if 0 < b <= len(jumps)]] = True
    if not at_border.any():
        return float("nan")  # a single chip column: no borders
    return float(jumps[at_border].mean() / max(jumps[~at_border].mean(), 1e-9))


def child(args: argparse.Namespace) -> None:
    """Run one case and print its figures as JSON (peak RSS of this process included)."""
    torch.set_num_threads(args.threads)
    runner = run_ours if args.case == "ours" else run_reference
    result = runner(Path(args.mask), Path(args.out), args.size, args)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument(
        "--strip", type=int, default=256, help="rows synthesised per case (0: the whole tile)"
    )
    parser.add_argument(
        "--chip", type=int, default=None, help="our chip size (default: the generator's patch size)"
    )
    parser.add_argument("--overlap", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--cases", nargs="+", default=["reference", "ours"])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--mask", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        child(args)
        return
    print(
        f"torch {torch.__version__}, {args.threads} thread(s); cpu generator, random init; "
        f"ours: chip {args.chip or 'patch size'}, overlap {args.overlap}, batch "
        f"{args.batch_size}, channels_last {args.channels_last}; reference: 256 px chips, "
        f"stride 128, batch 1"
    )
    if args.strip:
        print(
            f"each case synthesises a full-width strip of {args.strip} rows; Mpx/s is "
            "extrapolated to the whole tile by chip count"
        )
    results: dict[tuple[str, int], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            height = args.strip or size
            mask = make_mask(Path(tmp) / f"mask_{size}.tif", min(height, size), size)
            for case in args.cases:
                out = Path(tmp) / case / f"{size}.tif"
                cmd = [
                    sys.executable,
                    __file__,
                    "--case",
                    case,
                    "--mask",
                    str(mask),
                    "--out",
                    str(out),
                    "--size",
                    str(size),
                    "--overlap",
                    str(args.overlap),
                    "--batch-size",
                    str(args.batch_size),
                    "--threads",
                    str(args.threads),
                    "--channels-last" if args.channels_last else "--no-channels-last",
                ]
                if args.chip:
                    cmd += ["--chip", str(args.chip)]
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                if proc.returncode or not lines:
                    raise RuntimeError(f"case {case} {size} failed:\n{proc.stderr[-3000:]}")
                r = json.loads(lines[-1][len("RESULT ") :])
                r["mpx_s"] = size * size / 1e6 / (r["elapsed"] * r["chips_full"] / r["chips"])
                r["seam"] = seam_score(r["out"], r["borders"], height)
                results[(case, size)] = r
                print(
                    f"{case:9s} {size:5d}^2: {r['mpx_s']:.4f} Mpx/s, peak RSS "
                    f"{r['peak_rss_mib']:.0f} MiB, seam score {r['seam']:.3f} "
                    f"({r['chips']} of {r['chips_full']} chips of {r['chip']} px run in "
                    f"{r['elapsed']:.1f} s)",
                    flush=True,
                )
    for size in args.sizes:
        if ("ours", size) in results and ("reference", size) in results:
            o, ref = results[("ours", size)], results[("reference", size)]
            print(
                f"{size}^2: speed-up {o['mpx_s'] / ref['mpx_s']:.2f}x, seam score "
                f"{o['seam']:.3f} vs {ref['seam']:.3f}"
            )
    for case in args.cases:
        if (case, min(args.sizes)) in results and (case, max(args.sizes)) in results:
            lo, hi = results[(case, min(args.sizes))], results[(case, max(args.sizes))]
            print(
                f"{case}: peak RSS at {max(args.sizes)} / at {min(args.sizes)} = "
                f"{hi['peak_rss_mib'] / lo['peak_rss_mib']:.2f}"
            )


if __name__ == "__main__":
    main()
