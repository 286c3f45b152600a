"""All fidelity and diversity metrics of one set of synthetic tiles, in one pass.

:func:`synthetic_metrics` compares the synthetic GeoTIFFs of a synthesis run
(``<tile>_s<k>.tif``: ``K`` samples generated from the mask of each real tile, on its
pixel grid) with the real tiles of one split, reading one tile (and its ``K`` samples) at
a time:

- per-class spectral distance (:mod:`synthsat.metrics.spectral`) on a uniform pixel sample
  of whole tiles;
- on a fixed, seeded set of square chips (the same location in the real tile and in every
  sample): intra-mask diversity (:mod:`synthsat.metrics.diversity`), segmentation
  consistency (:mod:`synthsat.metrics.consistency`) and the domain Fréchet distance
  (:mod:`synthsat.metrics.frechet`) when a real-trained segmenter is given, and FID / KID
  (:mod:`synthsat.metrics.fidelity`) when Inception is available;
- chip seams and repetition at the chip step (:mod:`synthsat.metrics.seams`) of every whole
  sample, and of its real tile on the same chip grid (``chip_size`` / ``overlap`` of the
  sample's provenance), when the provenance records the grid.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from synthsat.data.cache import CachedTile
from synthsat.data.datasets import Normalizer
from synthsat.data.errors import DataError
from synthsat.data.raster_io import raster_info, read_raster
from synthsat.metrics.diversity import ms_ssim_diversity, pairwise_l1
from synthsat.metrics.fidelity import (
    FidelityUnavailableError,
    extract_features,
    fid_kid_from_features,
    inception_extractor,
    to_uint8,
)
from synthsat.metrics.frechet import feature_frechet_distance, pooled_features
from synthsat.metrics.seams import seam_scores
from synthsat.metrics.segmentation import SegmentationScores
from synthsat.metrics.spectral import class_pixel_positions, gather_pixels, wasserstein_per_band
from synthsat.synthesis.writer import read_provenance

#: Synthetic tile file names: ``<mask stem>_s<sample index>.tif``.
SAMPLE_NAME = re.compile(r"^(?P<tile>.+)_s(?P<k>\d+)$")

#: Settings of FID / KID; ``enabled`` is true (required), false (skipped) or "auto"
#: (computed when torch-fidelity and the weights are there, else noted in the result).
FID_DEFAULTS: dict[str, Any] = {
    "enabled": "auto",
    "bands": None,
    "feature": 2048,
    "weights_path": None,
    "kid_subsets": 100,
    "kid_subset_size": 1000,
}

#: Chip-seam scores (:func:`~synthsat.metrics.seams.seam_scores`), each reported for the
#: samples and (``<key>_real``) for their real tiles on the same chip grids.
SEAM_KEYS = ("seam_ratio", "acf_step", "acf_peak")


@dataclass
class Segmenter:
    """A segmentation model trained on real imagery, as the metrics use it.

    Attributes:
        logits: normalised ``(B, C, H, W)`` images -> ``(B, K, H, W)`` logits.
        normalizer: the band normalisation the model was trained with.
        encoder: normalised images -> deepest feature map ``(B, D, h, w)`` (or a list of
            feature maps, deepest last); None skips the domain Fréchet distance.
    """

    logits: Callable[[Tensor], Tensor]
    normalizer: Normalizer
    encoder: Callable[[Tensor], Any] | None = None

    def predict(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Logits and pooled deepest encoder features (None without an encoder).

        An ``nn.Module`` encoder that runs inside :attr:`logits` is read with a forward
        hook, so the encoder runs once per image; any other encoder is called separately.
        """
        captured: list[Any] = []
        hook = None
        if isinstance(self.encoder, nn.Module):
            hook = self.encoder.register_forward_hook(lambda m, i, out: captured.append(out))
        try:
            with torch.no_grad():
                logits = self.logits(images)
        finally:
            if hook is not None:
                hook.remove()
        if self.encoder is None:
            return logits, None
        if len(captured) == 1:
            return logits, pooled_features(lambda _: captured[0], images)
        return logits, pooled_features(self.encoder, images)

    @classmethod
    def from_task(cls, task: nn.Module) -> Segmenter:
        """From a :class:`~synthsat.tasks.segmentation.SegmentationTask` (or look-alike).

        Uses ``task.predict_logits``, the band statistics of the data metadata in its
        hparams and the encoder of its U-Net, ``task.model.encoder``.
        """
        hparams = task.hparams
        meta = hparams.get("metadata", hparams.get("data"))
        if meta is None:
            raise ValueError(
                "the segmentation task's hparams hold no data metadata "
                "('metadata': classes, bands, mean, std, ...)"
            )
        task.eval()
        encoder = getattr(getattr(task, "model", None), "encoder", None)
        return cls(
            task.predict_logits,
            Normalizer(np.asarray(meta["mean"]), np.asarray(meta["std"])),
            encoder,
        )


def find_samples(synthetic_dir: str | Path, tile_names: Sequence[str]) -> dict[str, list[Path]]:
    """The synthetic samples of each named tile, ordered by sample index.

    Raises:
        DataError: if the directory does not exist or holds no sample of any named tile.
    """
    root = Path(synthetic_dir)
    if not root.is_dir():
        raise DataError(f"{root}: synthetic imagery directory does not exist")
    wanted = set(tile_names)
    found: dict[str, list[tuple[int, Path]]] = {}
    others = []
    for path in sorted(root.iterdir()):
        match = SAMPLE_NAME.match(path.stem)
        if path.suffix.lower() not in (".tif", ".tiff") or path.name.startswith("."):
            continue
        if match is None or match["tile"] not in wanted:
            others.append(path.name)
            continue
        found.setdefault(match["tile"], []).append((int(match["k"]), path))
    if not found:
        raise DataError(
            f"{root}: no synthetic sample of the {len(wanted)} tile(s) evaluated (expected "
            f"files named <tile>_s<k>.tif for tiles such as {', '.join(sorted(wanted)[:3])}; "
            f"found {', '.join(others[:5]) or 'no GeoTIFF'})"
        )
    return {name: [p for _, p in sorted(found[name])] for name in tile_names if name in found}


def read_sample(path: Path, tile: CachedTile) -> np.ndarray:
    """A synthetic tile, checked against the real tile it was generated for."""
    info = raster_info(path)
    h, w = tile.shape
    if (info.height, info.width) != (h, w) or info.count != tile.image.shape[0]:
        raise DataError(
            f"{path}: synthetic tile is {info.width}x{info.height} px with {info.count} "
            f"band(s), but its real tile {tile.pair.image} is {w}x{h} px with "
            f"{tile.image.shape[0]} band(s)"
        )
    return read_raster(path)


def read_manifest(synthetic_dir: str | Path) -> dict[str, Any]:
    """What the synthesis manifest says of all outputs alike (e.g. checkpoint, lambda)."""
    path = Path(synthetic_dir) / "manifest.json"
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text()).get("outputs", [])
    except (json.JSONDecodeError, AttributeError) as err:
        raise DataError(f"{path}: not a synthesis manifest ({err})") from err
    if not entries:
        return {"outputs": 0}
    common = {
        k: v for k, v in entries[0].items() if k != "path" and all(e.get(k) == v for e in entries)
    }
    return {"outputs": len(entries), **common}


def sample_grid(path: Path, manifest: Mapping[str, Any]) -> tuple[int, int] | None:
    """The ``(chip_size, overlap)`` grid a sample was generated on, or None if unrecorded.

    Read from the sample's provenance tag, else from what the manifest says of all outputs.
    """
    for record in (read_provenance(path) or {}, manifest):
        if record.get("chip_size") is not None and record.get("overlap") is not None:
            return int(record["chip_size"]), int(record["overlap"])
    return None


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not np.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def tile_seam_scores(
    real: np.ndarray, synthetic: Sequence[np.ndarray], grids: Sequence[tuple[int, int] | None]
) -> dict[str, float] | None:
    """Seam scores of a tile's samples and of the real tile, each on the sample's grid.

    Returns:
        the :data:`SEAM_KEYS` averaged over the samples with a grid (nan ignored), and
        ``<key>_real`` those of the real tile on the same grids; None if no sample has one.
    """
    pairs = [(image, grid) for image, grid in zip(synthetic, grids) if grid is not None]
    if not pairs:
        return None
    on_real = {grid: seam_scores(real, *grid) for grid in dict.fromkeys(g for _, g in pairs)}
    scores = [(seam_scores(image, *grid), on_real[grid]) for image, grid in pairs]
    out = {}
    for key in SEAM_KEYS:
        out[key] = _nanmean([s[key] for s, _ in scores])
        out[f"{key}_real"] = _nanmean([r[key] for _, r in scores])
    return out


def chip_side(shapes: Sequence[tuple[int, int]], chip_size: int) -> int:
    """Chip side: ``chip_size`` or the smallest tile side, rounded down to a multiple of 32."""
    side = min([chip_size, *[min(s) for s in shapes]])
    if side >= 32:
        side -= side % 32
    if side < 16:
        raise DataError(f"tiles of {side} px are too small for chip metrics (need 16 px)")
    return side


def select_chips(
    shapes: Sequence[tuple[int, int]], side: int, max_chips: int | None, seed: int
) -> list[tuple[int, int, int]]:
    """Non-overlapping full chips ``(tile, row, col)``; a seeded subset of ``max_chips``."""
    chips = [
        (t, r, c)
        for t, (h, w) in enumerate(shapes)
        for r in range(0, h - side + 1, side)
        for c in range(0, w - side + 1, side)
    ]
    if max_chips is not None and len(chips) > max_chips:
        keep = np.sort(np.random.default_rng(seed).choice(len(chips), max_chips, replace=False))
        chips = [chips[i] for i in keep]
    return chips


def _segment(
    segmenter: Segmenter,
    images: Tensor,
    masks: Tensor,
    score: SegmentationScores,
    features: list[Tensor],
    batch_size: int,
    device: torch.device,
) -> None:
    """Score the segmenter's predictions of ``images`` against ``masks``; keep features."""
    for i in range(0, images.shape[0], batch_size):
        logits, pooled = segmenter.predict(images[i : i + batch_size].to(device))
        score.update(logits.cpu(), masks[i : i + batch_size])
        if pooled is not None:
            features.append(pooled.cpu())


def _by_sample(features: list[Tensor], k: int) -> list[Tensor]:
    """Chip-major ``(N * k, D)`` features of the samples -> ``k`` sets of ``(N, D)``."""
    stacked = torch.cat(features)
    return list(stacked.view(-1, k, stacked.shape[-1]).unbind(1))


def _normalize(x: Tensor, normalizer: Normalizer) -> Tensor:
    mean = torch.as_tensor(normalizer.mean).view(1, -1, 1, 1)
    std = torch.as_tensor(normalizer.std).view(1, -1, 1, 1)
    return (x - mean) / std


def _fid_extractor(
    fid: Mapping[str, Any], extractor: nn.Module | None, device: torch.device
) -> tuple[nn.Module | None, str | None]:
    """The FID feature extractor, or None and the reason it is unavailable."""
    enabled = fid["enabled"]
    if enabled not in (True, False, "auto"):
        raise ValueError(f"fid.enabled must be true, false or auto, got {enabled!r}")
    if enabled is False:
        return None, "disabled (fid.enabled=false)"
    if extractor is not None:
        return extractor.to(device).eval(), None
    try:
        return inception_extractor(int(fid["feature"]), fid["weights_path"]).to(device), None
    except FidelityUnavailableError as err:
        if enabled is True:
            raise
        warnings.warn(f"skipping FID/KID: {err}", stacklevel=3)
        return None, str(err)


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
        fid: FID / KID settings, see :data:`FID_DEFAULTS` (``bands`` default: RGB bands).
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
    classes = list(metadata["classes"])
    band_names = list(metadata["band_names"])
    ignore_index = metadata["ignore_index"]
    scored = list(metadata["scored_classes"])
    data_norm = Normalizer(np.asarray(metadata["mean"]), np.asarray(metadata["std"]))

    samples = find_samples(synthetic_dir, [t.name for t in tiles])
    manifest = read_manifest(synthetic_dir)
    used = [t for t in tiles if t.name in samples]
    k = min(len(samples[t.name]) for t in used)
    if any(len(samples[t.name]) != k for t in used):
        warnings.warn(
            f"{synthetic_dir}: tiles have different sample counts; using the first {k} of each",
            stacklevel=2,
        )
    samples = {name: paths[:k] for name, paths in samples.items()}
    shapes = [t.shape for t in used]
    side = chip_side(shapes, chip_size)
    chips = select_chips(shapes, side, max_chips, seed)

    # value range for MS-SSIM ([0, 1]) and FID (uint8): 8-bit data as is, else mean +- 3 std
    if all(t.image.dtype == np.uint8 for t in used):
        low, high = torch.zeros(len(band_names)), torch.full((len(band_names),), 255.0)
    else:
        low = torch.as_tensor(data_norm.mean - 3 * data_norm.std)
        high = torch.as_tensor(data_norm.mean + 3 * data_norm.std)

    spectral_classes = [c for c in range(len(classes)) if c != ignore_index]
    positions = class_pixel_positions([t.mask for t in used], spectral_classes, max_pixels, seed)
    real_px: dict[int, list[np.ndarray]] = {}
    synth_px: dict[int, list[np.ndarray]] = {}

    extractor, fid_note = _fid_extractor(fid_cfg, fid_extractor, device)
    fid_bands = list(fid_cfg["bands"] if fid_cfg["bands"] is not None else metadata["rgb_bands"])
    if extractor is not None and len(fid_bands) != 3:
        raise ValueError(f"FID/KID compare 3-band composites; fid.bands={fid_bands}")
    if extractor is not None and max(fid_bands) >= len(band_names):
        raise ValueError(f"fid.bands={fid_bands} but the imagery has {len(band_names)} bands")

    score_real = score_synth = None
    if segmenter is not None:
        score_real = SegmentationScores(len(classes), scored, ignore_index, classes)
        score_synth = SegmentationScores(len(classes), scored, ignore_index, classes)
    feats: dict[str, list[Tensor]] = {
        "domain_real": [],
        "domain_synth": [],
        "fid_real": [],
        "fid_synth": [],
    }
    l1: list[float] = []
    ms_ssim: list[float] = []
    seams: dict[str, dict[str, float]] = {}
    grids: set[tuple[int, int]] = set()
    no_grid = 0

    for t, tile in enumerate(used):
        synthetic = [read_sample(p, tile) for p in samples[tile.name]]
        tile_grids = [sample_grid(p, manifest) for p in samples[tile.name]]
        grids.update(g for g in tile_grids if g is not None)
        no_grid += tile_grids.count(None)
        tile_seams = tile_seam_scores(tile.image, synthetic, tile_grids)
        if tile_seams is not None:
            seams[tile.name] = tile_seams
        for c, values in gather_pixels(tile.image, positions[t]).items():
            real_px.setdefault(c, []).append(values)
        for sample in synthetic:
            for c, values in gather_pixels(sample, positions[t]).items():
                synth_px.setdefault(c, []).append(values)
        here = [(r, c) for ti, r, c in chips if ti == t]
        if not here:
            continue
        real = torch.from_numpy(
            np.stack(
                [np.asarray(tile.image[:, r : r + side, c : c + side]) for r, c in here]
            ).astype(np.float32)
        )
        mask = torch.from_numpy(
            np.stack([np.asarray(tile.mask[r : r + side, c : c + side]) for r, c in here]).astype(
                np.int64
            )
        )
        synth = torch.from_numpy(
            np.stack(
                [np.stack([s[:, r : r + side, c : c + side] for s in synthetic]) for r, c in here]
            ).astype(np.float32)
        )  # N K C H W
        if len(synthetic) >= 2:
            unit = (synth - low.view(1, 1, -1, 1, 1)) / (high - low).view(1, 1, -1, 1, 1)
            for i in range(len(here)):
                l1.append(pairwise_l1(_normalize(synth[i], data_norm)))
                ms_ssim.append(ms_ssim_diversity(unit[i].clamp(0, 1)))
        flat = synth.flatten(0, 1)  # (N K) C H W
        flat_mask = mask.repeat_interleave(len(synthetic), 0)
        if segmenter is not None and score_real is not None and score_synth is not None:
            real_in, synth_in = (
                _normalize(real, segmenter.normalizer),
                _normalize(flat, segmenter.normalizer),
            )
            _segment(segmenter, real_in, mask, score_real, feats["domain_real"], batch_size, device)
            _segment(
                segmenter,
                synth_in,
                flat_mask,
                score_synth,
                feats["domain_synth"],
                batch_size,
                device,
            )
        if extractor is not None:
            feats["fid_real"].append(
                extract_features(
                    extractor,
                    to_uint8(real[:, fid_bands], low[fid_bands], high[fid_bands]),
                    batch_size,
                )
            )
            feats["fid_synth"].append(
                extract_features(
                    extractor,
                    to_uint8(flat[:, fid_bands], low[fid_bands], high[fid_bands]),
                    batch_size,
                )
            )

    w1 = {
        c: wasserstein_per_band(np.concatenate(real_px[c], 1), np.concatenate(synth_px[c], 1))
        for c in sorted(real_px)
        if c in synth_px
    }
    w1_std = [float(np.mean(w1[c] / data_norm.std)) for c in scored if c in w1]
    result: dict[str, Any] = {
        "spectral_w1": float(np.mean(w1_std)) if w1_std else None,
        "diversity_l1": float(np.mean(l1)) if l1 else None,
        "diversity_ms_ssim": float(np.mean(ms_ssim)) if ms_ssim else None,
        "consistency_miou": None,
        "real_miou": None,
        "domain_fd": None,
        "fid": None,
        "kid_mean": None,
        "kid_std": None,
    }
    for key in SEAM_KEYS:
        for name in (key, f"{key}_real"):
            value = _nanmean([s[name] for s in seams.values()])
            result[name] = None if np.isnan(value) else value
    details: dict[str, Any] = {
        "spectral_w1": {classes[c]: dict(zip(band_names, map(float, w1[c]))) for c in w1}
    }
    if score_real is not None and score_synth is not None:
        synth_scores, real_scores = score_synth.compute(), score_real.compute()
        result["consistency_miou"], result["real_miou"] = synth_scores["miou"], real_scores["miou"]
        details["consistency_iou"] = synth_scores["iou"]
        details["real_iou"] = real_scores["iou"]
    # feature distances: real chips vs the k-th sample of every chip (matched sets of equal
    # size, so a perfect generator scores exactly 0), averaged over k
    if feats["domain_real"] and len(chips) >= 2:
        real_f, synth_f = torch.cat(feats["domain_real"]), _by_sample(feats["domain_synth"], k)
        result["domain_fd"] = float(np.mean([feature_frechet_distance(real_f, f) for f in synth_f]))
    if feats["fid_real"] and len(chips) >= 2:
        real_f, synth_f = torch.cat(feats["fid_real"]), _by_sample(feats["fid_synth"], k)
        per_sample = [
            fid_kid_from_features(
                real_f, f, int(fid_cfg["kid_subsets"]), int(fid_cfg["kid_subset_size"]), seed
            )
            for f in synth_f
        ]
        result.update({key: float(np.mean([r[key] for r in per_sample])) for key in per_sample[0]})
    if seams:
        details["seams"] = {
            name: {key: None if np.isnan(v) else v for key, v in s.items()}
            for name, s in seams.items()
        }
    seam_note = None
    if no_grid:
        seam_note = (
            f"{no_grid} of {len(used) * k} sample(s) record no chip_size / overlap (provenance "
            "tag or manifest): " + ("left out of the seam metrics" if seams else "seams skipped")
        )
        warnings.warn(f"{synthetic_dir}: {seam_note}", stacklevel=2)
    result["details"] = details
    result["info"] = {
        "tiles": len(used),
        "tiles_without_samples": len(tiles) - len(used),
        "samples_per_tile": k,
        "chips": len(chips),
        "chip_size": side,
        "max_pixels": max_pixels,
        "spectral_units": "raw pixel values; spectral_w1 = mean of W1 / band std over scored "
        "classes and bands",
        "diversity_units": "diversity_l1 in band std units; diversity_ms_ssim = 1 - MS-SSIM",
        "fid_bands": [band_names[b] for b in fid_bands] if extractor is not None else None,
        "fid_note": fid_note,
        "segmenter": segmenter is not None,
        "seam_grids": [list(g) for g in sorted(grids)],
        "seam_note": seam_note,
        "synthesis": manifest,
    }
    return result
