"""Spatial noise fields: per-pixel generator noise that is defined on the whole tile.

A :class:`NoiseField` is smooth Gaussian noise anchored to a tile's pixel grid: i.i.d.
``N(0, 1)`` values on a lattice every ``cell`` pixels (lattice point ``i`` on pixel
``i * cell``), bilinearly interpolated in between and rescaled so that every pixel is
``N(0, 1)``. Any window of it can be cut out (:meth:`NoiseField.crop`), and two
overlapping windows agree exactly where they overlap, so chips of one tile that share
pixels get the same noise there: the generator's texture follows the tile, not the chip
grid. Training cuts the same kind of windows at random lattice phases
(:func:`random_noise`), so the generator sees what inference gives it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _axis(start: int, length: int, cell: int) -> tuple[Tensor, Tensor]:
    """Lower lattice index and interpolation weight of pixels ``start .. start + length - 1``."""
    pos = torch.arange(start, start + length, dtype=torch.long)
    return pos // cell, (pos % cell).float() / cell


class NoiseField:
    """Smooth Gaussian noise over a ``height x width`` tile, ``channels`` deep.

    Args:
        channels: noise channels (the generator's ``noise_dim``).
        height: tile height in pixels (crops must lie inside).
        width: tile width in pixels.
        cell: lattice spacing in pixels (1: white noise; larger: smoother).
        generator: random generator of the lattice values (seeded per tile).
    """

    def __init__(
        self,
        channels: int,
        height: int,
        width: int,
        cell: int,
        generator: torch.Generator | None = None,
    ) -> None:
        if cell < 1:
            raise ValueError(f"noise cell must be at least 1 px, got {cell}")
        self.channels, self.height, self.width, self.cell = channels, height, width, cell
        rows, cols = math.ceil(height / cell) + 1, math.ceil(width / cell) + 1
        self.lattice = torch.randn(channels, rows, cols, generator=generator)

    def crop(self, row: int, col: int, height: int, width: int) -> Tensor:
        """The field on pixels ``[row, row + height) x [col, col + width)``: (channels, h, w)."""
        if row < 0 or col < 0 or row + height > self.height or col + width > self.width:
            raise ValueError(
                f"noise window ({row}, {col}) + {height}x{width} leaves the "
                f"{self.height}x{self.width} field"
            )
        r, fy = _axis(row, height, self.cell)
        c, fx = _axis(col, width, self.cell)
        lat = self.lattice
        top = lat[:, r][:, :, c] * (1 - fx) + lat[:, r][:, :, c + 1] * fx
        bottom = lat[:, r + 1][:, :, c] * (1 - fx) + lat[:, r + 1][:, :, c + 1] * fx
        field = top * (1 - fy)[:, None] + bottom * fy[:, None]
        # unit variance at every pixel (interpolation shrinks it between lattice points)
        std_y = torch.sqrt((1 - fy) ** 2 + fy**2)
        std_x = torch.sqrt((1 - fx) ** 2 + fx**2)
        return field / (std_y[:, None] * std_x[None, :])


def random_noise(
    batch: int,
    channels: int,
    height: int,
    width: int,
    cell: int,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """A batch of independent noise windows ``(batch, channels, height, width)``.

    Each window is cut from its own :class:`NoiseField` at a random lattice phase: the
    kind of window a tile's field gives a chip at inference.
    """
    out = []
    for _ in range(batch):
        field = NoiseField(channels, height + cell, width + cell, cell, generator)
        dy, dx = torch.randint(0, cell, (2,), generator=generator).tolist()
        out.append(field.crop(dy, dx, height, width))
    if not out:
        return torch.zeros(0, channels, height, width, device=device)
    return torch.stack(out).to(device)
