"""Figures of imagery: colour-coded masks, RGB composites, and the study's sample grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from rasterio.windows import Window  # noqa: E402

from synthsat.data.raster_io import read_raster  # noqa: E402


def colorize_mask(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) float RGB; out-of-range values are black."""
    palette = plt.get_cmap("tab10" if num_classes <= 10 else "tab20")(np.arange(num_classes))[:, :3]
    rgb = np.zeros((*mask.shape, 3), np.float32)
    valid = (mask >= 0) & (mask < num_classes)
    rgb[valid] = palette[mask[valid]]
    return rgb


def rgb_composite(image: np.ndarray, rgb_bands: list[int]) -> np.ndarray:
    """(C, H, W) raw values -> (H, W, 3) in [0, 1], 2-98 % percentile stretch per band."""
    bands = (
        image[rgb_bands[:3]].astype(np.float32)
        if image.shape[0] >= 3
        else np.repeat(image[:1].astype(np.float32), 3, 0)
    )
    lo = np.percentile(bands, 2, axis=(1, 2), keepdims=True)
    hi = np.percentile(bands, 98, axis=(1, 2), keepdims=True)
    return np.clip((bands - lo) / np.maximum(hi - lo, 1e-6), 0, 1).transpose(1, 2, 0)


def sample_grid(
    datamodule: Any, synthetic: dict[str, Path], out: Path, size: int = 256, rows: int = 3
) -> Path | None:
    """Mask | real | sample 0 of each synthetic source, for the centre of ``rows``
    training tiles spread over the split (the first, ..., the last).

    Args:
        datamodule: a set-up datamodule (its training tiles are shown).
        synthetic: source name (e.g. ``lambda2``, ``classtexture``) -> tile folder.
        out: PNG path.
        size: side of each panel's window in pixels.
        rows: training tiles shown, one per row.
    """
    if not synthetic:
        return None
    tiles = datamodule.tiles["train"]
    picks = sorted({round(i * (len(tiles) - 1) / max(rows - 1, 1)) for i in range(rows)})
    grid = [_sample_row(datamodule, tiles[i], synthetic, size) for i in picks]
    cols = max(len(row) for row in grid)
    fig, axes = plt.subplots(len(grid), cols, figsize=(3 * cols, 3.2 * len(grid)), squeeze=False)
    for ax_row, panels in zip(axes, grid):
        for ax, (title, img) in zip(ax_row, panels):
            ax.imshow(img, interpolation="nearest")
            ax.set_title(title, fontsize=9)
        for ax in ax_row:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _sample_row(
    datamodule: Any, tile: Any, synthetic: dict[str, Path], size: int
) -> list[tuple[str, np.ndarray]]:
    """The panels of one tile: its mask, real image and each source's sample 0."""
    h, w = tile.shape
    s = min(size, h, w)
    r0, c0 = (h - s) // 2, (w - s) // 2
    mask = np.asarray(tile.mask[r0 : r0 + s, c0 : c0 + s]).astype(np.int64)
    real = np.asarray(tile.image[:, r0 : r0 + s, c0 : c0 + s])
    panels = [
        (f"mask ({tile.name})", colorize_mask(mask, datamodule.num_classes)),
        ("real", rgb_composite(real, datamodule.rgb_bands)),
    ]
    for name, folder in synthetic.items():
        path = Path(folder) / f"{tile.name}_s0.tif"
        if path.exists():
            image = read_raster(path, Window(c0, r0, s, s))
            panels.append((str(name), rgb_composite(image, datamodule.rgb_bands)))
    return panels
