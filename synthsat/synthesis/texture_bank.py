"""Texture bank of the class-texture control: real texture patches of each mask class.

:class:`TextureBank` holds, per class, random square patches of the real training
tiles whose pixels are mostly (``purity``) that class, at most ``per_class`` of them,
seeded (:func:`build_bank`). A class without such a patch falls back to
``fallback_purity``, then to a constant patch of its mean colour (both logged as
warnings). The ignore index is never a texture class: pixels of the ignore index in a
target mask get the texture of the most common class (they are not scored anyway).
:mod:`synthsat.synthesis.classtexture` synthesises tiles from a bank.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from synthsat.data.checks import check_mask_values
from synthsat.synthesis.writer import to_raw

log = logging.getLogger(__name__)

#: Candidate patch positions are on a grid of at most this many pixels.
MAX_CANDIDATE_STRIDE = 16


@dataclass(frozen=True)
class TextureBank:
    """Real texture patches per class.

    Args:
        patches: ``(N, P, P, C)`` patches of all classes, in the imagery's dtype.
        start: ``(num_classes,)`` index of the first patch of each class.
        count: ``(num_classes,)`` patches of each class (at least one; the ignore
            index's entry repeats the fill class's).
        ignore_index: mask value of unlabelled pixels (None: none).
        fill_class: the class whose texture fills ignore-index pixels.
        sources: how each texture class's patches were found (``purity>=0.9``,
            ``purity>=0.5``, ``mean colour``).
    """

    patches: np.ndarray
    start: np.ndarray
    count: np.ndarray
    ignore_index: int | None
    fill_class: int
    sources: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, p, p2, _ = self.patches.shape
        if p != p2 or n < 1:
            raise ValueError(f"patches must be (N >= 1, P, P, C), got {self.patches.shape}")
        if self.start.shape != self.count.shape or self.count.min() < 1:
            raise ValueError("every class needs at least one patch")
        if int((self.start + self.count).max()) > n or self.start.min() < 0:
            raise ValueError("class patch ranges fall outside the bank")

    @property
    def patch_size(self) -> int:
        """Patch side in pixels."""
        return int(self.patches.shape[1])

    @property
    def bands(self) -> int:
        """Image bands."""
        return int(self.patches.shape[3])

    @property
    def dtype(self) -> np.dtype:
        """The imagery's dtype."""
        return self.patches.dtype

    @property
    def num_classes(self) -> int:
        """Classes of the masks (texture classes and, if below it, the ignore index)."""
        return len(self.count)

    def texture_class(self, mask: np.ndarray) -> np.ndarray:
        """Mask values -> the class whose texture they take (ignore index: the fill class).

        Raises:
            DataError: a value that is neither a class nor the ignore index.
        """
        values = np.asarray(mask).astype(np.int64, copy=False)
        out = values
        if self.ignore_index is not None:
            out = np.where(values == self.ignore_index, self.fill_class, values)
        if out.size and (out.min() < 0 or out.max() >= self.num_classes):
            check_mask_values(values, self.num_classes, self.ignore_index, "mask")
        return out

    @classmethod
    def from_patches(
        cls,
        patches: Mapping[int, np.ndarray],
        num_classes: int,
        ignore_index: int | None,
        fill_class: int | None = None,
        sources: Mapping[int, str] | None = None,
    ) -> TextureBank:
        """A bank from given patches per texture class.

        Args:
            patches: class -> ``(n, C, P, P)`` patches (one dtype, one size).
            num_classes: classes of the masks.
            ignore_index: mask value of unlabelled pixels (never a texture class).
            fill_class: texture of ignore-index pixels; None: the class with most patches.
            sources: how each class's patches were found (for the log / provenance).

        Raises:
            ValueError: a texture class without patches, or patches for the ignore index.
        """
        classes = texture_classes(num_classes, ignore_index)
        missing = [k for k in classes if k not in patches or len(patches[k]) == 0]
        if missing or (ignore_index is not None and ignore_index in patches):
            raise ValueError(
                f"need patches for every class {classes} (not the ignore index "
                f"{ignore_index}); missing {missing}"
            )
        start = np.zeros(num_classes, dtype=np.int64)
        count = np.zeros(num_classes, dtype=np.int64)
        stacked = []
        offset = 0
        for k in classes:
            stacked.append(np.asarray(patches[k]).transpose(0, 2, 3, 1))
            start[k], count[k] = offset, len(patches[k])
            offset += len(patches[k])
        if fill_class is None:
            fill_class = max(classes, key=lambda k: int(count[k]))
        if ignore_index is not None and 0 <= ignore_index < num_classes:
            start[ignore_index], count[ignore_index] = start[fill_class], count[fill_class]
        return cls(
            np.ascontiguousarray(np.concatenate(stacked)),
            start,
            count,
            ignore_index,
            int(fill_class),
            dict(sources or {k: "given" for k in classes}),
        )


def texture_classes(num_classes: int, ignore_index: int | None) -> list[int]:
    """The classes that get a texture: all but the ignore index."""
    return [k for k in range(num_classes) if k != ignore_index]


def build_bank(
    tiles: Sequence[tuple[np.ndarray, np.ndarray]],
    num_classes: int,
    ignore_index: int | None,
    patch_size: int = 64,
    purity: float = 0.9,
    fallback_purity: float = 0.5,
    per_class: int = 256,
    seed: int = 0,
) -> TextureBank:
    """Cut a :class:`TextureBank` from real tiles.

    Candidate patches lie on a grid (a stride of ``gcd(patch_size, 16)`` pixels, at a
    random offset per tile); a candidate belongs to class ``k`` when at least
    ``purity`` of its pixels are ``k``. Each class keeps a random ``per_class`` of
    its candidates over all tiles.

    Args:
        tiles: ``(image (C, H, W), mask (H, W))`` pairs; masks hold class indices or
            the ignore index.
        num_classes: classes of the masks.
        ignore_index: mask value of unlabelled pixels (never a texture class).
        patch_size: patch side in pixels.
        purity: least share of a patch's pixels of its class.
        fallback_purity: the share a class with no patch at ``purity`` falls back to;
            a class with none at that either gets a constant patch of its mean colour
            (of all images' mean colour if it has no pixels at all).
        per_class: most patches kept per class.
        seed: seed of the offsets and the choice.

    Raises:
        ValueError: settings out of range or no tiles.
    """
    if patch_size < 1 or per_class < 1:
        raise ValueError(f"patch_size and per_class must be >= 1, got {patch_size}, {per_class}")
    if not (0 < purity <= 1 and 0 < fallback_purity <= 1):
        raise ValueError(f"purities must be in (0, 1], got {purity}, {fallback_purity}")
    if not tiles:
        raise ValueError("no tiles to cut textures from")
    classes = texture_classes(num_classes, ignore_index)
    rng = np.random.default_rng(seed)
    lowest = min(purity, fallback_purity)
    found, pixels = _find_candidates(
        tiles, classes, num_classes, ignore_index, patch_size, lowest, rng
    )
    patches: dict[int, np.ndarray] = {}
    sources: dict[int, str] = {}
    means: np.ndarray | None = None
    for k in classes:
        chosen = _choose_candidates(found[k], (purity, fallback_purity), patch_size, per_class, rng)
        if chosen is not None:
            rows, sources[k] = chosen
            if sources[k] != f"purity>={purity:g}":
                log.warning(
                    "class %d: no %d px texture patch is %g %% that class; using %d patch(es) "
                    "of at least %g %%",
                    *(k, patch_size, 100 * purity, len(rows), 100 * fallback_purity),
                )
            patches[k] = np.stack(
                [tiles[t][0][:, y : y + patch_size, x : x + patch_size] for t, y, x, _ in rows]
            )
            continue
        if means is None:
            means = _class_means(tiles, num_classes, ignore_index)
        colour = means[k] if pixels[k] else means[num_classes]
        log.warning(
            "class %d: no %d px texture patch is even %g %% that class (%d px of it in the "
            "tiles); using its mean colour %s",
            *(k, patch_size, 100 * fallback_purity, int(pixels[k]), np.round(colour, 2).tolist()),
        )
        patches[k] = _constant_patch(colour, patch_size, str(tiles[0][0].dtype))
        sources[k] = "mean colour"
    fill = max(classes, key=lambda k: int(pixels[k])) if classes else 0
    return TextureBank.from_patches(patches, num_classes, ignore_index, fill, sources)


def _find_candidates(
    tiles: Sequence[tuple[np.ndarray, np.ndarray]],
    classes: Sequence[int],
    num_classes: int,
    ignore_index: int | None,
    patch_size: int,
    lowest: float,
    rng: np.random.Generator,
) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Candidate patches of every texture class over all tiles, and the pixel counts.

    Returns:
        class -> int64 rows ``(tile, y, x, pixels of the class)`` of the candidates
        with at least ``lowest`` of their pixels of that class; and the pixels of each
        class (the last entry: unlabelled pixels).
    """
    stride = math.gcd(patch_size, MAX_CANDIDATE_STRIDE)
    least = math.ceil(lowest * patch_size * patch_size - 1e-9)
    found: dict[int, list[np.ndarray]] = {k: [] for k in classes}
    pixels = np.zeros(num_classes + 1, dtype=np.int64)
    for t, (_, mask) in enumerate(tiles):
        labels = class_labels(mask, num_classes, ignore_index)
        pixels += np.bincount(labels.ravel(), minlength=num_classes + 1)
        for k, rows in _candidates(labels, num_classes, patch_size, stride, least, rng).items():
            if k in found and len(rows):
                found[k].append(np.hstack([np.full((len(rows), 1), t), rows]))
    empty = np.empty((0, 4), dtype=np.int64)
    return {k: np.concatenate(v) if v else empty for k, v in found.items()}, pixels


def _choose_candidates(
    rows: np.ndarray,
    purities: Sequence[float],
    patch_size: int,
    per_class: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, str] | None:
    """A random ``per_class`` of the candidate ``rows`` at the first of ``purities``
    any of them reaches, with how they were found (``purity>=0.9``); None if none does."""
    area = patch_size * patch_size
    for level in purities:
        ok = rows[rows[:, 3] >= math.ceil(level * area - 1e-9)]
        if len(ok):
            pick = rng.choice(len(ok), size=min(per_class, len(ok)), replace=False)
            return ok[pick], f"purity>={level:g}"
    return None


def _constant_patch(colour: np.ndarray, patch_size: int, dtype: str) -> np.ndarray:
    """One ``(1, C, P, P)`` patch of a constant raw ``colour``, in ``dtype``."""
    flat = np.broadcast_to(colour[:, None, None], (len(colour), patch_size, patch_size))
    return to_raw(flat, np.zeros_like(colour), np.ones_like(colour), dtype)[None]


def class_labels(mask: np.ndarray, num_classes: int, ignore_index: int | None) -> np.ndarray:
    """Class indices, with the ignore index (and anything else) as ``num_classes``."""
    labels = np.asarray(mask).astype(np.int64)
    bad = (labels < 0) | (labels >= num_classes)
    if ignore_index is not None:
        bad |= labels == ignore_index
    labels[bad] = num_classes
    return labels


def _candidates(
    labels: np.ndarray,
    num_classes: int,
    size: int,
    stride: int,
    least: int,
    rng: np.random.Generator,
) -> dict[int, np.ndarray]:
    """Per class, int64 rows ``(y, x, pixels of the class)`` of the candidate patches of
    a tile with at least ``least`` pixels of that class."""
    height, width = labels.shape
    if height < size or width < size:
        return {}
    oy, ox = (int(rng.integers(0, min(stride, n - size + 1))) for n in (height, width))
    hb, wb = (height - oy) // stride, (width - ox) // stride
    bins = num_classes + 1
    blocks = labels[oy : oy + hb * stride, ox : ox + wb * stride]
    blocks = blocks.reshape(hb, stride, wb, stride).transpose(0, 2, 1, 3).reshape(hb * wb, -1)
    ids = blocks + (np.arange(hb * wb, dtype=np.int64) * bins)[:, None]
    counts = np.bincount(ids.ravel(), minlength=hb * wb * bins).reshape(hb, wb, bins)
    total = np.zeros((hb + 1, wb + 1, bins), dtype=np.int64)
    total[1:, 1:] = counts.cumsum(0).cumsum(1)
    b = size // stride
    per_patch = total[b:, b:] - total[:-b, b:] - total[b:, :-b] + total[:-b, :-b]
    out = {}
    for k in range(num_classes):
        ii, jj = np.nonzero(per_patch[..., k] >= max(least, 1))
        out[k] = np.stack([oy + ii * stride, ox + jj * stride, per_patch[ii, jj, k]], axis=1)
    return out


def _class_means(
    tiles: Sequence[tuple[np.ndarray, np.ndarray]], num_classes: int, ignore_index: int | None
) -> np.ndarray:
    """``(num_classes + 1, C)`` mean colour per class; the last row: of all labelled pixels."""
    bands = tiles[0][0].shape[0]
    sums = np.zeros((num_classes + 1, bands))
    counts = np.zeros(num_classes + 1)
    for image, mask in tiles:
        labels = class_labels(mask, num_classes, ignore_index).ravel()
        counts += np.bincount(labels, minlength=num_classes + 1)
        for c in range(bands):
            sums[:, c] += np.bincount(
                labels, weights=image[c].ravel().astype(np.float64), minlength=num_classes + 1
            )
    labelled = counts[:num_classes].sum()
    sums[num_classes] = sums[:num_classes].sum(0)
    counts[num_classes] = labelled
    return sums / np.maximum(counts, 1)[:, None]
