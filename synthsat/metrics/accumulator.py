"""The accumulator protocol of the metrics, and matched real / synthetic feature sets.

Every metric of :func:`~synthsat.metrics.synthetic.synthetic_metrics` is an accumulator:
``update(...)`` adds what one tile (or one batch of chips) contributes, ``compute()``
gives the metric of everything added so far. The standalone function of each metric
module (e.g. :func:`~synthsat.metrics.spectral.spectral_distances`,
:func:`~synthsat.metrics.fidelity.fid_kid`) feeds its accumulator once and computes it,
so the functions the tests call and the whole-set metrics run the same code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

import torch
from torch import Tensor

ResultT_co = TypeVar("ResultT_co", covariant=True)


class Accumulator(Protocol[ResultT_co]):
    """Adds data with ``update`` (arguments per metric) and gives the metric with ``compute``."""

    update: Callable[..., None]

    def compute(self) -> ResultT_co:
        """The metric of everything added so far."""
        ...


class MatchedFeatures:
    """Features of real items and of ``samples`` synthetic samples of each, in order.

    Feature distances compare the real items with the ``k``-th sample of every item: sets
    of equal size that a perfect generator matches exactly. With ``samples=1`` the two
    sets are free to differ in size.

    Args:
        samples: synthetic samples per real item; the synthetic rows of each
            :meth:`add` are item-major (the ``samples`` samples of item 0, then of item 1,
            ...).
    """

    def __init__(self, samples: int = 1) -> None:
        if samples < 1:
            raise ValueError(f"samples must be positive, got {samples}")
        self.samples = samples
        self._real: list[Tensor] = []
        self._synthetic: list[Tensor] = []

    def add(self, real: Tensor, synthetic: Tensor) -> None:
        """Add ``(N, D)`` real features and the ``(N * samples, D)`` synthetic ones."""
        if self.samples > 1 and synthetic.shape[0] != real.shape[0] * self.samples:
            raise ValueError(
                f"{synthetic.shape[0]} synthetic feature rows for {real.shape[0]} real ones "
                f"and {self.samples} samples each"
            )
        self._real.append(real)
        self._synthetic.append(synthetic)

    @property
    def count(self) -> int:
        """Real feature rows added so far."""
        return sum(f.shape[0] for f in self._real)

    def sets(self) -> tuple[Tensor, list[Tensor]]:
        """The real features and, per sample index, the matched synthetic features.

        Raises:
            ValueError: if nothing was added.
        """
        if not self._real:
            raise ValueError("no features were added")
        real, synthetic = torch.cat(self._real), torch.cat(self._synthetic)
        if self.samples == 1:
            return real, [synthetic]
        return real, list(synthetic.view(-1, self.samples, synthetic.shape[-1]).unbind(1))
