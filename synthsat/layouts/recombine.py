"""Recombination: new land-cover masks made of the training masks' own pieces (no
learning).

Each layout is built in three steps, all drawn from one seeded generator:

1. **base**: one random crop of a training mask (after one of the eight flips /
   quarter turns), or, with probability ``mosaic``, a mosaic of four such crops of
   random masks (the quadrants);
2. **roads** (when the data has road classes): a mosaic's road pixels are replaced by
   the nearest non-road class of their quadrant, and the road network of *one* crop
   (another random crop, same transforms) is laid over it whole, so roads stay the
   connected networks of a real tile (clipped only by the layout's border, like a real
   tile's), never dead ends at a quadrant seam. With ``crop_roads`` a crop base gets the
   same: its own roads filled in, another crop's network laid over it, so that a crop
   layout is not the training crop it was cut from (without it, 13 of 20 Dubai crop
   layouts were within 5 % of a training crop, 7 within 1 %);
3. **copy-paste of rare classes**: ``pastes`` times, a component (a 4-connected
   polygon, :mod:`~synthsat.layouts.components`) of a rare class (under ``rare_share``
   of the labelled training pixels) is taken from a training mask, flipped / turned,
   and pasted whole where every pixel under it and around it (its 4-neighbour ring) is
   of a class that its class borders in the training masks (its co-occurrence,
   :func:`~synthsat.layouts.components.neighbour_classes`); a paste never covers road
   or ignored pixels, and a road component is pasted only when it is a whole network
   (it did not touch its tile's border), so no road is ever clipped by a paste. A paste
   that finds no such place in ``tries`` positions is skipped.

Each layout records ``changed_share``: the share of its pixels that differ from its base
before steps 2 and 3 (a crop layout's exact distance to the training crop it was cut
from). The same seed and index give the same bytes (:meth:`Recombiner.layout`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from synthsat.layouts.components import (
    Component,
    adjacency_counts,
    components_of,
    neighbour_classes,
    ring,
)
from synthsat.layouts.geometry import dihedral, mosaic, quadrants, random_piece


@dataclass(frozen=True)
class RecombineSettings:
    """What :class:`Recombiner` varies (``conf/layouts/recombine.yaml``).

    Attributes:
        mosaic: probability that a layout's base is a mosaic of four quadrants (else
            one crop).
        rotate: allow quarter turns (flips are always allowed).
        pastes: rare-class components pasted per layout (at most; see ``tries``).
        rare_share: classes under this share of the labelled training pixels are rare.
        min_area: smallest component pasted (px).
        tries: positions tried per paste before it is skipped.
        context_share: a class borders another when that class holds at least this share
            of its 4-neighbour pairs with other classes in the training masks.
        road_classes: classes whose networks are kept whole.
        crop_roads: a crop base's roads are replaced by another crop's network too (else
            only a mosaic's).
    """

    mosaic: float = 0.5
    rotate: bool = True
    pastes: int = 4
    rare_share: float = 0.1
    min_area: int = 16
    tries: int = 50
    context_share: float = 0.01
    road_classes: tuple[int, ...] = field(default_factory=tuple)
    crop_roads: bool = True

    def check(self) -> None:
        """Raises ValueError naming the first setting out of range
        (``recombine.<key>=<value>: <rule>``)."""
        rules = [
            ("mosaic", 0 <= self.mosaic <= 1, "a number in [0, 1]"),
            ("pastes", self.pastes >= 0, "a whole number >= 0"),
            ("rare_share", 0 <= self.rare_share <= 1, "a number in [0, 1]"),
            ("min_area", self.min_area >= 1, "a whole number >= 1"),
            ("tries", self.tries >= 1, "a whole number >= 1"),
            ("context_share", 0 <= self.context_share <= 1, "a number in [0, 1]"),
        ]
        for key, good, rule in rules:
            if not good:
                raise ValueError(f"recombine.{key}={getattr(self, key)}: must be {rule}")


def layout_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of layout ``index`` of a run seeded ``seed`` (independent of how
    many layouts the run makes and of their order)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


class Recombiner:
    """Makes new masks from the pieces of ``masks`` (see the module docstring).

    Args:
        masks: the training masks, (H, W) integer class indices each.
        num_classes: the class count (classes are 0..num_classes-1).
        ignore_index: the unlabelled value (never pasted, never pasted over); None: none.
        settings: what to vary.
    """

    def __init__(
        self,
        masks: Sequence[np.ndarray],
        num_classes: int,
        ignore_index: int | None,
        settings: RecombineSettings | None = None,
    ) -> None:
        if not masks:
            raise ValueError("recombination needs at least one training mask")
        self.masks = list(masks)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.settings = settings or RecombineSettings()
        self.roads = tuple(sorted(int(c) for c in self.settings.road_classes))
        counts = np.zeros(num_classes, np.int64)
        pairs = np.zeros((num_classes, num_classes), np.int64)
        for mask in self.masks:
            values = mask[(mask >= 0) & (mask < num_classes)].astype(np.int64)
            counts += np.bincount(values, minlength=num_classes)
            pairs += adjacency_counts(mask, num_classes, ignore_index)
        if ignore_index is not None and 0 <= ignore_index < num_classes:
            counts[ignore_index] = 0
        #: Each class's share of the labelled training pixels.
        self.shares = counts / max(int(counts.sum()), 1)
        #: The classes each class borders in the training masks.
        self.neighbours = neighbour_classes(pairs, self.settings.context_share)
        #: The rare classes (present, under ``rare_share``).
        self.rare = [
            c
            for c in range(num_classes)
            if c != ignore_index and 0 < self.shares[c] < self.settings.rare_share
        ]
        self.bank: dict[int, list[Component]] = {}
        for index, mask in enumerate(self.masks):
            for comp in components_of(mask, self.rare, index, self.settings.min_area):
                if comp.cls in self.roads and comp.clipped:
                    continue  # part of a network the tile cut: pasting it would clip it
                self.bank.setdefault(comp.cls, []).append(comp)

    def layout(self, seed: int, index: int, shape: tuple[int, int]) -> tuple[np.ndarray, dict]:
        """Layout ``index`` of a run seeded ``seed``, of ``shape`` (H, W).

        Returns:
            the mask (the training masks' dtype) and what made it: ``base`` (``crop`` or
            ``mosaic``), ``roads`` (another crop's road network was laid over the base),
            ``pasted`` (class -> components pasted) and ``changed_share`` (the share of
            pixels that differ from the base).

        Raises:
            ValueError: no training mask is as large as ``shape`` (or a quadrant of it).
        """
        rng = layout_rng(seed, index)
        s = self.settings
        use_mosaic = bool(rng.random() < s.mosaic)
        base = (
            mosaic(rng, self.masks, shape, s.rotate)
            if use_mosaic
            else random_piece(rng, self.masks, shape, s.rotate)
        )
        if base is None:
            sizes = sorted({m.shape for m in self.masks})
            raise ValueError(
                f"no training mask is as large as a {shape[0]}x{shape[1]} layout in either "
                f"orientation (mask sizes (H, W): {sizes[:5]})"
            )
        info: dict[str, Any] = {"base": "mosaic" if use_mosaic else "crop", "roads": False}
        source = base.copy()
        if self.roads and (use_mosaic or s.crop_roads):
            regions = quadrants(base.shape) if use_mosaic else [(slice(None), slice(None))]
            laid = self._lay_roads(rng, base, regions)
            info["roads"] = laid is not base
            base = laid
        pasted: dict[str, int] = {}
        classes = [c for c in self.rare if self.bank.get(c)]
        for _ in range(s.pastes if classes else 0):
            cls = classes[int(rng.integers(len(classes)))]
            bank = self.bank[cls]
            comp = bank[int(rng.integers(len(bank)))]
            if self._paste(rng, base, comp):
                pasted[str(cls)] = pasted.get(str(cls), 0) + 1
        info["pasted"] = dict(sorted(pasted.items()))
        info["changed_share"] = round(float((base != source).mean()), 6)
        return base, info

    def _lay_roads(
        self, rng: np.random.Generator, base: np.ndarray, regions: list[tuple[slice, slice]]
    ) -> np.ndarray:
        """``base`` with its road pixels filled from the nearest non-road pixel of their
        region (a mosaic's quadrants, or the whole crop) and one crop's whole road
        network laid over it."""
        network = random_piece(rng, self.masks, base.shape, self.settings.rotate)
        if network is None:  # no mask as large as the layout: its quadrants' roads stay
            return base
        out = base.copy()
        for rows, cols in regions:
            part = out[rows, cols]
            road = np.isin(part, self.roads)
            if road.any() and not road.all():
                _, (ii, jj) = ndimage.distance_transform_edt(road, return_indices=True)
                part[...] = part[ii, jj]
        on_road = np.isin(network, self.roads)
        out[on_road] = network[on_road]
        return out

    def _paste(self, rng: np.random.Generator, base: np.ndarray, comp: Component) -> bool:
        """Paste ``comp`` (randomly flipped / turned) into ``base`` where it fits its
        class's neighbours; False when ``tries`` positions found no such place."""
        s = self.settings
        index = int(rng.integers(8 if s.rotate else 2)) * (1 if s.rotate else 4)
        shape = dihedral(comp.shape, index)
        around = ring(shape)
        h, w = shape.shape
        height, width = base.shape
        if h > height or w > width:
            return False
        allowed = np.array(sorted(self.neighbours[comp.cls]))
        banned = [] if self.ignore_index is None else [self.ignore_index]
        if comp.cls not in self.roads:
            banned += list(self.roads)  # roads are never pasted over
        # -1: outside the layout, not checked (a component may lie along the border)
        padded = np.pad(base.astype(np.int64), 1, constant_values=-1)
        for _ in range(s.tries):
            top = int(rng.integers(height - h + 1))
            left = int(rng.integers(width - w + 1))
            under = base[top : top + h, left : left + w][shape]
            near = padded[top : top + h + 2, left : left + w + 2][around]
            near = near[near >= 0]
            if np.isin(under, banned).any():
                continue
            if not (np.isin(under, allowed).all() and np.isin(near, allowed).all()):
                continue
            base[top : top + h, left : left + w][shape] = comp.cls
            return True
        return False
