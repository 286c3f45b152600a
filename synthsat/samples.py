"""Deprecated alias of :mod:`synthsat.figures` (kept for ``from synthsat.samples import ...``)."""

from synthsat.figures import colorize_mask, rgb_composite, sample_grid

__all__ = ["colorize_mask", "rgb_composite", "sample_grid"]
