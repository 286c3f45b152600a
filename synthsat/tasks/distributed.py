"""Random streams of their own for the processes of a data-parallel (DDP) run.

Every process of a DDP run is seeded alike (each runs the job, ``seed_everything``
included), and a resumed run restores rank 0's random states on every rank
(:class:`~synthsat.tasks.checkpoints.RandomStateCheckpoint`). Training patches drawn in
the main process (``data.num_workers=0``: the random-patch datasets draw from torch's
global generator, whatever index the distributed sampler hands them), style codes,
noise fields and LabelMix coins would then be the same on every rank: N processes would
average N copies of one batch's gradients. :func:`split_random_streams` derives each
rank's streams from the shared state and its rank, at the start of training (tasks
mix in :class:`RankRandomStreams`). One process (``world_size`` 1) is left alone, so
single-device runs draw what they drew.
"""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch


def rank_seed(shared: int, rank: int) -> int:
    """A 63-bit seed for ``rank`` from a value ``shared`` by every rank (distinct ranks,
    independent seeds)."""
    state = np.random.SeedSequence([int(shared), int(rank)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def split_random_streams(trainer: L.Trainer) -> int | None:
    """Reseed Python's, NumPy's and torch's global generators per rank under DDP.

    The seed is :func:`rank_seed` of a number drawn from the (shared) torch generator
    and the global rank, so a run (and a resumed run: the shared state is the
    checkpoint's) draws the same on every rank each time. Data-loader workers take their
    seeds from torch's generator after this, so they differ between ranks too.

    Returns:
        this rank's seed, or None with one process (nothing changed).
    """
    if trainer.world_size <= 1:
        return None
    shared = int(torch.randint(0, 2**62, (1,)).item())
    seed = rank_seed(shared, trainer.global_rank)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed


class RankRandomStreams:
    """LightningModule mixin: :func:`split_random_streams` as training starts (put it
    before the Lightning base class)."""

    trainer: L.Trainer

    def on_train_start(self) -> None:
        split_random_streams(self.trainer)
        super().on_train_start()  # type: ignore[misc]
