"""All fidelity and diversity metrics of one set of synthetic tiles, in one pass.

:func:`synthetic_metrics` compares the synthetic GeoTIFFs of a synthesis run
(:mod:`synthsat.data.synthetic_tiles`: ``K`` samples generated from the mask of each real
tile, on its pixel grid or on another grid covering the same extent, e.g. a synthesis at
the generator's ``data.scale``) with the real tiles of one split on the data's grid,
reading one tile (and its ``K`` samples, resampled to the tile's grid as mixing does:
:func:`~synthsat.data.cache.resample_image`) at a time and feeding each metric's
accumulator (:mod:`synthsat.metrics.accumulator`):

- per-class spectral distance (:class:`~synthsat.metrics.spectral.SpectralDistance`) on a
  uniform pixel sample of whole tiles;
- on a fixed, seeded set of square chips (:mod:`synthsat.metrics.chips`; the same location
  in the real tile and in every sample): intra-mask diversity
  (:class:`~synthsat.metrics.diversity.IntraMaskDiversity`), segmentation consistency and
  the domain Fréchet distance (:class:`~synthsat.metrics.segmenter.SegmenterMetrics`) when
  a real-trained segmenter is given, and FID / KID
  (:class:`~synthsat.metrics.fidelity.FidKid`) when Inception is available;
- chip seams and repetition at the chip step (:class:`~synthsat.metrics.seams.SeamScores`)
  of every whole sample on the grid it was written on, and of its real tile brought to
  that grid, on the same chip grid (``chip_size`` / ``overlap`` of the sample's
  provenance), when the provenance records the grid.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from synthsat.data.cache import CachedTile, resample_image
from synthsat.data.datasets import Normalizer
from synthsat.data.synthetic_tiles import find_samples, read_manifest, read_provenance, read_sample
from synthsat.metrics.chips import chip_side, cut_chips, select_chips
from synthsat.metrics.diversity import IntraMaskDiversity
from synthsat.metrics.fidelity import FID_DEFAULTS, FidKid, resolve_fid_extractor, to_uint8
from synthsat.metrics.seams import SeamScores
from synthsat.metrics.segmenter import Segmenter, SegmenterMetrics
from synthsat.metrics.spectral import SpectralDistance, standardised_mean

__all__ = ["Segmenter", "sample_grid", "synthetic_metrics"]

#: The units of the headline numbers, as the result's ``info`` states them.
UNITS = {
    "spectral_units": "raw pixel values; spectral_w1 = mean of W1 / band std over scored "
    "classes and bands",
    "diversity_units": "diversity_l1 in band std units; diversity_ms_ssim = 1 - MS-SSIM",
}


def sample_grid(path: Path, manifest: Mapping[str, Any]) -> tuple[int, int] | None:
    """The ``(chip_size, overlap)`` grid a sample was generated on, or None if unrecorded.

    Read from the sample's provenance tag, else from what the manifest says of all outputs.
    """
    for record in (read_provenance(path) or {}, manifest):
        if record.get("chip_size") is not None and record.get("overlap") is not None:
            return int(record["chip_size"]), int(record["overlap"])
    return None


@dataclass
class _Plan:
    """What is compared: the tiles with samples, the first ``k`` samples of each (``k``:
    the fewest any tile has), the synthesis manifest and the chips of the chip metrics."""

    tiles: list[CachedTile]
    samples: dict[str, list[Path]]
    k: int
    manifest: dict[str, Any]
    side: int
    chips: list[tuple[int, int, int]]

    def corners(self, tile: int) -> list[tuple[int, int]]:
        """The ``(row, col)`` corners of the chips of tile ``tile``."""
        return [(r, c) for t, r, c in self.chips if t == tile]

    def read(self, tile: CachedTile) -> tuple[list[np.ndarray], list[tuple[int, int] | None]]:
        """A tile's samples on their own grid (checked against the tile: any grid that
        covers its mask's extent) and the chip grid of each."""
        paths = self.samples[tile.name]
        bands = tile.image.shape[0]
        synthetic = [
            read_sample(p, tile.shape, bands, tile.pair.image, tile.pair.mask) for p in paths
        ]
        return synthetic, [sample_grid(p, self.manifest) for p in paths]

    def describe(self, tiles: int) -> dict[str, int]:
        """What is compared, of ``tiles`` tiles asked for."""
        return {
            "tiles": len(self.tiles),
            "tiles_without_samples": tiles - len(self.tiles),
            "samples_per_tile": self.k,
            "chips": len(self.chips),
            "chip_size": self.side,
        }


def _plan(
    tiles: Sequence[CachedTile],
    synthetic_dir: str | Path,
    chip_size: int,
    max_chips: int | None,
    seed: int,
) -> _Plan:
    """The tiles of ``tiles`` with samples in ``synthetic_dir``, their samples and chips."""
    samples = find_samples(synthetic_dir, [t.name for t in tiles])
    manifest = read_manifest(synthetic_dir)
    used = [t for t in tiles if t.name in samples]
    k = min(len(samples[t.name]) for t in used)
    if any(len(samples[t.name]) != k for t in used):
        warnings.warn(
            f"{synthetic_dir}: tiles have different sample counts; using the first {k} of each",
            stacklevel=3,
        )
    side = chip_side([t.shape for t in used], chip_size)
    chips = select_chips([t.shape for t in used], side, max_chips, seed)
    samples = {name: paths[:k] for name, paths in samples.items()}
    return _Plan(used, samples, k, manifest, side, chips)


def _value_range(tiles: Sequence[CachedTile], normalizer: Normalizer) -> tuple[Tensor, Tensor]:
    """Per-band values mapped to 0 and 1 for MS-SSIM (and to 0 and 255 for FID): the 8-bit
    range for 8-bit data, else mean -+ 3 std."""
    if all(t.image.dtype == np.uint8 for t in tiles):
        bands = len(normalizer.mean)
        return torch.zeros(bands), torch.full((bands,), 255.0)
    low = torch.as_tensor(normalizer.mean - 3 * normalizer.std)
    high = torch.as_tensor(normalizer.mean + 3 * normalizer.std)
    return low, high


def _fid_bands(settings: Mapping[str, Any], metadata: Mapping[str, Any]) -> list[int]:
    """The 3 bands of the FID composite: ``fid.bands``, by default the RGB bands."""
    bands = list(settings["bands"] if settings["bands"] is not None else metadata["rgb_bands"])
    if len(bands) != 3:
        raise ValueError(f"FID/KID compare 3-band composites; fid.bands={bands}")
    if max(bands) >= len(metadata["band_names"]):
        raise ValueError(
            f"fid.bands={bands} but the imagery has {len(metadata['band_names'])} bands"
        )
    return bands


@dataclass
class _ChipMetrics:
    """The accumulators fed with chips (None: not computed) and the chips' value range."""

    side: int
    low: Tensor
    high: Tensor
    diversity: IntraMaskDiversity | None
    segmenter: SegmenterMetrics | None
    fid: FidKid | None
    fid_bands: list[int]

    @classmethod
    def build(
        cls,
        plan: _Plan,
        metadata: Mapping[str, Any],
        normalizer: Normalizer,
        segmenter: Segmenter | None,
        extractor: nn.Module | None,
        fid: Mapping[str, Any],
        batch_size: int,
        seed: int,
        device: torch.device,
    ) -> _ChipMetrics:
        """The chip accumulators of a plan: diversity with two samples or more, segmenter
        metrics with a segmenter, FID / KID with an extractor."""
        samples = plan.k
        low, high = _value_range(plan.tiles, normalizer)
        mean, std = torch.as_tensor(normalizer.mean), torch.as_tensor(normalizer.std)
        fid_kid = None
        if extractor is not None:
            subsets, subset_size = int(fid["kid_subsets"]), int(fid["kid_subset_size"])
            fid_kid = FidKid(extractor, samples, batch_size, subsets, subset_size, seed)
        return cls(
            plan.side,
            low,
            high,
            IntraMaskDiversity(mean, std, low, high) if samples >= 2 else None,
            None
            if segmenter is None
            else SegmenterMetrics(segmenter, metadata, samples, batch_size, device),
            fid_kid,
            _fid_bands(fid, metadata) if extractor is not None else [],
        )

    def update(
        self, tile: CachedTile, synthetic: Sequence[np.ndarray], corners: Sequence[tuple[int, int]]
    ) -> None:
        """Add the chips at ``corners`` of a real tile and of its samples."""
        side = self.side
        real = torch.from_numpy(cut_chips(tile.image, corners, side).astype(np.float32))
        mask = torch.from_numpy(cut_chips(tile.mask, corners, side).astype(np.int64))
        synth = torch.from_numpy(
            np.stack([cut_chips(s, corners, side) for s in synthetic], 1).astype(np.float32)
        )  # N K C H W
        if self.diversity is not None:
            self.diversity.update(synth)
        if self.segmenter is not None:
            self.segmenter.update(real, synth, mask)
        if self.fid is not None:
            b, low, high = self.fid_bands, self.low[self.fid_bands], self.high[self.fid_bands]
            flat = synth.flatten(0, 1)
            self.fid.update(to_uint8(real[:, b], low, high), to_uint8(flat[:, b], low, high))

    def fid_band_names(self, band_names: Sequence[str]) -> list[str] | None:
        """The names of the FID composite's bands; None without FID."""
        return [band_names[b] for b in self.fid_bands] if self.fid is not None else None

    def compute(self) -> tuple[dict[str, float | None], dict[str, Any]]:
        """Headline numbers (None where not computed) and per-class details."""
        result: dict[str, float | None] = {"diversity_l1": None, "diversity_ms_ssim": None}
        if self.diversity is not None:
            result.update(self.diversity.compute())
        result.update(consistency_miou=None, real_miou=None, domain_fd=None)
        details: dict[str, Any] = {}
        if self.segmenter is not None:
            headline, details = self.segmenter.compute()
            result.update(headline)
        result.update(fid=None, kid_mean=None, kid_std=None)
        # real chips vs the k-th sample of every chip (matched sets of equal size, so a
        # perfect generator scores exactly 0), averaged over k
        if self.fid is not None and self.fid.count >= 2:
            result.update(self.fid.compute())
        return result, details


def _update_seams(
    seams: SeamScores,
    tile: CachedTile,
    written: Sequence[np.ndarray],
    grids: Sequence[tuple[int, int] | None],
) -> None:
    """Add a tile's samples to the seam metrics on the grid they were generated on (their
    chip grid is in their own pixels), with the real tile brought to that grid by
    :func:`~synthsat.data.cache.resample_image`. Samples of one tile written on
    different grids have no one real reference: they are counted as without a grid."""
    shapes = {s.shape[1:] for s in written}
    if len(shapes) > 1:
        seams.without_grid += len(written)
        return
    (shape,) = shapes or {tile.shape}
    seams.update(tile.name, resample_image(tile.image, shape), written, grids)


def _seam_note(seams: SeamScores, samples: int, synthetic_dir: str | Path) -> str | None:
    """Why samples are left out of the seam metrics (also warned), or None."""
    if not seams.without_grid:
        return None
    note = (
        f"{seams.without_grid} of {samples} sample(s) record no chip_size / overlap (provenance "
        "tag or manifest): " + ("left out of the seam metrics" if seams.tiles else "seams skipped")
    )
    warnings.warn(f"{synthetic_dir}: {note}", stacklevel=3)
    return note


def _scores(
    spectral: SpectralDistance,
    chip_metrics: _ChipMetrics,
    seams: SeamScores,
    metadata: Mapping[str, Any],
    std: np.ndarray,
) -> dict[str, Any]:
    """The headline numbers of the accumulators, and their ``details``."""
    w1 = spectral.compute()
    chip_scores, chip_details = chip_metrics.compute()
    classes, band_names = list(metadata["classes"]), list(metadata["band_names"])
    details = {
        "spectral_w1": {classes[c]: dict(zip(band_names, map(float, w1[c]))) for c in w1},
        **chip_details,
    }
    if seams.tiles:
        details["seams"] = seams.details()
    return {
        "spectral_w1": standardised_mean(w1, std, metadata["scored_classes"]),
        **chip_scores,
        **seams.compute(),
        "details": details,
    }


def synthetic_metrics(
    tiles: Sequence[CachedTile],
    synthetic_dir: str | Path,
    metadata: Mapping[str, Any],
    segmenter: Segmenter | None = None,
    *,
    chip_size: int = 256,
    max_chips: int | None = 256,
    max_pixels: int = 200_000,
    batch_size: int = 8,
    fid: Mapping[str, Any] | None = None,
    fid_extractor: nn.Module | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Fidelity and diversity of the synthetic samples of ``tiles``.

    Args:
        tiles: real tiles (e.g. ``datamodule.tiles["train"]``); those without samples in
            ``synthetic_dir`` are left out.
        synthetic_dir: synthesis output directory (``<tile>_s<k>.tif``, ``manifest.json``).
        metadata: the data metadata (``datamodule.metadata()``: classes, band names, RGB
            bands, ignore index, scored classes, band mean / std).
        segmenter: a segmentation model trained on real imagery, for the segmentation
            consistency and the domain Fréchet distance (None skips both).
        chip_size: side of the chips of the chip metrics (capped by the smallest tile and
            rounded down to a multiple of 32).
        max_chips: chips used at most (a seeded subset; None: all).
        max_pixels: pixels per class sampled for the spectral distance.
        batch_size: images per forward pass.
        fid: FID / KID settings, see :data:`~synthsat.metrics.fidelity.FID_DEFAULTS`
            (``bands`` default: RGB bands).
        fid_extractor: a module mapping uint8 ``(B, 3, H, W)`` images to features, used
            instead of Inception (tests, other feature spaces).
        seed: seed of the pixel and chip samples and of KID's subsets.
        device: where models run.

    Returns:
        headline numbers (``spectral_w1``, ``diversity_l1``, ``diversity_ms_ssim``,
        ``consistency_miou``, ``real_miou``, ``domain_fd``, ``fid``, ``kid_mean``,
        ``kid_std``, ``seam_ratio``, ``acf_step``, ``acf_peak`` and the last three's
        ``*_real`` for the real tiles on the samples' chip grids, means over tiles; None
        where not computed), ``details`` (per-class / per-band / per-tile values) and
        ``info`` (what was compared).
    """
    device = torch.device(device)
    fid_cfg = {**FID_DEFAULTS, **(fid or {})}
    plan = _plan(tiles, synthetic_dir, chip_size, max_chips, seed)
    data_norm = Normalizer(np.asarray(metadata["mean"]), np.asarray(metadata["std"]))
    ignore, masks = metadata["ignore_index"], [t.mask for t in plan.tiles]
    spectral_classes = [c for c in range(len(metadata["classes"])) if c != ignore]
    spectral = SpectralDistance(masks, spectral_classes, max_pixels, seed)
    seams = SeamScores()
    extractor, fid_note = resolve_fid_extractor(fid_cfg, fid_extractor, device)
    chip_metrics = _ChipMetrics.build(
        plan, metadata, data_norm, segmenter, extractor, fid_cfg, batch_size, seed, device
    )
    for t, tile in enumerate(plan.tiles):
        written, grids = plan.read(tile)
        _update_seams(seams, tile, written, grids)
        # on the real tile's grid (the data's), resampled as mixing does
        synthetic = [resample_image(s, tile.shape) for s in written]
        spectral.update(t, tile.image, synthetic)
        if corners := plan.corners(t):
            chip_metrics.update(tile, synthetic, corners)
    result = _scores(spectral, chip_metrics, seams, metadata, data_norm.std)
    result["info"] = {
        **plan.describe(len(tiles)),
        "max_pixels": max_pixels,
        **UNITS,
        "fid_bands": chip_metrics.fid_band_names(metadata["band_names"]),
        "fid_note": fid_note,
        "segmenter": segmenter is not None,
        "seam_grids": [list(g) for g in sorted(seams.grids)],
        "seam_note": _seam_note(seams, len(plan.tiles) * plan.k, synthetic_dir),
        "synthesis": plan.manifest,
    }
    return result
