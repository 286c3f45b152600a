"""A tile: one image raster and its land-cover mask raster on the same pixel grid."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from synthsat.data.errors import DataError


@dataclass(frozen=True)
class TilePair:
    """Paths of a co-registered image / mask pair and the tile's name (file stem)."""

    name: str
    image: Path
    mask: Path


def select_split(pairs: list[TilePair], names: list[str], split: str, where: str) -> list[TilePair]:
    """Tiles whose stem equals a name in ``names`` or starts with ``name + '_'``.

    A split name that matches no tile raises :class:`~synthsat.data.errors.DataError`.
    """
    chosen: list[TilePair] = []
    for name in names:
        hits = [p for p in pairs if p.name == name or p.name.startswith(f"{name}_")]
        if not hits:
            raise DataError(
                f"{where}: split '{split}' names '{name}', but no image/mask pair has that "
                f"stem (known stems: {', '.join(p.name for p in pairs[:8])}"
                f"{', ...' if len(pairs) > 8 else ''})"
            )
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


def pair_by_stem(images: list[Path], masks: list[Path], where: str) -> list[TilePair]:
    """Match image and mask files by stem; unmatched files are an error."""
    if not images:
        raise DataError(f"{where}: no image files found")
    if not masks:
        raise DataError(f"{where}: no mask files found")
    by_stem = {m.stem: m for m in masks}
    missing = [i.name for i in images if i.stem not in by_stem]
    if missing:
        raise DataError(f"{where}: no mask for image(s) {', '.join(missing[:5])}")
    image_stems = {i.stem for i in images}
    orphans = [m.name for m in masks if m.stem not in image_stems]
    if orphans:
        raise DataError(f"{where}: no image for mask(s) {', '.join(orphans[:5])}")
    return [TilePair(i.stem, i, by_stem[i.stem]) for i in sorted(images)]


def default_splits(names: list[str]) -> dict[str, list[str]]:
    """Last tile(s) for test, one before them for validation, the rest for training."""
    n = len(names)
    if n < 3:
        return {"train": names, "val": names[-1:], "test": names[-1:]}
    n_test = max(1, n // 8)
    return {
        "train": names[: n - n_test - 1],
        "val": names[n - n_test - 1 : n - n_test],
        "test": names[n - n_test :],
    }
