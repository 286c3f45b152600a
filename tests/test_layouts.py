"""Recombination (synthsat.layouts.recombine): seeded, made of training pieces, roads kept
whole, rare classes pasted only next to the classes they border in training."""

from __future__ import annotations

import numpy as np
import pytest

from synthsat.layouts.components import adjacency_counts, class_components, neighbour_classes
from synthsat.layouts.geometry import DIHEDRAL, dihedral, mosaic
from synthsat.layouts.recombine import Recombiner, RecombineSettings
from synthsat.metrics.layout import nearest_distances

ROAD = 4


def _training() -> list[np.ndarray]:
    """Three masks: class 0 and a class-2 strip, class-1 plots each holding a class-3
    square (3 borders only 1), a road cross (4) spanning the tile."""
    masks = []
    for _ in range(3):
        m = np.zeros((64, 64), np.uint8)
        m[:, 40:] = 2
        for top, left in ((4, 4), (4, 44), (44, 4), (44, 44)):
            m[top : top + 14, left : left + 14] = 1
            m[top + 5 : top + 9, left + 5 : left + 9] = 3  # 3 only ever inside 1
        m[30:34, :] = ROAD
        m[:, 30:34] = ROAD
        masks.append(m)
    return masks


def test_dihedral_transforms_are_the_eight() -> None:
    a = np.arange(6).reshape(2, 3)
    seen = {dihedral(a, i).tobytes() + bytes(dihedral(a, i).shape) for i in range(8)}
    assert len(DIHEDRAL) == 8 and len(seen) == 8
    np.testing.assert_array_equal(dihedral(a, 4), a[:, ::-1])
    np.testing.assert_array_equal(dihedral(a, 1), np.rot90(a))


def test_mosaic_quadrants_are_training_crops() -> None:
    masks = [np.random.default_rng(3).integers(0, 5, (20, 20)).astype(np.uint8)]
    out = mosaic(np.random.default_rng(0), masks, (10, 12), rotate=True)
    assert out is not None and out.shape == (10, 12)
    for rows, cols in ((slice(0, 5), slice(0, 6)), (slice(5, 10), slice(6, 12))):
        assert nearest_distances([out[rows, cols]], masks)[0] == 0.0


def test_same_seed_same_bytes_other_seed_other_masks() -> None:
    maker = Recombiner(_training(), 5, None, RecombineSettings(road_classes=(ROAD,), pastes=6))
    a = [maker.layout(7, i, (48, 48))[0] for i in range(4)]
    b = [maker.layout(7, i, (48, 48))[0] for i in range(4)]
    c = [maker.layout(8, i, (48, 48))[0] for i in range(4)]
    assert [x.tobytes() for x in a] == [x.tobytes() for x in b]
    assert [x.tobytes() for x in a] != [x.tobytes() for x in c]
    assert a[2].tobytes() == maker.layout(7, 2, (48, 48))[0].tobytes()  # alone, same bytes


def test_crops_without_pastes_are_training_crops() -> None:
    maker = Recombiner(_training(), 5, None, RecombineSettings(mosaic=0.0, pastes=0))
    layouts = [maker.layout(0, i, (40, 24))[0] for i in range(6)]
    assert all(m.shape == (40, 24) for m in layouts)
    np.testing.assert_array_equal(nearest_distances(layouts, _training()), 0.0)


def test_mosaic_roads_are_one_whole_network() -> None:
    """A 64 px layout of 64 px tiles: the road layer is a whole tile's cross, turned."""
    settings = RecombineSettings(mosaic=1.0, pastes=0, road_classes=(ROAD,))
    maker = Recombiner(_training(), 5, None, settings)
    cross = _training()[0] == ROAD
    for i in range(6):
        layout, info = maker.layout(1, i, (64, 64))
        assert info["base"] == "mosaic" and info["roads"]
        assert class_components(layout, ROAD)[1] == 1
        road = layout == ROAD
        assert any((road == dihedral(cross, k)).all() for k in range(8))
    # the plain mosaic of 32 px quadrants cuts the cross into pieces
    plain = Recombiner(_training(), 5, None, RecombineSettings(mosaic=1.0, pastes=0))
    pieces = [class_components(plain.layout(1, i, (64, 64))[0], ROAD)[1] for i in range(6)]
    assert max(pieces) > 1


def test_crop_layouts_get_another_crops_road_network() -> None:
    """crop_roads: a crop's own road cross is filled in and another crop's laid over it;
    changed_share is the exact share of pixels that differ from the crop it was cut from.
    Training masks whose crosses sit at different places make the two differ."""
    masks = _training()
    for k, m in enumerate(masks):  # move each tile's cross: rows / columns 10k + 20
        m[m == ROAD] = 0
        m[10 * k + 20 : 10 * k + 24, :] = ROAD
        m[:, 10 * k + 20 : 10 * k + 24] = ROAD
    settings = RecombineSettings(mosaic=0.0, pastes=0, road_classes=(ROAD,))
    maker = Recombiner(masks, 5, None, settings)
    plain = Recombiner(
        masks, 5, None, RecombineSettings(**{**settings.__dict__, "crop_roads": False})
    )
    moved = 0
    for i in range(8):
        layout, info = maker.layout(4, i, (48, 48))
        crop, plain_info = plain.layout(4, i, (48, 48))  # the same crop, its own roads
        assert info["base"] == "crop" and info["roads"] and not plain_info["roads"]
        assert plain_info["changed_share"] == 0.0
        assert info["changed_share"] == pytest.approx(float((layout != crop).mean()), abs=1e-6)
        assert class_components(layout, ROAD)[1] == 1  # one whole network
        assert ((layout == ROAD) | (crop == ROAD) | (layout == crop)).all()  # only roads moved
        moved += info["changed_share"] > 0.05
    assert moved >= 4


def test_pastes_respect_training_neighbours_and_spare_roads() -> None:
    settings = RecombineSettings(
        mosaic=0.0, pastes=30, rare_share=0.05, min_area=4, road_classes=(ROAD,)
    )
    maker = Recombiner(_training(), 5, None, settings)
    assert maker.rare == [3]
    assert maker.neighbours[3] == frozenset({1, 3})
    no_pastes = RecombineSettings(mosaic=0.0, pastes=0, road_classes=(ROAD,))
    base = Recombiner(_training(), 5, None, no_pastes)  # the same crops and road networks
    more = 0
    for i in range(8):
        layout, info = maker.layout(2, i, (48, 48))
        plain, _ = base.layout(2, i, (48, 48))
        pairs = adjacency_counts(layout, 5, None)
        assert pairs[3, 0] == pairs[3, 2] == pairs[3, ROAD] == 0  # 3 only borders 1
        np.testing.assert_array_equal(layout == ROAD, plain == ROAD)  # roads untouched
        more += class_components(layout, 3)[1] - class_components(plain, 3)[1]
        assert (
            sum(info["pasted"].values())
            >= class_components(layout, 3)[1] - class_components(plain, 3)[1]
        )
    assert more > 0


def test_only_whole_road_networks_are_pasted() -> None:
    masks = _training()
    masks[0][50:53, 20:23] = ROAD  # a small whole network inside class 0
    settings = RecombineSettings(rare_share=1.0, min_area=4, road_classes=(ROAD,))
    maker = Recombiner(masks, 5, None, settings)
    roads = maker.bank[ROAD]
    assert [r.area for r in roads] == [9] and not roads[0].clipped


def test_neighbour_classes_threshold() -> None:
    counts = np.array([[10, 99, 1], [99, 0, 0], [1, 0, 5]])
    assert neighbour_classes(counts, 0.05) == {
        0: frozenset({0, 1}),
        1: frozenset({0, 1}),
        2: frozenset({0, 2}),
    }


def test_bad_settings_and_sizes() -> None:
    with pytest.raises(ValueError, match=r"recombine.mosaic=1.5"):
        RecombineSettings(mosaic=1.5).check()
    maker = Recombiner(_training(), 5, None)
    with pytest.raises(ValueError, match="no training mask is as large"):
        maker.layout(0, 0, (65, 65))
