"""The EMA of the generator's weights that synthesis samples from."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from synthsat.tasks.ema import ema_update, warmed_up_decay


def _net(weight: float, mean: float) -> nn.Module:
    net = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(weight)
        net[1].running_mean.fill_(mean)
    return net


def test_warm_up_then_the_configured_decay() -> None:
    assert warmed_up_decay(0.999, 0) == pytest.approx(0.1)
    assert warmed_up_decay(0.999, 8) == pytest.approx(0.5)
    assert warmed_up_decay(0.999, 90) == pytest.approx(0.91)
    assert warmed_up_decay(0.9, 1000) == 0.9
    assert warmed_up_decay(0.5, 8) == 0.5  # the cap applies exactly at the crossover


def test_average_moves_towards_the_model_at_the_rate() -> None:
    average, model = _net(2.0, 0.0), _net(10.0, 7.0)
    ema_update(average, model, decay=0.75, buffers=False)
    for p in average.parameters():
        torch.testing.assert_close(p, torch.full_like(p, 0.75 * 2.0 + 0.25 * 10.0))
    assert (average[1].running_mean == 0.0).all()  # kept its own statistics
    ema_update(average, model, decay=0.5)
    for p in average.parameters():
        torch.testing.assert_close(p, torch.full_like(p, 0.5 * 4.0 + 0.5 * 10.0))
    assert (average[1].running_mean == 7.0).all()  # copied
    for p in model.parameters():  # the model is untouched
        assert (p == 10.0).all()


def test_decay_edges_and_range() -> None:
    average, model = _net(2.0, 0.0), _net(10.0, 7.0)
    ema_update(average, model, decay=1.0, buffers=False)
    assert all((p == 2.0).all() for p in average.parameters())  # frozen
    ema_update(average, model, decay=0.0, buffers=False)
    assert all((p == 10.0).all() for p in average.parameters())  # a copy
    with pytest.raises(ValueError, match=r"decay must be in \[0, 1\]"):
        ema_update(average, model, decay=1.5)
    with pytest.raises(ValueError, match=r"decay must be in \[0, 1\]"):
        ema_update(average, model, decay=-0.1)


def test_architectures_must_match() -> None:
    with pytest.raises(ValueError):
        ema_update(nn.Linear(2, 3), nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1)), 0.5)
