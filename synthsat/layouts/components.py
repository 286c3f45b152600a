"""Class polygons of land-cover masks: 4-connected components, their bank, and the
classes each class borders.

A *component* is a maximal 4-connected set of pixels of one class (a building, a lake,
a road network). :func:`class_components` labels them; :class:`Component` keeps one
cut out of its mask (its shape, its class, whether it touches the mask's border, i.e.
was clipped by the tile); :func:`adjacency_counts` counts the 4-neighbour pairs of
classes, from which :func:`neighbour_classes` says which classes a class borders in
the training masks (its co-occurrence).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: 4-connectivity (edge neighbours), the structuring element of every labelling here.
FOUR = ndimage.generate_binary_structure(2, 1)


def class_components(mask: np.ndarray, cls: int | Sequence[int]) -> tuple[np.ndarray, int]:
    """The 4-connected components of the pixels of class ``cls`` (or of any of several
    classes) in ``mask``.

    Returns:
        ``(labels, count)``: (H, W) int32 labels, 0 outside the class, 1..count inside.
    """
    classes = [cls] if isinstance(cls, int | np.integer) else list(cls)
    labels, count = ndimage.label(np.isin(mask, classes), structure=FOUR)
    return labels.astype(np.int32, copy=False), int(count)


def component_sizes(mask: np.ndarray, cls: int | Sequence[int]) -> np.ndarray:
    """Pixel counts of the components of class ``cls`` in ``mask`` (int64, any order)."""
    labels, count = class_components(mask, cls)
    return np.bincount(labels.ravel(), minlength=count + 1)[1:].astype(np.int64)


def adjacency_counts(mask: np.ndarray, num_classes: int, ignore_index: int | None) -> np.ndarray:
    """Counts of 4-neighbour pixel pairs by class, symmetric: ``(num_classes, num_classes)``.

    Every horizontal and vertical pair of neighbouring pixels ``(a, b)`` adds 1 to
    ``[a, b]`` and 1 to ``[b, a]`` (a same-class pair adds 2 to the diagonal), so the
    matrix sums to twice the number of pairs. Pairs with a pixel of ``ignore_index`` or
    of a value outside ``0..num_classes-1`` are left out.
    """
    counts = np.zeros((num_classes, num_classes), np.int64)
    for a, b in ((mask[:, :-1], mask[:, 1:]), (mask[:-1, :], mask[1:, :])):
        a, b = a.ravel().astype(np.int64), b.ravel().astype(np.int64)
        keep = (a >= 0) & (a < num_classes) & (b >= 0) & (b < num_classes)
        if ignore_index is not None:
            keep &= (a != ignore_index) & (b != ignore_index)
        pairs = np.bincount(a[keep] * num_classes + b[keep], minlength=num_classes**2)
        counts += pairs.reshape(num_classes, num_classes)
    return counts + counts.T


def neighbour_classes(counts: np.ndarray, min_share: float = 0.01) -> dict[int, frozenset[int]]:
    """The classes each class borders: those holding at least ``min_share`` of its
    pairs with other classes in the symmetric pair ``counts`` of
    :func:`adjacency_counts` (the class itself is always allowed)."""
    out: dict[int, frozenset[int]] = {}
    for cls in range(counts.shape[0]):
        row = counts[cls].astype(np.float64)
        row[cls] = 0
        total = row.sum()
        found = {int(j) for j in np.flatnonzero(row >= min_share * total)} if total else set()
        out[cls] = frozenset(found | {cls})
    return out


@dataclass(frozen=True)
class Component:
    """One component cut out of a training mask.

    Attributes:
        cls: its class.
        shape: (h, w) bool array over its bounding box, True on the component.
        clipped: it touches its mask's border (the tile cut it).
        source: index of the training mask it came from.
    """

    cls: int
    shape: np.ndarray
    clipped: bool
    source: int

    @property
    def area(self) -> int:
        """Its pixel count."""
        return int(self.shape.sum())


def components_of(
    mask: np.ndarray, classes: Iterable[int], source: int = 0, min_area: int = 1
) -> list[Component]:
    """The components of each of ``classes`` in ``mask`` of at least ``min_area`` px, in
    class order, then label order (row-major order of their first pixel)."""
    found: list[Component] = []
    height, width = mask.shape
    for cls in classes:
        labels, count = class_components(mask, int(cls))
        for index, box in enumerate(ndimage.find_objects(labels), start=1):
            if box is None:
                continue
            shape = labels[box] == index
            if shape.sum() < min_area:
                continue
            rows, cols = box
            clipped = rows.start == 0 or cols.start == 0 or rows.stop == height
            clipped = clipped or cols.stop == width
            found.append(Component(int(cls), shape, bool(clipped), source))
    return found


def ring(shape: np.ndarray) -> np.ndarray:
    """The 4-neighbour ring of a component shape, on its box grown by one pixel a side:
    ``(h + 2, w + 2)`` bool, True on the pixels outside the shape that touch it."""
    padded = np.pad(shape, 1)
    return ndimage.binary_dilation(padded, structure=FOUR) & ~padded
