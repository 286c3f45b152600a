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
    datamodule: Any, synthetic: dict[float, Path], out: Path, size: int = 256
) -> Path | None:
    """Mask | real | synthetic at each lambda_div for the centre of the first training tile."""
    if not synthetic:
        return None
    tile = datamodule.tiles["train"][0]
    h, w = tile.shape
    s = min(size, h, w)
    r0, c0 = (h - s) // 2, (w - s) // 2
    window = Window(c0, r0, s, s)
    panels = [
        (
            "mask",
            colorize_mask(
                np.asarray(tile.mask[r0 : r0 + s, c0 : c0 + s]).astype(np.int64),
                datamodule.num_classes,
            ),
        ),
        (
            "real",
            rgb_composite(
                np.asarray(tile.image[:, r0 : r0 + s, c0 : c0 + s]), datamodule.rgb_bands
            ),
        ),
    ]
    for lam, folder in sorted(synthetic.items()):
        path = Path(folder) / f"{tile.name}_s0.tif"
        if path.exists():
            panels.append(
                (
                    f"lambda_div={lam:g}",
                    rgb_composite(read_raster(path, window), datamodule.rgb_bands),
                )
            )
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.2))
    for ax, (title, img) in zip(np.atleast_1d(axes), panels):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
