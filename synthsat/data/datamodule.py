"""``LandCoverDataModule``: any tile source -> batches of one sample format."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Sampler

from synthsat.atomic import write_text
from synthsat.data.cache import CachedTile, TileCache, band_statistics
from synthsat.data.datasets import GridChipDataset, Normalizer, PatchSpec, RandomPatchDataset
from synthsat.data.mixing import build_mixed_dataset, resolve_mix
from synthsat.data.sources import TileSource


class LandCoverDataModule(L.LightningDataModule):
    """Image / land-cover mask tiles from a :class:`~synthsat.data.sources.TileSource`.

    All tiles are checked (sizes, CRS, band count, mask values) and cached on
    :meth:`setup`, before any training starts. Training draws random patches with
    flips and 90-degree rotations; validation and test cover whole real tiles.

    Args:
        source: where the tiles come from.
        classes: class names; mask value ``i`` is ``classes[i]``.
        bands: image band count.
        band_names: names of the bands (for reports).
        rgb_bands: indices of the bands shown as an RGB composite.
        ignore_index: mask value excluded from losses and metrics (no-data).
        scored_classes: classes averaged into mIoU (default: all but ``ignore_index``).
        patch_size: training patch side in pixels.
        batch_size: training batch size.
        eval_batch_size: validation / test batch size.
        num_workers: data loader workers.
        patches_per_epoch: random training patches per epoch.
        val_mode: ``chips`` (whole tiles, for segmentation) or ``patches`` (fixed random
            patches of ``patch_size``, for the generator).
        val_patches: number of fixed validation patches in ``patches`` mode.
        eval_chip_size: largest validation / test chip side in pixels.
        augment: flips and rotations for training patches.
        mean: per-band mean of raw values; computed from the training tiles if None.
        std: per-band standard deviation; computed with ``mean`` if None.
        cache_dir: where decoded tiles and statistics are cached.
        seed: seed for fixed validation patches.
        mix: real / synthetic mixing of training patches (see :mod:`synthsat.data.mixing`);
            None trains on real imagery only. Validation and test are always real. A
            ``lambda_div`` picks the tile folder below ``source`` (``self.mix`` holds it);
            ``layouts`` (a layouts folder) draws the synthetic patches from its rendered
            new layouts with their own masks.
        on_nonfinite: ``error`` (default) stops on image pixels holding NaN or infinite
            values, naming the file and the count; ``ignore`` treats them like the
            raster's nodata pixels: unlabelled (ignore index in the mask, so neither
            trained on nor scored), left out of the band statistics, filled in the image
            (see :class:`~synthsat.data.cache.TileCache`).
        scale: train and validate at this fraction of the native resolution (in (0, 1];
            e.g. 0.5 for coarse polygon masks): training, validation and synthetic tiles
            are resampled once, in the cache (synthetic tiles from whatever grid they
            were written on, see :meth:`~synthsat.data.cache.TileCache.load_synthetic`);
            test tiles stay native, and the model
            (which records the scale in its metadata) resamples its input and returns
            logits at native resolution, so test scores are always at native resolution.
    """

    def __init__(
        self,
        source: TileSource,
        classes: Sequence[str],
        bands: int,
        band_names: Sequence[str] | None = None,
        rgb_bands: Sequence[int] = (0, 1, 2),
        ignore_index: int = 255,
        scored_classes: Sequence[int] | None = None,
        patch_size: int = 256,
        batch_size: int = 8,
        eval_batch_size: int = 1,
        num_workers: int = 0,
        patches_per_epoch: int = 1000,
        val_mode: str = "chips",
        val_patches: int = 64,
        eval_chip_size: int = 1024,
        augment: bool = True,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        cache_dir: str | Path = ".cache/synthsat",
        seed: int = 0,
        mix: dict[str, Any] | None = None,
        on_nonfinite: str = "error",
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        if val_mode not in ("chips", "patches"):
            raise ValueError(f"val_mode must be 'chips' or 'patches', got '{val_mode}'")
        if (mean is None) != (std is None):
            raise ValueError("give both data.mean and data.std, or neither")
        if mean is not None and (len(mean) != bands or len(std) != bands):  # type: ignore[arg-type]
            raise ValueError(f"data.mean and data.std need {bands} values (one per band)")
        self.source = source
        self.classes = list(classes)
        self.bands = bands
        self.band_names = list(band_names) if band_names else [f"b{i}" for i in range(bands)]
        self.rgb_bands = list(rgb_bands)
        self.ignore_index = ignore_index
        self.scored_classes = (
            list(scored_classes)
            if scored_classes is not None
            else [c for c in range(len(self.classes)) if c != ignore_index]
        )
        self.patch_size = patch_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.patches_per_epoch = patches_per_epoch
        self.val_mode = val_mode
        self.val_patches = val_patches
        self.eval_chip_size = eval_chip_size
        self.augment = augment
        self._mean = None if mean is None else np.asarray(mean, np.float32)
        self._std = None if std is None else np.asarray(std, np.float32)

        def tile_cache(scale: float, class_indices: bool = False) -> TileCache:
            return TileCache(
                cache_dir,
                bands,
                len(self.classes),
                ignore_index,
                None if class_indices else source.label_map,
                on_nonfinite=on_nonfinite,
                colour_map=None if class_indices else source.colour_map,
                scale=scale,
            )

        self.scale = float(scale)
        self.cache = tile_cache(self.scale)  # training (real and synthetic) and validation
        self.native_cache = self.cache if self.scale == 1 else tile_cache(1.0)  # test
        # rendered new layouts (mix.layouts): their masks hold class indices, whatever
        # codes or colours the data's own masks use
        self.layout_cache = tile_cache(self.scale, class_indices=True)
        self.seed = seed
        self.mix = resolve_mix(mix) if mix else None  # source: the tile folder itself
        self.tiles: dict[str, list[CachedTile]] = {}
        self.normalizer: Normalizer | None = None

    # -- description -----------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Number of classes (mask values 0..num_classes-1)."""
        return len(self.classes)

    def metadata(self) -> dict[str, Any]:
        """What downstream jobs need to interpret this data (saved in checkpoints)."""
        self._require_setup()
        assert self.normalizer is not None
        return {
            "classes": self.classes,
            "bands": self.bands,
            "band_names": self.band_names,
            "rgb_bands": self.rgb_bands,
            "ignore_index": self.ignore_index,
            "scored_classes": self.scored_classes,
            "mean": self.normalizer.mean.tolist(),
            "std": self.normalizer.std.tolist(),
            "scale": self.scale,
        }

    # -- Lightning hooks -----------------------------------------------------------------
    def prepare_data(self) -> None:
        """Download or generate the source data (rank 0 only)."""
        self.source.prepare()

    def setup(self, stage: str | None = None) -> None:
        """Check and cache every tile, then fix the band normalisation."""
        if self.tiles:
            return
        self.source.prepare()
        for split in ("train", "val", "test"):
            cache = self.native_cache if split == "test" else self.cache
            self.tiles[split] = [cache.load(p) for p in self.source.pairs(split)]
        if self._mean is None:
            self._mean, self._std = band_statistics(self.tiles["train"])
        self.normalizer = Normalizer(self._mean, self._std)

    def _require_setup(self) -> None:
        if not self.tiles:
            self.setup()

    def patch_spec(self) -> PatchSpec:
        """How this data's training patches are cut."""
        self._require_setup()
        assert self.normalizer is not None
        return PatchSpec(
            self.patch_size,
            self.patches_per_epoch,
            self.normalizer,
            self.ignore_index,
            augment=self.augment,
        )

    def train_dataset(self) -> Dataset:
        """Random augmented patches from the training tiles (real, or mixed with
        synthetic imagery per ``mix``)."""
        patches = self.patch_spec()
        if self.mix:
            return build_mixed_dataset(
                self.tiles["train"],
                self.cache.load_synthetic,
                patches,
                self.mix,
                load_layout=self.layout_cache.load_synthetic,
                classes=self.classes,
            )
        return RandomPatchDataset(self.tiles["train"], **patches.dataset_kwargs())

    def eval_dataset(self, split: str) -> Dataset:
        """Validation or test data: whole-tile chips, or fixed patches (``val_mode``)."""
        self._require_setup()
        assert self.normalizer is not None
        if split == "val" and self.val_mode == "patches":
            return RandomPatchDataset(
                self.tiles["val"],
                self.patch_size,
                self.val_patches,
                self.normalizer,
                self.ignore_index,
                augment=False,
                fixed=True,
                seed=self.seed,
            )
        return GridChipDataset(
            self.tiles[split], self.eval_chip_size, self.normalizer, self.ignore_index
        )

    def _loader(
        self, dataset: Dataset, batch_size: int, shuffle: bool, sampler: Sampler | None = None
    ) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=self.num_workers,
            drop_last=False,
            persistent_workers=self.num_workers > 0,
            pin_memory=False,
        )

    def eval_sampler(self, dataset: Dataset) -> Sampler | None:
        """Under DDP, this process's share of an evaluation set: every sample on exactly
        one rank (none repeated, shares differ by one at most), so that the scores summed
        over the processes are those of the whole set. None (the loader's own order, or
        Lightning's distributed sampler) with one process, or with fewer samples than
        processes (every rank needs one: Lightning's sampler repeats a few then)."""
        trainer = self.trainer
        if trainer is None or trainer.world_size <= 1:
            return None
        if len(dataset) < trainer.world_size:  # type: ignore[arg-type]
            return None
        return UnrepeatedDistributedSampler(
            dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
        )

    def train_dataloader(self) -> DataLoader:
        """Random training patches. Under DDP, Lightning's distributed sampler gives each
        rank ``patches_per_epoch / world_size`` of them; the patches themselves are drawn
        from each rank's own random streams
        (:func:`~synthsat.tasks.distributed.split_random_streams`; with workers, also
        from Lightning's worker seeds, which include the rank)."""
        return self._loader(self.train_dataset(), self.batch_size, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        bs = self.batch_size if self.val_mode == "patches" else self.eval_batch_size
        dataset = self.eval_dataset("val")
        return self._loader(dataset, bs, shuffle=False, sampler=self.eval_sampler(dataset))

    def test_dataloader(self) -> DataLoader:
        dataset = self.eval_dataset("test")
        return self._loader(
            dataset, self.eval_batch_size, shuffle=False, sampler=self.eval_sampler(dataset)
        )

    def summary(self) -> str:
        """A human-readable summary of the data."""
        self._require_setup()
        assert self.normalizer is not None
        lines = [
            f"source: {type(self.source).__name__} at {self.source.describe()}",
            f"bands: {self.bands} ({', '.join(self.band_names)}), "
            f"classes: {self.num_classes}, ignore index: {self.ignore_index}",
        ]
        if self.scale != 1:
            lines.append(f"scale: {self.scale:g} (train / val resampled; test native)")
        for split, tiles in self.tiles.items():
            px = sum(t.shape[0] * t.shape[1] for t in tiles)
            lines.append(f"{split:5s}: {len(tiles):3d} tiles, {px / 1e6:.2f} Mpx")
        counts = np.zeros(max(self.num_classes, self.ignore_index + 1), np.int64)
        for t in self.tiles["train"]:
            counts += np.bincount(np.asarray(t.mask).ravel(), minlength=len(counts))[: len(counts)]
        share = counts / max(counts.sum(), 1)
        lines.append(
            "train class shares: "
            + ", ".join(f"{i} {name} {share[i]:.1%}" for i, name in enumerate(self.classes))
        )
        lines.append(
            f"band mean: {np.round(self.normalizer.mean, 2).tolist()}, "
            f"std: {np.round(self.normalizer.std, 2).tolist()}"
        )
        return "\n".join(lines)

    def save_metadata(self, path: str | Path) -> None:
        """Write :meth:`metadata` as JSON."""
        write_text(path, json.dumps(self.metadata(), indent=2))
