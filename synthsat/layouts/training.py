"""The training masks a layout method learns from or recombines, read as class indices.

Masks are read through the data source's own reader (:class:`~synthsat.data.masks.
MaskReader` with its ``label_map`` / ``colour_map``), so a layout method sees the classes
training sees, whatever way the files store them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthsat.data.errors import DataError
from synthsat.data.masks import MaskReader
from synthsat.data.sources import TileSource


@dataclass(frozen=True)
class TrainingMasks:
    """Training masks and what they mean.

    Attributes:
        names: tile names (mask stems).
        masks: (H, W) class indices (uint8, or uint16 for class values above 255).
        mask_paths: the mask files.
        image_paths: the co-located image files.
        classes: class names (index = class value).
        ignore_index: the unlabelled value, or None.
    """

    names: list[str]
    masks: list[np.ndarray]
    mask_paths: list[Path]
    image_paths: list[Path]
    classes: list[str]
    ignore_index: int | None

    @property
    def num_classes(self) -> int:
        """The class count."""
        return len(self.classes)

    @property
    def dtype(self) -> np.dtype:
        """The masks' dtype."""
        return self.masks[0].dtype


def mask_dtype(num_classes: int, ignore_index: int | None) -> np.dtype:
    """The smallest unsigned dtype holding every class and the ignore index."""
    top = max(num_classes - 1, ignore_index if ignore_index is not None else 0)
    return np.dtype(np.uint8 if top < 256 else np.uint16)


def read_training_masks(
    source: TileSource,
    splits: Sequence[str],
    classes: Sequence[str],
    ignore_index: int | None,
) -> TrainingMasks:
    """The masks of ``splits`` of ``source`` as class indices.

    Raises:
        DataError: no mask in those splits, or a mask holding values that are neither a
            class nor the ignore index (naming the file and the values).
    """
    source.prepare()
    pairs = []
    for split in splits:
        pairs += [p for p in source.pairs(split) if p not in pairs]
    if not pairs:
        raise DataError(f"{source.describe()}: no tiles in splits {list(splits)}")
    reader = MaskReader(source.label_map, source.colour_map)
    allowed = set(range(len(classes))) | ({ignore_index} if ignore_index is not None else set())
    dtype = mask_dtype(len(classes), ignore_index)
    masks = []
    for pair in pairs:
        values = reader.read(pair.mask)
        found = {int(v) for v in np.unique(values)}
        bad = sorted(found - allowed)
        if bad:
            raise DataError(
                f"{pair.mask}: mask values {bad[:8]} are neither classes 0..{len(classes) - 1} "
                f"nor the ignore index {ignore_index}"
            )
        masks.append(values.astype(dtype))
    return TrainingMasks(
        [p.name for p in pairs],
        masks,
        [p.mask for p in pairs],
        [p.image for p in pairs],
        list(classes),
        ignore_index,
    )


def road_classes(classes: Sequence[str]) -> tuple[int, ...]:
    """The classes whose name says road (``road``, ``impervious road``, ``Roads``)."""
    return tuple(i for i, name in enumerate(classes) if "road" in str(name).lower())
