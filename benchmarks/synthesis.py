"""Synthesis speed, memory and seams: the streaming tile job vs the original method.

What is measured, per tile size (a ``size x size`` 4-band ``uint8`` tile made from a
blocky 7-class mask; ``--strip ROWS`` makes it a full-width ``ROWS x size`` strip):

* **Mpx/s** — tile pixels divided by the wall time of the whole job: reading the mask,
  (ours) checking its values, generating every chip, blending, quantising and writing
  the compressed tiled GeoTIFF. Each case first runs once, untimed, on the top 256 rows
  of its tile (warm-up: kernel selection, allocator, first-call costs; a bf16 case
  warms up with its error pass, below), then ``--repeats`` times (default 3) on the
  whole tile; the table shows the median and the spread (min–max) of the repeats.
  Nothing is extrapolated.
* **peak RSS** — the process's peak resident memory during the timed repeats (on Linux
  the high-water mark is reset after the warm-up; elsewhere it is ``ru_maxrss`` since
  the process started), and in brackets its growth over the RSS just before them
  (about 1 GiB is torch, Lightning and the generator: the growth is what the job
  needs). Every case runs in its own subprocess, so cases share nothing.
* **work** — generator pixels per tile pixel (chips x chip area / tile area): what the
  chip size and overlap cost, before any per-call overhead.
* **seam_ratio**, **acf_peak** — :func:`synthsat.metrics.seams.seam_scores` of the
  written GeoTIFF, on the chip grid of the method that made it (about 1 and about 0
  when chip borders are invisible).
* **bf16 err** — for the bfloat16 cases, the max and mean absolute difference of the
  normalised output (before quantisation) from the fp32 output of the same
  configuration on the same tile: an untimed pass over the whole tile that runs both
  in lockstep, streaming (it is the bf16 case's warm-up).

Cases (all from the same generator: the ``cpu`` preset, ``conf/generator/cpu.yaml``,
built with random weights after ``torch.manual_seed(0)``; the same tile; the same style
code ``z`` and the same tile-wide :class:`~synthsat.models.noise.NoiseField`, both drawn
from the tile's seed):

* ``reference`` — the original method: 256 px chips at stride 128, one chip per
  generator call under ``torch.no_grad`` (fp32, contiguous), each chip weighted by a
  centre-weighted separable Hann window with a small floor (:func:`centre_window`) into
  whole-tile weighted-sum and weight-sum arrays, divided at the end, written at once.
* ``ours-*`` — :class:`~synthsat.synthesis.gan_synthesizer.TileSynthesizer` with its defaults
  (``overlap`` = half a chip, cosine-taper blend, rows streamed to an atomic GeoTIFF,
  ``torch.inference_mode``), channels-last, batched: chips of the generator's patch
  size (64 px, overlap 32) or of 256 px (overlap 128), each in fp32 and under bfloat16
  autocast.

Every case runs with the same fixed number of threads (``--threads``, default 1:
``torch.set_num_threads`` and ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` in the child).
The load average before and after each case is recorded: on a busy machine the
spread grows and figures from different runs should not be compared.

bfloat16 on CPUs: where oneDNN has no bf16 kernels for the CPU (no AVX512-BF16/AMX),
bf16 convolutions fall back to slow reference code and are several times slower than
fp32. ``--bf16 auto`` (default) then runs the bf16 cases at the smallest size only;
``--bf16 all`` runs them everywhere, ``--bf16 off`` not at all.

Run: ``python benchmarks/synthesis.py`` (default ``--sizes 512 1024``: about 12 minutes
on 2 cores that were busy with training runs, roughly half that idle; ``--bf16 off``
saves the bf16 cases, a third of it on a CPU without native bf16). For the large tiles,
``--sizes 2048 8192 --json results.json`` (long: the generator does 2-4x the tile's
pixels in every case), or ``--strip ROWS`` to time a full-width strip of them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = [90.0, 100.0, 80.0, 120.0], [40.0, 35.0, 30.0, 45.0]
CLASSES, BANDS, IGNORE = 7, 4, 0
TILE, SEED = "bench", 0
REF_CHIP, REF_OVERLAP = 256, 128
#: Floor of the reference's 1-D centre weight (peak 1); the 2-D weight's floor is its square.
REF_FLOOR = 1e-2
#: Rows of the tile the warm-up runs on.
WARMUP_ROWS = 256
#: Mask cell side and offset: class edges fall on every column equally, not on chip borders.
CELL, CELL_OFFSET = 37, 11


@dataclass(frozen=True)
class Config:
    """One benchmarked configuration.

    Attributes:
        name: key (``--configs``).
        label: description in the table.
        method: ``reference`` or ``ours``.
        chip: chip side; None: the generator's patch size.
        overlap: chip overlap; None: TileSynthesizer's default (half a chip).
        autocast: bfloat16 autocast.
    """

    name: str
    label: str
    method: str
    chip: int | None
    overlap: int | None
    autocast: bool


CONFIGS = {
    c.name: c
    for c in (
        Config("reference", "ref 256/128 fp32", "reference", REF_CHIP, REF_OVERLAP, False),
        Config("ours-64", "ours 64/32 fp32", "ours", None, None, False),
        Config("ours-64-bf16", "ours 64/32 bf16", "ours", None, None, True),
        Config("ours-256", "ours 256/128 fp32", "ours", 256, None, False),
        Config("ours-256-bf16", "ours 256/128 bf16", "ours", 256, None, True),
    )
}


# -- inputs ----------------------------------------------------------------------------
def make_mask(path: Path, height: int, width: int, seed: int = 0) -> Path:
    """A blocky 7-class mask (classes 0..6, 0 = no-data) in 37 px cells, written in strips.

    The cells are offset so that class edges are spread evenly over all columns and rows
    rather than lying on the chip borders (which would inflate the seam scores).
    """
    rng = np.random.default_rng(seed)
    cells = rng.integers(
        0, CLASSES, ((height + CELL_OFFSET) // CELL + 1, (width + CELL_OFFSET) // CELL + 1)
    ).astype(np.uint8)
    col_cells = (np.arange(width) + CELL_OFFSET) // CELL
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
            row_cells = (np.arange(row, row + h) + CELL_OFFSET) // CELL
            dst.write(cells[row_cells][:, col_cells][None], window=Window(0, row, width, h))
    return path


def load_preset(name: str) -> dict[str, Any]:
    """A generator preset from ``conf/generator``, composed by Hydra (defaults included)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train_generator", overrides=[f"generator={name}", f"paths.root={ROOT}"])
    preset = OmegaConf.to_container(cfg.generator, resolve=True)
    assert isinstance(preset, dict)
    return preset


def build_generator(preset: str = "cpu") -> Any:
    """The preset's generator with random weights (seed 0), as a chip generator."""
    from synthsat.synthesis.predict import TaskChipGenerator
    from synthsat.tasks.generator import GeneratorTask

    cfg = load_preset(preset)
    cfg.pop("_target_", None)
    cfg.pop("_recursive_", None)
    data = {
        "classes": [f"c{i}" for i in range(CLASSES)],
        "bands": BANDS,
        "rgb_bands": [0, 1, 2],
        "mean": MEAN,
        "std": STD,
        "ignore_index": IGNORE,
    }
    torch.manual_seed(0)
    return TaskChipGenerator(GeneratorTask(metadata=data, **cfg))


def request(mask: Path, output: Path) -> Any:
    """The tile request of the benchmark tile (one name and seed: one ``z`` and noise field)."""
    from synthsat.synthesis.requests import TileRequest

    return TileRequest(TILE, mask, None, 0, SEED, output)


# -- the two methods -------------------------------------------------------------------
def centre_window(chip: int, floor: float = REF_FLOOR) -> np.ndarray:
    """The reference's 2-D chip weight: separable Hann, largest at the centre, ``>= floor``.

    Returns:
        float32 ``(chip, chip)`` array in ``[floor**2, 1]``.
    """
    t = (np.arange(chip) + 0.5) / chip
    axis = np.maximum(np.sin(np.pi * t) ** 2, floor)
    return np.outer(axis, axis).astype(np.float32)


def reference_job(gen: Any, mask: Path, out: Path) -> None:
    """The original method: whole-tile weighted averaging of 256 px chips at stride 128."""
    from synthsat.models.noise import NoiseField
    from synthsat.models.spade import mask_to_onehot
    from synthsat.synthesis.windows import ChipGrid
    from synthsat.synthesis.writer import output_profile, to_raw

    chip = REF_CHIP
    rng = torch.Generator().manual_seed(request(mask, out).tile_seed)
    z = torch.randn(1, gen.z_dim, generator=rng)  # drawn as TileSynthesizer draws them
    with rasterio.open(mask) as src:
        raw_mask = src.read(1)
    height, width = raw_mask.shape
    grid = ChipGrid(height, width, chip, REF_OVERLAP)
    noise_dim = int(getattr(gen, "noise_dim", 0))
    field = None
    if noise_dim:
        field = NoiseField(
            noise_dim, grid.padded_height, grid.padded_width, int(gen.noise_cell), rng
        )
    labels = np.full((grid.padded_height, grid.padded_width), IGNORE, dtype=np.int64)
    labels[:height, :width] = raw_mask
    labels_t = torch.from_numpy(labels)
    window = centre_window(chip)
    total = np.zeros((gen.out_bands, grid.padded_height, grid.padded_width), np.float32)
    weight = np.zeros((grid.padded_height, grid.padded_width), np.float32)
    with torch.no_grad():
        for r in grid.rows:
            for c in grid.cols:
                onehot = mask_to_onehot(labels_t[None, r : r + chip, c : c + chip], CLASSES)
                noise = None if field is None else field.crop(r, c, chip, chip)[None]
                chip_out = gen.generate(onehot, z, noise=noise)[0].numpy()
                total[:, r : r + chip, c : c + chip] += chip_out * window
                weight[r : r + chip, c : c + chip] += window
    image = total[:, :height, :width] / weight[:height, :width]
    raw = to_raw(image, np.array(MEAN, np.float32), np.array(STD, np.float32), "uint8")
    out.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(out, "w", **output_profile(mask, gen.out_bands, "uint8")) as dst:
        dst.write(raw)


def synthesizer(gen: Any, cfg: Config, batch_size: int, autocast: bool | None = None) -> Any:
    """Our tile job for ``cfg`` (``autocast`` overrides the config's)."""
    from synthsat.synthesis.gan_synthesizer import TileSynthesizer

    chip = cfg.chip or gen.chip_size
    return TileSynthesizer(
        gen,
        MEAN,
        STD,
        IGNORE,
        style="random",
        overlap=cfg.overlap,
        batch_size=max(1, batch_size * gen.chip_size**2 // chip**2),
        chip_size=cfg.chip,
        dtype="uint8",
        channels_last=True,
        autocast=cfg.autocast if autocast is None else autocast,
    )


def bf16_error(gen: Any, cfg: Config, mask: Path, batch_size: int) -> dict[str, float]:
    """Max and mean |bf16 - fp32| of our normalised output for ``cfg`` on ``mask``."""
    bf16 = synthesizer(gen, cfg, batch_size, autocast=True)
    fp32 = synthesizer(gen, cfg, batch_size, autocast=False)
    req = request(mask, mask.with_name("unused.tif"))
    largest, total, count = 0.0, 0.0, 0
    for a, b in zip(bf16.stream(req), fp32.stream(req), strict=True):
        diff = np.abs(a - b)
        largest = max(largest, float(diff.max()))
        total += float(diff.sum(dtype=np.float64))
        count += diff.size
    return {"bf16_max_abs": largest, "bf16_mean_abs": total / max(count, 1)}


# -- one case, in its own process ------------------------------------------------------
def reset_peak_rss() -> bool:
    """Reset the process's peak RSS (Linux ``clear_refs``); False where that is unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_mib(key: str = "VmHWM") -> float | None:
    """``VmHWM`` (peak) or ``VmRSS`` (current) of this process in MiB; None off Linux."""
    try:
        found = re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(found.group(1)) / 1024 if found else None


def peak_rss_mib(was_reset: bool) -> float:
    """Peak RSS in MiB: since the reset if there was one, else since the process started."""
    if was_reset and (peak := rss_mib("VmHWM")) is not None:
        return peak
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # bytes there, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def child(args: argparse.Namespace) -> None:
    """Run one case and print its figures as a ``RESULT {json}`` line."""
    torch.set_num_threads(args.threads)
    from synthsat.metrics.seams import seam_scores

    cfg = CONFIGS[args.case]
    gen = build_generator(args.preset)
    mask, work = Path(args.mask), Path(args.work)
    if cfg.method == "reference":
        chip, overlap = REF_CHIP, REF_OVERLAP

        def job(tile: Path, out: Path) -> None:
            reference_job(gen, tile, out)

    else:
        synth = synthesizer(gen, cfg, args.batch_size)
        chip, overlap = synth.chip, int(synth.overlap)

        def job(tile: Path, out: Path) -> None:
            synth.run(request(tile, out))

    error: dict[str, float] = {}
    if cfg.autocast:  # the warm-up is the (untimed) full-tile bf16-vs-fp32 pass
        error = bf16_error(gen, cfg, mask, args.batch_size)
    else:
        job(Path(args.warmup_mask), work / "warmup.tif")
        (work / "warmup.tif").unlink()
    was_reset = reset_peak_rss()
    base = rss_mib("VmRSS")  # torch, the generator and what the warm-up left allocated
    times = []
    for k in range(args.repeats):
        out = work / f"run{k}.tif"
        start = time.perf_counter()
        job(mask, out)
        times.append(time.perf_counter() - start)
        if k < args.repeats - 1:
            out.unlink()
    peak = peak_rss_mib(was_reset)
    with rasterio.open(out) as src:
        height, width = src.height, src.width
        scores = seam_scores(src.read(), chip, overlap)
    result: dict[str, Any] = {
        "times_s": times,
        "peak_rss_mib": peak,
        "base_rss_mib": base,
        "rss_since": "warm-up" if was_reset else "process start",
        "chip": chip,
        "overlap": overlap,
        "height": height,
        "width": width,
        "chips": _chip_count(height, width, chip, overlap),
        **scores,
        **error,
    }
    print("RESULT " + json.dumps(result), flush=True)


def _chip_count(height: int, width: int, chip: int, overlap: int) -> int:
    """Chips of the grid of ``chip``/``overlap`` over the tile."""
    from synthsat.synthesis.windows import ChipGrid

    return len(ChipGrid(height, width, chip, overlap))


def run_case(
    cfg: Config, mask: Path, warmup: Path, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Run ``cfg`` in a subprocess with a fixed thread count; its figures, summarised."""
    work.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        __file__,
        "--case",
        cfg.name,
        "--mask",
        str(mask),
        "--warmup-mask",
        str(warmup),
        "--work",
        str(work),
        "--repeats",
        str(args.repeats),
        "--threads",
        str(args.threads),
        "--batch-size",
        str(args.batch_size),
        "--preset",
        args.preset,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    load_before = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"case {cfg.name} ({mask.name}) failed:\n{proc.stderr[-3000:]}")
    r: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    mpx = r["height"] * r["width"] / 1e6
    speeds = [mpx / t for t in r["times_s"]]
    r.update(
        config=cfg.name,
        label=cfg.label,
        autocast=cfg.autocast,
        mpx_s=statistics.median(speeds),
        mpx_s_min=min(speeds),
        mpx_s_max=max(speeds),
        load_before=load_before,
        load_after=os.getloadavg()[0],
    )
    return r


# -- report ----------------------------------------------------------------------------
def _fmt(value: float | None, spec: str) -> str:
    """``value`` formatted, or ``-`` when missing or nan."""
    return "-" if value is None or value != value else format(value, spec)


def table(results: list[dict[str, Any]]) -> str:
    """The results of one tile size as a text table."""
    ref = next((r for r in results if r["config"] == "reference"), None)
    head = (
        f"{'method / config':20s} {'Mpx/s median (min-max)':>26s} {'vs ref':>6s} "
        f"{'chips':>5s} {'work':>4s} {'RSS MiB (+run)':>14s} {'seam_ratio':>10s} "
        f"{'acf_peak':>8s} {'bf16 |err| max/mean':>19s} {'load':>9s}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        speed = f"{r['mpx_s']:.4f} ({r['mpx_s_min']:.4f}-{r['mpx_s_max']:.4f})"
        up = f"{r['mpx_s'] / ref['mpx_s']:.2f}x" if ref else "-"
        work = r["chips"] * r["chip"] ** 2 / (r["height"] * r["width"])
        base = r.get("base_rss_mib")
        rss = f"{r['peak_rss_mib']:.0f}" + (
            "" if base is None else f" (+{r['peak_rss_mib'] - base:.0f})"
        )
        err = f"{r['bf16_max_abs']:.1e}/{r['bf16_mean_abs']:.1e}" if "bf16_max_abs" in r else "-"
        lines.append(
            f"{r['label']:20s} {speed:>26s} {up:>6s} {r['chips']:5d} {work:4.1f} {rss:>14s} "
            f"{_fmt(r['seam_ratio'], '.3f'):>10s} {_fmt(r['acf_peak'], '.3f'):>8s} {err:>19s} "
            f"{r['load_before']:4.1f}/{r['load_after']:<4.1f}"
        )
    return "\n".join(lines)


def bf16_native() -> bool:
    """Whether oneDNN has bfloat16 kernels for this CPU (else bf16 convolutions are slow)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def main() -> None:
    """Parse arguments; run every (size, config) case or, with ``--case``, one of them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument(
        "--strip", type=int, default=0, help="synthesise a ROWS x size strip (0: whole tiles)"
    )
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (>= 3)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="our chips per generator call at the patch size (fewer for larger chips: same "
        "pixels per call)",
    )
    parser.add_argument("--bf16", choices=["auto", "all", "off"], default="auto")
    parser.add_argument("--preset", default="cpu", help="generator preset in conf/generator")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--mask", help=argparse.SUPPRESS)
    parser.add_argument("--warmup-mask", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error("--repeats must be at least 3 (a median and a spread need them)")
    if args.case:
        child(args)
        return

    native = bf16_native()
    bf16_sizes = {
        "all": set(args.sizes),
        "off": set(),
        "auto": set(args.sizes) if native else {min(args.sizes)},
    }[args.bf16]
    meta = {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_native": native,
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "repeats": args.repeats,
        "batch_size": args.batch_size,
        "preset": args.preset,
        "strip": args.strip,
        "load_start": os.getloadavg(),
    }
    print(
        f"torch {meta['torch']} ({meta['cpu_capability']}, oneDNN bf16 "
        f"{'native' if native else 'not native: slow'}), {args.threads} thread(s) per case, "
        f"{os.cpu_count()} CPUs, load average {meta['load_start'][0]:.1f}; "
        f"generator preset '{args.preset}', random weights; "
        f"{args.repeats} timed runs per case after a warm-up"
    )
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            height = min(args.strip, size) if args.strip else size
            mask = make_mask(Path(tmp) / f"mask_{size}.tif", height, size)
            warmup = make_mask(
                Path(tmp) / f"warmup_{size}.tif", min(WARMUP_ROWS, height), size, seed=1
            )
            rows = []
            for name in args.configs:
                cfg = CONFIGS[name]
                if cfg.autocast and size not in bf16_sizes:
                    continue
                r = run_case(cfg, mask, warmup, Path(tmp) / f"{size}" / name, args)
                r["size"] = size
                rows.append(r)
                results.append(r)
                print(
                    f"  {size}: {cfg.label}: {r['mpx_s']:.4f} Mpx/s "
                    f"({', '.join(f'{t:.1f}' for t in r['times_s'])} s)",
                    flush=True,
                )
            print(f"\n{height} x {size} px, 4 bands uint8:\n{table(rows)}\n", flush=True)
    skipped = sorted(set(args.sizes) - bf16_sizes)
    if skipped and any(CONFIGS[n].autocast for n in args.configs):
        print(
            f"bf16 cases not run at {skipped}: this CPU has no native bf16 kernels "
            "(--bf16 all runs them)"
        )
    print(
        "vs ref: median Mpx/s over the reference's; work: generator pixels per tile pixel; "
        "RSS: peak during the timed runs (+ over the process's RSS before them: torch, the "
        "generator); load: 1-min load average before/after the case"
    )
    if args.json:
        from synthsat.atomic import write_text

        write_text(
            args.json,
            json.dumps(
                {
                    "meta": meta,
                    "configs": [asdict(CONFIGS[n]) for n in args.configs],
                    "results": results,
                },
                indent=2,
            ),
        )
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
