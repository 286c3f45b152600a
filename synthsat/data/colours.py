"""RGB colours of land-cover masks: ``colour_map`` parsing and colours in messages.

A ``colour_map`` (``data.source.colour_map``) maps colours, written ``'#rrggbb'``,
``'r,g,b'`` or as 3 integers, to class indices; :mod:`synthsat.data.masks` reads RGB
and palette masks through it. Colours are packed into one int64 per pixel (16 bits per
channel) to look them up and count them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from synthsat.data.errors import DataError

#: An RGB colour.
Colour = tuple[int, int, int]
#: Colours listed in a message.
MAX_LISTED = 8
#: The option that holds the colour map, named in messages.
COLOUR_MAP_OPTION = "data.source.colour_map"
_OPTION = COLOUR_MAP_OPTION
_SPLIT = re.compile(r"[\s,;]+")


def parse_colour(key: Any) -> Colour:
    """A colour from ``'#rrggbb'``, ``'r,g,b'`` (or ``'r g b'``) or a sequence of 3 ints.

    Raises:
        DataError: ``key`` is not a colour.
    """
    values: list[Any] | None = None
    if isinstance(key, str):
        text = key.strip()
        if re.fullmatch(r"#[0-9a-fA-F]{6}", text):
            values = [int(text[i : i + 2], 16) for i in (1, 3, 5)]
        elif re.fullmatch(r"[(\[]?\s*\d+([\s,;]+\d+){2}\s*[)\]]?", text):
            values = [int(v) for v in _SPLIT.split(text.strip("()[] "))]
    elif isinstance(key, Sequence) and len(key) == 3:
        values = list(key)
    if values is None or not all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) and 0 <= v < 65536
        for v in values
    ):
        raise DataError(
            f"{_OPTION}: key {key!r} is not a colour; write '#rrggbb' or 'r,g,b' "
            "(integers 0..255 for 8-bit masks)"
        )
    r, g, b = (int(v) for v in values)
    return r, g, b


def parse_colour_map(colour_map: Mapping[Any, Any] | None) -> dict[Colour, int] | None:
    """``colour_map`` with its keys parsed by :func:`parse_colour` (None when empty).

    Raises:
        DataError: a key is not a colour, a value not an integer, or one colour is
            mapped to two classes (e.g. ``'#ff0000'`` and ``'255,0,0'``).
    """
    if not colour_map:
        return None
    out: dict[Colour, int] = {}
    for key, cls in colour_map.items():
        colour = parse_colour(key)
        if isinstance(cls, bool) or not isinstance(cls, int | np.integer):
            raise DataError(f"{_OPTION}: colour {key!r} maps to {cls!r}; values are class indices")
        if colour in out and out[colour] != int(cls):
            raise DataError(
                f"{_OPTION}: colour {format_colour(colour)} is mapped twice, to "
                f"{out[colour]} and to {int(cls)}"
            )
        out[colour] = int(cls)
    return out


def format_colour(colour: Colour) -> str:
    """``(r, g, b)``, with ``#rrggbb`` for 8-bit colours."""
    text = f"({colour[0]}, {colour[1]}, {colour[2]})"
    if max(colour) < 256:
        text += " #{:02x}{:02x}{:02x}".format(*colour)
    return text


def format_counts(counts: Counter[Colour]) -> str:
    """The most frequent colours of ``counts`` with their pixel counts, for messages."""
    listed = ", ".join(f"{format_colour(c)}: {n} px" for c, n in counts.most_common(MAX_LISTED))
    more = len(counts) - MAX_LISTED
    return listed + (f" and {more} more" if more > 0 else "")


def pack(rgb: np.ndarray) -> np.ndarray:
    """One int64 per pixel of a (3, ...) colour array (16 bits per channel)."""
    r, g, b = (rgb[i].astype(np.int64) for i in range(3))
    return (r << 32) | (g << 16) | b


def unpack(key: int) -> Colour:
    """The colour packed into ``key`` by :func:`pack`."""
    return (key >> 32) & 0xFFFF, (key >> 16) & 0xFFFF, key & 0xFFFF


def colour_counts(keys: np.ndarray) -> Counter[Colour]:
    """Pixel count of each colour of packed ``keys`` (:func:`pack`)."""
    values, counts = np.unique(keys, return_counts=True)
    return Counter({unpack(int(k)): int(n) for k, n in zip(values, counts, strict=True)})
