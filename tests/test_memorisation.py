"""The memorisation check: synthetic chips' nearest training chip against held-out real
chips' (a generator that copies its training tiles is flagged)."""

from __future__ import annotations

import pytest
import torch

from synthsat.metrics.memorisation import FLAG_BELOW, memorisation_ratio, nearest_distances


def test_nearest_distances_by_hand() -> None:
    queries = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    bank = torch.tensor([[0.0, 1.0], [3.0, 0.0]])
    assert nearest_distances(queries, bank).tolist() == [1.0, 4.0]
    assert nearest_distances(queries, bank, chunk=1).tolist() == [1.0, 4.0]
    with pytest.raises(ValueError, match=r"\(N, D\) and \(M, D\)"):
        nearest_distances(queries, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="empty"):
        nearest_distances(queries, torch.zeros(0, 2))


def _features(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 16, generator=torch.Generator().manual_seed(seed))


def test_a_copying_generator_is_flagged_and_a_new_one_is_not() -> None:
    train, held_out = _features(300, 0), _features(60, 1)
    copied = train[:60] + 1e-3 * _features(60, 2)  # the training chips, barely changed
    copy = memorisation_ratio(copied, train, held_out)
    assert copy["memorisation_ratio"] < 0.01 and copy["memorisation_flag"] is True
    assert copy["copied_share"] == 1.0
    new = memorisation_ratio(_features(60, 3), train, held_out)  # the same distribution
    assert 0.8 < new["memorisation_ratio"] < 1.25 and new["memorisation_flag"] is False
    assert new["copied_share"] < 0.1
    assert new["nn_held_out"] == copy["nn_held_out"]
    assert new["memorisation_ratio"] == pytest.approx(new["nn_synthetic"] / new["nn_held_out"])
    # the flag's edge: halfway between copies and new chips
    half = memorisation_ratio(0.5 * (copied + _features(60, 3)), train, held_out)
    assert half["memorisation_flag"] is (half["memorisation_ratio"] < FLAG_BELOW)
