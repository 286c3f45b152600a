"""Exponential moving average of a network's weights (the generator that synthesis uses)."""

from __future__ import annotations

import torch
from torch import nn


def warmed_up_decay(decay: float, step: int) -> float:
    """The EMA decay at ``step``: ``min(decay, (1 + step) / (10 + step))``.

    Early on the average follows the network closely (0.1 at step 0, 0.5 at step 8), so
    the random initial weights are forgotten quickly; later it is ``decay``.
    """
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def ema_update(average: nn.Module, model: nn.Module, decay: float, buffers: bool = True) -> None:
    """Move ``average``'s parameters towards ``model``'s: ``a <- decay * a + (1 - decay) * p``.

    Args:
        average: the averaged copy, updated in place (same architecture as ``model``).
        model: the network being trained.
        decay: weight of the old average, in [0, 1].
        buffers: copy ``model``'s buffers (e.g. batch-norm statistics) into ``average``.
            Leave it off when the average keeps statistics of its own.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
    for a, p in zip(average.parameters(), model.parameters(), strict=True):
        a.lerp_(p, 1.0 - decay)
    if buffers:
        for a, b in zip(average.buffers(), model.buffers(), strict=True):
            a.copy_(b)
