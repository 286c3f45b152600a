"""Training-patch throughput of LandCoverDataModule for each source (256 x 256, batch 8).

Prints one line per source ending in ``patches/s``; the target is >= 400 on 2 cores.
For comparison it also measures torchgeo's RandomGeoSampler over the same GeoTIFFs
(reading every patch through GDAL, no cache).

Usage: python benchmarks/data_throughput.py [--patches 2400] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from torch.utils.data import DataLoader

from synthsat.data import ImageFolderSource, LandCoverDataModule, PairedRasterSource, toyworld

SHARED_DUBAI = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dubai"


def throughput(dm: LandCoverDataModule, patches: int) -> float:
    """Patches per second over ``patches`` training patches (after one warm-up batch)."""
    dm.patches_per_epoch = patches + dm.batch_size
    dm.setup()
    loader = dm.train_dataloader()
    it = iter(loader)
    next(it)
    start = time.perf_counter()
    n = 0
    for batch in it:
        n += batch["image"].shape[0]
    return n / (time.perf_counter() - start)


def torchgeo_baseline(root: Path, patches: int) -> float:
    """torchgeo RandomGeoSampler over the paired GeoTIFFs, no cache."""
    from torchgeo.datasets import stack_samples
    from torchgeo.samplers import RandomGeoSampler

    geo = PairedRasterSource(root, splits="splits.json").geo_dataset("train")
    sampler = RandomGeoSampler(geo, size=256, length=patches)
    loader = DataLoader(geo, sampler=sampler, batch_size=8, num_workers=2, collate_fn=stack_samples)
    start = time.perf_counter()
    n = sum(b["image"].shape[0] for b in loader)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patches", type=int, default=2400)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    common = dict(patch_size=256, batch_size=8, num_workers=args.workers)
    with tempfile.TemporaryDirectory() as tmp:
        root = toyworld.generate(Path(tmp) / "toyworld", tiles=8, size=1024, seed=0)
        cache = Path(tmp) / "cache"
        dm = LandCoverDataModule(
            PairedRasterSource(root, splits="splits.json"),
            classes=toyworld.CLASSES,
            bands=4,
            ignore_index=0,
            cache_dir=cache,
            **common,
        )
        rate = throughput(dm, args.patches)
        print(f"paired GeoTIFF rasters (toy world, 4 bands, cached): {rate:.0f} patches/s")
        if SHARED_DUBAI.is_dir():
            dm = LandCoverDataModule(
                ImageFolderSource(SHARED_DUBAI, splits="splits.json"),
                classes=[str(i) for i in range(6)],
                bands=3,
                ignore_index=255,
                cache_dir=cache,
                **common,
            )
            rate = throughput(dm, args.patches)
            print(f"image folders (../shared/data/dubai, 3 bands, cached): {rate:.0f} patches/s")
        else:
            print("image folders: skipped (../shared/data/dubai not present)")
        print("chesapeake: same cached path as paired GeoTIFF rasters (data not present here)")
        rate = torchgeo_baseline(root, min(args.patches, 400))
        print(f"reference: torchgeo RandomGeoSampler, uncached GeoTIFF reads: {rate:.0f} patches/s")


if __name__ == "__main__":
    main()
