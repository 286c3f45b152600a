"""Memorisation: are synthetic chips closer to the training chips than new real chips are?

A generator that copies its training tiles makes chips whose nearest training chip (in
a feature space, e.g. the real-trained segmenter's pooled encoder features) is much
nearer than a held-out real chip's nearest training chip. :func:`memorisation_ratio`
compares the two medians: about 1 or above for a generator that makes new imagery, near
0 for one that copies. Synthetic chips rendered from training masks share their layout
with a training chip, which pulls the ratio below 1 even without copying: read it beside
the same number for the real training chips' own counterparts (0) and the held-out
chips (1), and flag only a ratio under :data:`FLAG_BELOW`.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: A ratio under this flags the generator as copying its training chips.
FLAG_BELOW = 0.5


def nearest_distances(queries: Tensor, bank: Tensor, chunk: int = 1024) -> Tensor:
    """The Euclidean distance from each row of ``queries`` (N, D) to its nearest row of
    ``bank`` (M, D), computed in float64 chunks of ``chunk`` queries."""
    if queries.ndim != 2 or bank.ndim != 2 or queries.shape[1] != bank.shape[1]:
        raise ValueError(
            f"need (N, D) and (M, D) features, got {tuple(queries.shape)} and {tuple(bank.shape)}"
        )
    if len(bank) == 0:
        raise ValueError("the bank of training features is empty")
    bank64 = bank.to(torch.float64)
    out = [
        torch.cdist(part.to(torch.float64), bank64).min(dim=1).values
        for part in queries.split(chunk)
    ]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def memorisation_ratio(
    synthetic: Tensor, train: Tensor, held_out: Tensor
) -> dict[str, float | bool]:
    """How near synthetic chips are to the training chips, against held-out real chips.

    Args:
        synthetic: features of synthetic chips (N, D).
        train: features of the real training chips (M, D), the bank.
        held_out: features of real chips the generator never saw (K, D), e.g. validation.

    Returns:
        ``nn_synthetic`` and ``nn_held_out`` (median nearest-training-chip distances),
        ``memorisation_ratio`` (their quotient), ``copied_share`` (the share of synthetic
        chips nearer to a training chip than the nearest held-out chip ever is) and
        ``memorisation_flag`` (ratio < :data:`FLAG_BELOW`).
    """
    d_synth = nearest_distances(synthetic, train)
    d_held = nearest_distances(held_out, train)
    if len(d_synth) == 0 or len(d_held) == 0:
        raise ValueError("need at least one synthetic and one held-out chip")
    synth_median, held_median = float(d_synth.median()), float(d_held.median())
    ratio = synth_median / held_median if held_median > 0 else float("inf")
    return {
        "nn_synthetic": synth_median,
        "nn_held_out": held_median,
        "memorisation_ratio": ratio,
        "copied_share": float((d_synth < d_held.min()).double().mean()),
        "memorisation_flag": ratio < FLAG_BELOW,
    }
