"""Time a segmentation training step and whole-tile inference, per memory format.

Usage::

    python benchmarks/segmentation_step.py [--preset tiny] [--threads 1] [--steps 4]

Builds the preset's U-Net (``conf/segmentation/<preset>.yaml``, 3 bands, 6 classes like
the Dubai data) through ``SegmentationTask`` and times, with and without
``channels_last``: one Adam step on a batch of 8 random 256 px patches, and one forward
pass over a 1504 x 2176 tile (a Dubai test image, padded to a multiple of 32). Prints
the mean seconds after one warm-up call.
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
    cfg = OmegaConf.load(CONF / f"{preset}.yaml").segmentation
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"segmentation={args.preset}, {args.threads} thread(s)")
    results = {fmt: bench(args.preset, fmt, args.steps) for fmt in (False, True)}
    for fmt, (train_s, infer_s) in results.items():
        name = "channels_last" if fmt else "contiguous"
        print(f"{name:>14}: train step {train_s:.2f} s, 1504x2176 tile inference {infer_s:.2f} s")
    (t0, i0), (t1, i1) = results[False], results[True]
    print(f"channels_last speed-up: train {t0 / t1:.2f}x, inference {i0 / i1:.2f}x")


if __name__ == "__main__":
    main()
