"""Time one generator + discriminator training step of a generator preset.

Usage::

    python benchmarks/generator_step.py [--preset cpu] [--size 64] [--batch 8] [--steps 20]

Runs ``GeneratorTask.training_step`` inside a Lightning Trainer on random 4-band
patches with 7-class masks and prints the median and mean wall time and process CPU
time per step (G and D update each), excluding warm-up steps.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.data import DataLoader, Dataset

CONF = Path(__file__).resolve().parents[1] / "conf" / "generator"


class RandomPatches(Dataset):
    """Random normalised images with blocky random masks."""

    def __init__(self, n: int, bands: int, classes: int, size: int) -> None:
        self.n, self.bands, self.classes, self.size = n, bands, classes, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(i)
        coarse = torch.randint(
            0, self.classes, (1, 1, self.size // 8, self.size // 8), generator=g
        ).float()
        mask = torch.nn.functional.interpolate(coarse, scale_factor=8).long()[0, 0]
        return {"image": torch.randn(self.bands, self.size, self.size, generator=g), "mask": mask}


class StepTimer(L.Callback):
    """Wall time of each training batch."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self._t0 = self._c0 = 0.0

    def on_train_batch_start(self, *args: Any) -> None:
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def on_train_batch_end(self, *args: Any) -> None:
        self.times.append(time.perf_counter() - self._t0)
        self.cpu_times.append(time.process_time() - self._c0)


def main() -> None:
    """Parse arguments, run the steps and print the timings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--lambda-div", type=float, default=None)
    args = parser.parse_args()

    classes, bands = 7, 4
    with initialize_config_dir(str(CONF.parents[0]), version_base="1.3"):
        root = f"paths.root={CONF.parents[1]}"
        cfg = compose("train_generator", overrides=[f"generator={args.preset}", root]).generator
    cfg.patch_size = args.size
    if args.lambda_div is not None:
        cfg.lambda_div = args.lambda_div
    data = {
        "classes": [f"c{i}" for i in range(classes)],
        "bands": bands,
        "rgb_bands": [0, 1, 2],
        "mean": [0.0] * bands,
        "std": [1.0] * bands,
        "ignore_index": 0,
    }
    torch.manual_seed(0)
    task = instantiate(cfg, data=data)
    loader = DataLoader(
        RandomPatches(args.batch * (args.steps + args.warmup), bands, classes, args.size),
        batch_size=args.batch,
    )
    timer = StepTimer()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=args.steps + args.warmup,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(task, loader)
    times, cpu = timer.times[args.warmup :], timer.cpu_times[args.warmup :]
    n_params = {
        name: sum(p.numel() for p in getattr(task, name).parameters())
        for name in ("generator", "encoder", "discriminator")
        if getattr(task, name) is not None
    }
    print(
        f"preset={args.preset} size={args.size} batch={args.batch} "
        f"lambda_div={cfg.lambda_div} threads={torch.get_num_threads()} params={n_params}"
    )
    print(
        f"G+D step: median {statistics.median(times):.3f} s, mean {statistics.mean(times):.3f} s,"
        f" min {min(times):.3f} s over {len(times)} steps"
    )
    # CPU time is robust to other processes competing for the cores; with all threads
    # busy, an uncontended step takes about cpu / threads seconds of wall time.
    threads = torch.get_num_threads()
    print(
        f"CPU time per step: median {statistics.median(cpu):.3f} s "
        f"(/ {threads} threads = {statistics.median(cpu) / threads:.3f} s)"
    )


if __name__ == "__main__":
    main()
