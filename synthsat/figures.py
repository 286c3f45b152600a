"""Figures of imagery, the one owner of how masks and images are drawn: the class
palette (:func:`colorize_mask`), the percentile-stretched RGB composite
(:func:`rgb_composite`), the study's sample grid (:func:`sample_grid`), the generator's
training sample grid (:func:`generator_grid`, drawn by
:class:`~synthsat.callbacks.GeneratorSamples`), the test panels logged to W&B
(:func:`prediction_panel`) and synthetic tile previews (:func:`tile_preview`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from rasterio.windows import Window  # noqa: E402

from synthsat.atomic import save_figure  # noqa: E402
from synthsat.data.raster_io import read_raster  # noqa: E402


def palette(num_classes: int, ignore_index: int | None = None) -> np.ndarray:
    """(num_classes, 3) float RGB colours of the mask classes (tab10, or tab20 beyond 10
    classes); the ignore index, when it is a class, is black."""
    colours = plt.get_cmap("tab10" if num_classes <= 10 else "tab20")(np.arange(num_classes))
    colours = np.asarray(colours[:, :3], np.float32)
    if ignore_index is not None and 0 <= ignore_index < num_classes:
        colours[ignore_index] = 0.0
    return colours


def colorize_mask(
    mask: np.ndarray, num_classes: int, ignore_index: int | None = None
) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) float RGB (:func:`palette`); out-of-range values
    are black."""
    colours = palette(num_classes, ignore_index)
    rgb = np.zeros((*mask.shape, 3), np.float32)
    valid = (mask >= 0) & (mask < num_classes)
    rgb[valid] = colours[mask[valid]]
    return rgb


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] (an RGB composite, a colourised mask, a panel) as uint8
    0..255, rounded; values outside [0, 1] are clipped. uint8 input is returned as is.

    W&B casts a float array to uint8 without rescaling, so a [0, 1] image logged as
    floats shows black: every image the project logs goes through here
    (:func:`synthsat.tracking.log_images`).
    """
    array = np.asarray(image)
    if array.dtype == np.uint8:
        return array
    return np.rint(np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def rgb_indices(rgb_bands: list[int], channels: int) -> list[int]:
    """The three bands of an RGB composite: ``rgb_bands[:3]``, or the first one three
    times (grey) for single-band imagery or fewer than three RGB bands."""
    bands = [int(b) for b in list(rgb_bands)[:3]]
    if len(bands) < 3 or channels < 3:
        return [bands[0] if bands else 0] * 3
    return bands


def percentile_limits(
    images: np.ndarray, rgb_bands: list[int], low: float = 2.0, high: float = 98.0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-band ``low`` / ``high`` percentiles of the RGB bands of (C, H, W) or
    (N, C, H, W) raw images, over all their pixels: the limits of a shared stretch."""
    stack = images if images.ndim == 4 else images[None]
    bands = stack[:, rgb_indices(rgb_bands, stack.shape[1])].astype(np.float32)
    flat = bands.transpose(1, 0, 2, 3).reshape(3, -1)
    return np.percentile(flat, low, axis=1), np.percentile(flat, high, axis=1)


def rgb_composite(
    image: np.ndarray,
    rgb_bands: list[int],
    limits: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """(C, H, W) raw values -> (H, W, 3) in [0, 1], linearly stretched per band between
    ``limits`` (default: the image's own 2nd and 98th percentiles)."""
    lo, hi = limits if limits is not None else percentile_limits(image, rgb_bands)
    lo = np.asarray(lo, np.float32)[:, None, None]
    hi = np.asarray(hi, np.float32)[:, None, None]
    bands = image[rgb_indices(rgb_bands, image.shape[0])].astype(np.float32)
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
    save_figure(fig, out, dpi=100)
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
        (
            f"mask ({tile.name})",
            colorize_mask(mask, datamodule.num_classes, datamodule.ignore_index),
        ),
        ("real", rgb_composite(real, datamodule.rgb_bands)),
    ]
    for name, folder in synthetic.items():
        path = Path(folder) / f"{tile.name}_s0.tif"
        if path.exists():
            image = read_raster(path, Window(c0, r0, s, s))
            panels.append((str(name), rgb_composite(image, datamodule.rgb_bands)))
    return panels


@torch.no_grad()
def generator_grid(
    task: Any, batch: Mapping[str, Any], rows: int = 4, samples: int = 3, seed: int = 0
) -> torch.Tensor:
    """A trained or training generator's sample grid (3, H, W) in [0, 1]: one row per mask
    of ``batch``, columns mask | real | ``samples`` samples (codes and noise from ``seed``).

    Images are RGB composites of the data's ``rgb_bands`` in raw units (the task's band
    normalisation undone), all stretched between the 2nd and 98th percentiles of the
    real patches shown. The generator's mode is restored; global random state is untouched.
    """
    from torchvision.utils import make_grid

    from synthsat.data.datasets import Normalizer

    data = task.hparams.metadata
    n = min(rows, batch["image"].shape[0])
    image = batch["image"][:n].to(task.device)
    mask = batch["mask"][:n].to(task.device)
    onehot = task.onehot(mask)
    gen = task.inference_generator()
    was_training = gen.training
    gen.eval()
    rng = torch.Generator().manual_seed(seed)
    h, w = image.shape[-2:]
    fakes = [
        gen(onehot, task.sample_z(n, rng), task.sample_noise(n, h, w, rng)) for _ in range(samples)
    ]
    gen.train(was_training)
    normalizer = Normalizer(data["mean"], data["std"])
    real = normalizer.denormalize(image).float().cpu().numpy()
    limits = percentile_limits(real, data["rgb_bands"])
    masks = mask.cpu().numpy()
    columns = [
        [colorize_mask(m, task.num_classes, data["ignore_index"]) for m in masks],
        [rgb_composite(r, data["rgb_bands"], limits) for r in real],
    ]
    for fake in fakes:
        raw = normalizer.denormalize(fake).float().cpu().numpy()
        columns.append([rgb_composite(f, data["rgb_bands"], limits) for f in raw])
    panels = [torch.from_numpy(col[i]).permute(2, 0, 1) for i in range(n) for col in columns]
    tiles = torch.stack(panels)  # row-major: mask, real, samples
    scale = max(1, 128 // image.shape[-1])
    if scale > 1:
        tiles = torch.nn.functional.interpolate(tiles, scale_factor=scale, mode="nearest")
    return make_grid(tiles.float(), nrow=len(columns), padding=2, pad_value=1.0)


def prediction_panel(
    image: Any, truth: Any, pred: Any, metadata: Mapping[str, Any], max_side: int = 256
) -> Any:
    """One (H, W*3 + 4, 3) float RGB panel image | truth | prediction of a test chip.

    Args:
        image: the chip's normalised image (C, H, W) as the model sees it.
        truth: its mask (H, W).
        pred: the predicted classes (H, W).
        metadata: the data's metadata (``mean``, ``std``, ``rgb_bands``, ``classes``,
            ``ignore_index``).
        max_side: panels are subsampled (every k-th pixel) to at most this side.
    """
    from synthsat.data.datasets import Normalizer

    k = max(1, -(-max(image.shape[-2:]) // max_side))
    raw = Normalizer(metadata["mean"], metadata["std"]).denormalize(image.detach().cpu())
    rgb = rgb_composite(raw.float().numpy()[:, ::k, ::k], metadata["rgb_bands"])
    n, ignore = len(metadata["classes"]), metadata.get("ignore_index")
    masks = [colorize_mask(m.detach().cpu().numpy()[::k, ::k], n, ignore) for m in (truth, pred)]
    gap = np.ones((rgb.shape[0], 2, 3), np.float32)
    return np.concatenate([rgb, gap, masks[0], gap, masks[1]], axis=1)


def tile_preview(path: Path, rgb_bands: list[int], max_side: int = 256) -> Any:
    """An (h, w, 3) float RGB preview of a synthetic GeoTIFF: read decimated to at most
    ``max_side`` px a side, its ``rgb_bands`` stretched between their 2nd and 98th
    percentiles (:func:`synthsat.figures.rgb_composite`)."""
    import rasterio

    with rasterio.open(path) as src:
        k = max(1, -(-max(src.width, src.height) // max_side))
        shape = (src.count, -(-src.height // k), -(-src.width // k))
        image = src.read(out_shape=shape)
    return rgb_composite(image, rgb_bands)
