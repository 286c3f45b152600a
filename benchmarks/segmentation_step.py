"""Time a segmentation training step and whole-tile inference, per memory format.

Usage::

    python benchmarks/segmentation_step.py [--preset tiny] [--threads 1] [--steps 4]
    python benchmarks/segmentation_step.py --study     # the Dubai study's step, fp32 / bf16

Builds the preset's U-Net (``conf/segmentation/<preset>.yaml``, 3 bands, 6 classes like
the Dubai data) through ``SegmentationTask`` and times, with and without
``channels_last``: one Adam step on a batch of 8 random 256 px patches, and one forward
pass over a 1504 x 2176 tile (a Dubai test image, padded to a multiple of 32). Prints
the mean seconds after one warm-up call.

``--study`` times instead the Dubai study's training step (``segmentation=tiny``,
channels-last, a batch of 32 patches of 64 px) in float32 and under bfloat16 autocast
(``trainer.precision=bf16-mixed``), alternating the two so that a busy machine slows
both alike; bfloat16 pays off on CPUs with AMX or avx512_bf16 (printed).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf" / "segmentation"
METADATA = {
    "classes": ["building", "land", "road", "vegetation", "water", "unlabeled"],
    "bands": 3,
    "ignore_index": 255,
    "scored_classes": [0, 1, 2, 3, 4],
    "mean": np.zeros(3).tolist(),
    "std": np.ones(3).tolist(),
}


def mean_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Mean wall time of ``fn`` over ``repeats`` calls, after one warm-up call."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def bench(preset: str, channels_last: bool, steps: int) -> tuple[float, float]:
    """(training step s, tile inference s) of ``preset`` in one memory format."""
    cfg = OmegaConf.load(CONF / f"{preset}.yaml")
    torch.manual_seed(0)
    task = instantiate(cfg, metadata=METADATA, channels_last=channels_last, _convert_="all")
    optimiser = torch.optim.Adam(task.parameters(), lr=1e-3)
    image = torch.randn(8, 3, 256, 256)
    target = torch.randint(0, 6, (8, 256, 256))

    def step() -> None:
        optimiser.zero_grad()
        loss = task.criterion(task(image), target)
        loss.backward()
        optimiser.step()

    tile = torch.randn(1, 3, 1504, 2176)

    def infer() -> None:
        with torch.inference_mode():
            task(tile)

    train_s = mean_seconds(step, steps)
    task.eval()
    return train_s, mean_seconds(infer, 1)


def study_step(steps: int, rounds: int = 3) -> dict[str, float]:
    """Mean seconds of the study's training step in float32 and bf16 autocast."""
    cfg = OmegaConf.load(CONF / "tiny.yaml")
    torch.manual_seed(0)
    task = instantiate(cfg, metadata=METADATA, channels_last=True, _convert_="all")
    optimiser = torch.optim.Adam(task.parameters(), lr=1e-3)
    image = torch.randn(32, 3, 64, 64).to(memory_format=torch.channels_last)
    target = torch.randint(0, 6, (32, 64, 64))

    def step(bf16: bool) -> None:
        optimiser.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = task.criterion(task(image).float(), target)
        loss.backward()
        optimiser.step()

    times: dict[str, list[float]] = {"float32": [], "bf16-mixed": []}
    for _ in range(rounds):
        times["float32"].append(mean_seconds(lambda: step(False), steps))
        times["bf16-mixed"].append(mean_seconds(lambda: step(True), steps))
    return {k: float(np.median(v)) for k, v in times.items()}


def cpu_flags() -> list[str]:
    """The CPU's bfloat16 features (Linux), for the printout."""
    info = Path("/proc/cpuinfo")
    flags = info.read_text().split() if info.exists() else []
    return sorted({f for f in flags if f in ("avx512_bf16", "amx_bf16", "amx_tile")})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--study", action="store_true", help="the Dubai study's step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.study:
        print(f"Dubai study step (tiny, 32 x 64 px), {args.threads} thread(s); {cpu_flags()}")
        times = study_step(max(args.steps, 5))
        for name, seconds in times.items():
            print(f"{name:>11}: {seconds:.3f} s per step")
        print(f"bf16-mixed speed-up: {times['float32'] / times['bf16-mixed']:.2f}x")
        return
    print(f"segmentation={args.preset}, {args.threads} thread(s)")
    results = {fmt: bench(args.preset, fmt, args.steps) for fmt in (False, True)}
    for fmt, (train_s, infer_s) in results.items():
        name = "channels_last" if fmt else "contiguous"
        print(f"{name:>14}: train step {train_s:.2f} s, 1504x2176 tile inference {infer_s:.2f} s")
    (t0, i0), (t1, i1) = results[False], results[True]
    print(f"channels_last speed-up: train {t0 / t1:.2f}x, inference {i0 / i1:.2f}x")


if __name__ == "__main__":
    main()
