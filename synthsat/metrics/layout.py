"""Layout metrics: how much a set of land-cover masks looks like the training masks, and
whether any of them is a copy of one.

Every statistic is computed over a *set* of masks, with pixels of the ignore index (and
values outside the classes) left out:

* **class shares** (:func:`class_shares`): each class's share of the labelled pixels;
  compared by the total-variation distance ``0.5 * sum |p - q|`` (0: equal, 1: disjoint);
* **patch sizes** (:func:`patch_sizes`): per class, the count, mean and median pixel
  count of its 4-connected components (patches);
* **adjacency** (:func:`adjacency`): the share of 4-neighbour pixel pairs between each two
  classes (symmetric, sums to 1; a uniform mask has all its weight on its diagonal),
  compared by the total-variation distance between the matrices;
* **road connectivity** (:func:`road_connectivity`): the share of road pixels in each
  mask's largest road component (mean over masks with roads) and road components per
  million pixels;
* **nearest neighbour** (:func:`nearest_distances`): for each mask, the smallest share
  of disagreeing pixels over every same-size crop of every training mask, under each of
  the eight flips / quarter turns (exact, every offset: FFT correlations that reuse
  each training mask's spectra).
  A distance at most ``copy_threshold`` flags the mask as a copied layout.

:func:`compare_layouts` gives them all for generated masks against training masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import fft

from synthsat.layouts.components import adjacency_counts, class_components, component_sizes
from synthsat.layouts.geometry import dihedral


def _labelled(mask: np.ndarray, num_classes: int, ignore_index: int | None) -> np.ndarray:
    values = mask.astype(np.int64).ravel()
    keep = (values >= 0) & (values < num_classes)
    if ignore_index is not None:
        keep &= values != ignore_index
    return values[keep]


def class_shares(
    masks: Sequence[np.ndarray], num_classes: int, ignore_index: int | None = None
) -> np.ndarray:
    """Each class's share of the labelled pixels of ``masks`` (zeros without any)."""
    counts = np.zeros(num_classes, np.int64)
    for mask in masks:
        counts += np.bincount(_labelled(mask, num_classes, ignore_index), minlength=num_classes)
    return counts / counts.sum() if counts.sum() else counts.astype(np.float64)


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """``0.5 * sum |p - q|`` of two distributions (any shape)."""
    return float(0.5 * np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64)).sum())


def patch_sizes(
    masks: Sequence[np.ndarray], num_classes: int, ignore_index: int | None = None
) -> dict[int, dict[str, float]]:
    """Per class (but the ignore index): ``count``, ``mean`` and ``median`` pixel count of
    its 4-connected components over ``masks`` (mean and median NaN without any)."""
    out: dict[int, dict[str, float]] = {}
    for cls in range(num_classes):
        if cls == ignore_index:
            continue
        sizes = np.concatenate([component_sizes(m, cls) for m in masks] or [np.zeros(0)])
        out[cls] = {
            "count": float(len(sizes)),
            "mean": float(sizes.mean()) if len(sizes) else float("nan"),
            "median": float(np.median(sizes)) if len(sizes) else float("nan"),
        }
    return out


def adjacency(
    masks: Sequence[np.ndarray], num_classes: int, ignore_index: int | None = None
) -> np.ndarray:
    """The share of 4-neighbour pixel pairs between each two classes over ``masks``:
    symmetric ``(num_classes, num_classes)``, summing to 1 (zeros without any pair)."""
    counts = sum(
        (adjacency_counts(m, num_classes, ignore_index) for m in masks),
        start=np.zeros((num_classes, num_classes), np.int64),
    )
    total = counts.sum()
    return counts / total if total else counts.astype(np.float64)


def road_connectivity(masks: Sequence[np.ndarray], roads: Sequence[int]) -> dict[str, float]:
    """Road connectivity of ``masks``: ``largest_fraction`` (share of a mask's road pixels
    in its largest 4-connected road component, mean over masks with roads; NaN without
    roads), ``components_per_mpx`` (road components per million pixels) and
    ``masks_with_roads``."""
    fractions, components, pixels = [], 0, 0
    for mask in masks:
        pixels += mask.size
        if not roads:
            continue
        labels, count = class_components(mask, list(roads))
        components += count
        if count:
            sizes = np.bincount(labels.ravel())[1:]
            fractions.append(sizes.max() / sizes.sum())
    return {
        "largest_fraction": float(np.mean(fractions)) if fractions else float("nan"),
        "components_per_mpx": components / pixels * 1e6 if pixels else float("nan"),
        "masks_with_roads": float(len(fractions)),
    }


def _shape_groups(shapes: Sequence[tuple[int, int]]) -> dict[tuple[int, int], list[int]]:
    """Training masks grouped by the FFT shape that holds them (next fast length of each
    side): one spectrum per mask and class, one FFT of each generated mask per group."""
    groups: dict[tuple[int, int], list[int]] = {}
    for index, (h, w) in enumerate(shapes):
        shape = (fft.next_fast_len(h, True), fft.next_fast_len(w, True))
        groups.setdefault(shape, []).append(index)
    return groups


def _group_agreement(
    train: Sequence[np.ndarray],
    spectra: dict[int, np.ndarray],
    shape: tuple[int, int],
    mask: np.ndarray,
) -> int:
    """Most pixels of ``mask`` equal to a same-size crop of one of ``train`` (every offset
    at which the crop lies inside that training mask), -1 when none can hold it.

    ``spectra[value]`` stacks the real FFTs (at ``shape``) of ``train == value``. The
    circular correlation at ``shape`` equals the plain one at every offset where the
    mask fits inside the training mask, so no offset wraps and the zero padding adds
    nothing.
    """
    h, w = mask.shape
    fits = [j for j, t in enumerate(train) if t.shape[0] >= h and t.shape[1] >= w]
    if not fits:
        return -1
    total = np.zeros((len(train), shape[0], shape[1] // 2 + 1), np.complex128)
    for value in np.unique(mask):
        if int(value) in spectra:
            total += spectra[int(value)] * np.conj(fft.rfft2(mask == value, shape))
    corr = fft.irfft2(total, shape)
    return max(
        int(np.rint(corr[j, : train[j].shape[0] - h + 1, : train[j].shape[1] - w + 1].max()))
        for j in fits
    )


def nearest_distances(
    masks: Sequence[np.ndarray], training: Sequence[np.ndarray], downsample: int = 1
) -> np.ndarray:
    """For each mask, the smallest share of its pixels that differ from a same-size crop
    of a training mask, over every crop offset and the eight flips / quarter turns of
    the mask (every value, the ignore index too, counts). 0: the mask is (a transformed
    crop of) a training mask. ``downsample`` > 1 compares every ``downsample``-th pixel
    of both (faster, approximate). Training masks smaller than a mask are skipped; a
    mask no training mask can hold gets NaN.

    Exact at every offset: per training mask and class one FFT, per generated mask, flip
    and group of training shapes one FFT per class and one inverse FFT.
    """
    step = max(int(downsample), 1)
    train = [t[::step, ::step] for t in training]
    small = [m[::step, ::step] for m in masks]
    best = np.full(len(small), -1)
    for shape, members in _shape_groups([t.shape for t in train]).items():
        for chunk in _chunks(members, shape):
            group = [train[j] for j in chunk]
            values = np.unique(np.concatenate([np.unique(t) for t in group]))
            spectra = {int(v): np.stack([fft.rfft2(t == v, shape) for t in group]) for v in values}
            for i, mask in enumerate(small):
                for index in range(8):
                    agreement = _group_agreement(group, spectra, shape, dihedral(mask, index))
                    best[i] = max(best[i], agreement)
    sizes = np.array([m.size for m in small], np.float64)
    return np.where(best >= 0, 1.0 - best / np.maximum(sizes, 1), np.nan)


def _chunks(members: list[int], shape: tuple[int, int], budget: float = 2.5e8) -> list[list[int]]:
    """``members`` in runs whose stacked spectra stay under ``budget`` bytes per class."""
    per = max(int(budget // (shape[0] * (shape[1] // 2 + 1) * 16)), 1)
    return [members[k : k + per] for k in range(0, len(members), per)]


def compare_layouts(
    generated: Sequence[np.ndarray],
    training: Sequence[np.ndarray],
    classes: Sequence[str],
    ignore_index: int | None = None,
    roads: Sequence[int] = (),
    nearest: bool = True,
    copy_threshold: float = 0.01,
    downsample: int = 1,
) -> dict[str, Any]:
    """Every layout metric of ``generated`` masks against ``training`` masks (JSON-able).

    Returns:
        ``share_tv`` and ``adjacency_tv`` (total-variation distances), ``shares`` and
        ``patch_size`` (per class name: ``generated`` and ``training``), ``adjacency``
        (both matrices), ``roads`` (both :func:`road_connectivity`) and, with
        ``nearest``, ``nearest``: ``distances`` (per generated mask), ``mean``, ``min``,
        ``copied`` (indices of masks at most ``copy_threshold`` from a training crop)
        and ``copied_fraction``.
    """
    k = len(classes)
    shares_g, shares_t = (
        class_shares(generated, k, ignore_index),
        class_shares(training, k, ignore_index),
    )
    adj_g, adj_t = adjacency(generated, k, ignore_index), adjacency(training, k, ignore_index)
    patches_g = patch_sizes(generated, k, ignore_index)
    patches_t = patch_sizes(training, k, ignore_index)
    scored = [c for c in range(k) if c != ignore_index]
    result: dict[str, Any] = {
        "masks": {"generated": len(generated), "training": len(training)},
        "share_tv": total_variation(shares_g, shares_t),
        "shares": {
            classes[c]: {"generated": float(shares_g[c]), "training": float(shares_t[c])}
            for c in scored
        },
        "patch_size": {
            classes[c]: {"generated": patches_g[c], "training": patches_t[c]} for c in scored
        },
        "adjacency_tv": total_variation(adj_g, adj_t),
        "adjacency": {"generated": adj_g.tolist(), "training": adj_t.tolist()},
        "roads": {
            "classes": [classes[c] for c in roads],
            "generated": road_connectivity(generated, roads),
            "training": road_connectivity(training, roads),
        },
    }
    if nearest:
        distances = nearest_distances(generated, training, downsample)
        copied = [int(i) for i in np.flatnonzero(distances <= copy_threshold)]
        result["nearest"] = {
            "distances": [float(d) for d in distances],
            "mean": float(np.nanmean(distances)) if np.isfinite(distances).any() else None,
            "min": float(np.nanmin(distances)) if np.isfinite(distances).any() else None,
            "copy_threshold": copy_threshold,
            "copied": copied,
            "copied_fraction": len(copied) / len(generated) if len(generated) else 0.0,
        }
    return result
