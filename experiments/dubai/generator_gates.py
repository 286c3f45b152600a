"""Quality gates of a generator on Dubai (experiments/dubai/GENERATOR.md).

Usage::

    python experiments/dubai/generator_gates.py --gen RUN_DIR[:LABEL] [--gen ...] \
        --seg SEG_CKPT --out OUT_DIR [--tiles N] [--chip-size 64]

For each generator (a ``train_generator`` run directory or a checkpoint), the script

1. synthesises the training masks (``synthsat.synthesize``, its defaults: chip/2 overlap,
   one style per tile; ``--tiles`` keeps the first N training tiles of each tile group);
2. scores them with :func:`synthsat.metrics.synthetic.synthetic_metrics` against the real
   tiles of those masks, with the real-trained segmentation model ``--seg``;
3. computes the four gates of the issue:

   a. seam ratio of the synthetic tiles within 10 % of the real tiles' on the same chip
      grid, and no autocorrelation peak at the chip step (``acf_peak`` <= 0.05);
   b. segmentation consistency >= 0.85 x the same model's mIoU on the real images of those
      masks (the same chips);
   c. domain Fréchet distance (segmentation encoder features) from the synthetic chips to
      the real *validation* chips <= 2 x the distance from the real training chips to
      them (``--reference val``, the default: the test tiles are the study's, used once;
      the committed GENERATOR.md numbers were computed against test chips);
   d. noise use: the per-pixel std over 8 noise draws (style and noise field) for one mask,
      in normalised units, >= 0.2 at lambda_div > 0 and larger than at lambda_div = 0;

and reports the memorisation ratio (:func:`synthsat.metrics.memorisation.
memorisation_ratio`: synthetic chips' nearest training chip against the reference chips',
in the same features; flagged under 0.5), and writes ``gates.json``, ``gates.md`` and
``tiles.png`` (whole synthetic tiles next to the real ones) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from synthsat.figures import colorize_mask  # noqa: E402
from synthsat.jobs.evaluate_synthetic import load_segmenter  # noqa: E402
from synthsat.metrics.chips import chip_side, select_chips  # noqa: E402
from synthsat.metrics.frechet import feature_frechet_distance  # noqa: E402
from synthsat.metrics.memorisation import memorisation_ratio  # noqa: E402
from synthsat.metrics.synthetic import synthetic_metrics  # noqa: E402
from synthsat.synthesis import TileSynthesizer, load_chip_generator, make_requests  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NOISE_DRAWS = 8


def checkpoint(path: Path) -> Path:
    """A run directory's last checkpoint, or the checkpoint given."""
    if path.is_dir():
        return path / "checkpoints" / "last.ckpt"
    return path


def datamodule(tiles: int | None, scale: float = 1.0) -> Any:
    """The Dubai datamodule (fit + test tiles) at ``scale`` (train / val tiles resampled),
    optionally with the first N tiles per group."""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "evaluate_synthetic",
            overrides=[
                "data=dubai",
                "synthetic=unused",
                f"paths.root={ROOT}",
                f"data.scale={scale}",
            ],
        )
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    if tiles:
        groups: dict[str, int] = {}
        keep = []
        for tile in dm.tiles["train"]:
            group = tile.name.split("_")[0]
            groups[group] = groups.get(group, 0) + 1
            if groups[group] <= tiles:
                keep.append(tile)
        dm.tiles["train"] = keep
    return dm


def segmenter_scale(path: Path) -> float:
    """The ``data.scale`` the segmentation checkpoint ``path`` trained at (1 if none)."""
    hparams = torch.load(path, map_location="cpu", weights_only=True)["hyper_parameters"]
    data = hparams.get("metadata") or hparams.get("data") or {}
    return float(data.get("scale", 1.0))


def synthesise(ckpt: Path, out: Path, names: list[str], chip_size: int | None) -> None:
    """Synthesise the masks of ``names`` with the ``synthesize`` command (resumable)."""
    overrides = [
        f"ckpt={ckpt}",
        "data=dubai",
        f"out={out}",
        "samples=1",
        "style=auto",
        "seed=0",
        f"hydra.run.dir={out}/run",
    ]
    if chip_size:
        overrides.append(f"chip_size={chip_size}")
    overrides.append("tiles=[" + ",".join(names) + "]")
    subprocess.run([sys.executable, "-m", "synthsat.synthesize", *overrides], check=True, cwd=ROOT)


def chip_features(segmenter: Any, images: list[np.ndarray], normalizer: Any) -> torch.Tensor:
    """Pooled deepest encoder features of raw (C, S, S) chips."""
    feats = []
    for i in range(0, len(images), 8):
        batch = torch.from_numpy(np.stack(images[i : i + 8]).astype(np.float32))
        _, pooled = segmenter.predict(normalizer.normalize(batch))
        feats.append(pooled.cpu())
    return torch.cat(feats)


def domain_gate(
    dm: Any, segmenter: Any, synthetic_dir: Path, side: int, max_chips: int, reference: str
) -> dict[str, Any]:
    """FD(synthetic train chips, real ``reference`` chips) and FD(real train chips, real
    ``reference`` chips); the memorisation ratio of the synthetic chips against the
    reference chips, both to the real training chips."""
    from rasterio.windows import Window

    from synthsat.data.raster_io import read_raster

    train, ref = dm.tiles["train"], dm.tiles[reference]
    chips = select_chips([t.shape for t in train], side, max_chips, seed=0)
    real, synth = [], []
    for t, r, c in chips:
        tile = train[t]
        real.append(np.asarray(tile.image[:, r : r + side, c : c + side]))
        synth.append(read_raster(synthetic_dir / f"{tile.name}_s0.tif", Window(c, r, side, side)))
    ref_chips = [
        np.asarray(ref[t].image[:, r : r + side, c : c + side])
        for t, r, c in select_chips([t.shape for t in ref], side, max_chips, seed=1)
    ]
    f_real = chip_features(segmenter, real, segmenter.normalizer)
    f_synth = chip_features(segmenter, synth, segmenter.normalizer)
    f_ref = chip_features(segmenter, ref_chips, segmenter.normalizer)
    fd_synth = feature_frechet_distance(f_ref, f_synth)
    fd_real = feature_frechet_distance(f_ref, f_real)
    return {
        "reference": reference,
        "fd_synth_ref": fd_synth,
        "fd_real_train_ref": fd_real,
        "fd_ratio": fd_synth / fd_real,
        **memorisation_ratio(f_synth, f_real, f_ref),
    }


def noise_std(ckpt: Path, tile: Any, chip_size: int | None) -> float:
    """Mean per-pixel std over NOISE_DRAWS syntheses of one mask (normalised units)."""
    gen = load_chip_generator(ckpt)
    meta = gen.data
    synth = TileSynthesizer(
        gen,
        meta["mean"],
        meta["std"],
        int(meta["ignore_index"]),
        style="random",
        chip_size=chip_size,
        batch_size=16,
        channels_last=True,
    )
    requests = make_requests(
        [(tile.name, tile.pair.mask, tile.pair.image)], "unused", NOISE_DRAWS, seed=0
    )
    draws = np.stack([np.concatenate(list(synth.stream(r)), axis=1) for r in requests])
    return float(draws.std(axis=0).mean())


def stretch(image: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(C, H, W) raw RGB -> (H, W, 3) in [0, 1] with the given per-band limits."""
    return np.clip((image[:3] - lo) / np.maximum(hi - lo, 1e-6), 0, 1).transpose(1, 2, 0)


def tile_figure(dm: Any, runs: dict[str, Path], out: Path, rows: int = 3) -> Path:
    """Whole training tiles: mask | real | each generator's synthetic tile."""
    from synthsat.data.raster_io import read_raster

    tiles = dm.tiles["train"][:: max(1, len(dm.tiles["train"]) // rows)][:rows]
    cols = 2 + len(runs)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for i, tile in enumerate(tiles):
        real = np.asarray(tile.image[:3]).astype(np.float32)
        lo = np.percentile(real, 1, axis=(1, 2), keepdims=True)
        hi = np.percentile(real, 99, axis=(1, 2), keepdims=True)
        panels = [
            ("mask", colorize_mask(np.asarray(tile.mask).astype(np.int64), dm.num_classes)),
            ("real", stretch(real, lo, hi)),
        ]
        for label, folder in runs.items():
            synth = read_raster(folder / f"{tile.name}_s0.tif").astype(np.float32)
            panels.append((label, stretch(synth, lo, hi)))
        for ax, (title, img) in zip(axes[i], panels):
            ax.imshow(img, interpolation="nearest")
            ax.set_title(f"{tile.name}: {title}" if title == "mask" else title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gen", action="append", required=True, help="RUN_DIR[:LABEL]")
    parser.add_argument("--seg", type=Path, required=True, help="real-trained seg checkpoint")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tiles", type=int, default=None, help="training tiles per group")
    parser.add_argument("--chip-size", type=int, default=None, help="synthesis chip size")
    parser.add_argument("--max-chips", type=int, default=256)
    parser.add_argument(
        "--reference", choices=["val", "test"], default="val", help="real chips of gate c"
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=None,
        help="grid the chips are judged on (default: the --seg model's data.scale, the "
        "resolution the segmenter sees; synthetic tiles are resampled to it)",
    )
    args = parser.parse_args()
    torch.set_num_threads(int(__import__("os").environ.get("SYNTHSAT_THREADS", "1")))
    args.out.mkdir(parents=True, exist_ok=True)
    scale = args.scale if args.scale is not None else segmenter_scale(args.seg)
    print(f"chips judged at data.scale={scale:g}", flush=True)
    dm = datamodule(args.tiles, scale)
    meta = dm.metadata()
    segmenter = load_segmenter(args.seg, meta, torch.device("cpu"))
    names = [t.name for t in dm.tiles["train"]]
    side = chip_side([t.shape for t in dm.tiles["train"]], 256)
    results: dict[str, Any] = {}
    folders: dict[str, Path] = {}
    for spec in args.gen:
        path, _, label = spec.partition(":")
        ckpt = checkpoint(Path(path))
        label = label or Path(path).name
        gen = load_chip_generator(ckpt)
        folder = args.out / label
        synthesise(ckpt, folder, names, args.chip_size)
        folders[label] = folder
        metrics = synthetic_metrics(
            dm.tiles["train"],
            folder,
            meta,
            segmenter,
            chip_size=256,
            max_chips=args.max_chips,
            fid={"enabled": False},
        )
        entry = {k: v for k, v in metrics.items() if k not in ("details", "info")}
        entry["lambda_div"] = gen.lambda_div
        entry["discriminator"] = gen.task.hparams.get("discriminator", "patch")
        entry.update(domain_gate(dm, segmenter, folder, side, args.max_chips, args.reference))
        entry["noise_std"] = noise_std(ckpt, dm.tiles["train"][0], args.chip_size)
        entry["consistency_ratio"] = entry["consistency_miou"] / entry["real_miou"]
        entry["seam_excess"] = entry["seam_ratio"] / entry["seam_ratio_real"] - 1
        results[label] = entry
        print(label, json.dumps(entry, indent=1), flush=True)
    zero = [e["noise_std"] for e in results.values() if e["lambda_div"] == 0]
    for entry in results.values():
        entry["gates"] = {
            "a_seams": abs(entry["seam_excess"]) <= 0.10 and entry["acf_peak"] <= 0.05,
            "b_consistency": entry["consistency_ratio"] >= 0.85,
            "c_domain": entry["fd_ratio"] <= 2.0,
            "d_noise": entry["lambda_div"] > 0
            and entry["noise_std"] >= 0.2
            and all(entry["noise_std"] > z for z in zero),
        }
    for entry in results.values():
        entry["scale"] = scale
    (args.out / "gates.json").write_text(json.dumps(results, indent=2))
    lines = [
        "| generator | lambda_div | seam ratio (real) | acf peak (real) | consistency / real "
        f"mIoU | FD synth->{args.reference} / real->{args.reference} | noise std (8 draws) | "
        "memorisation ratio | gates a b c d |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, e in results.items():
        g = e["gates"]
        marks = " ".join("pass" if g[k] else "FAIL" for k in sorted(g))
        lines.append(
            f"| {label} | {e['lambda_div']:g} | {e['seam_ratio']:.3f} ({e['seam_ratio_real']:.3f})"
            f" | {e['acf_peak']:.3f} ({e['acf_peak_real']:.3f}) | {e['consistency_miou']:.3f} / "
            f"{e['real_miou']:.3f} = {e['consistency_ratio']:.2f} | {e['fd_synth_ref']:.1f} / "
            f"{e['fd_real_train_ref']:.1f} = {e['fd_ratio']:.2f} | {e['noise_std']:.3f} | "
            f"{e['memorisation_ratio']:.2f}{' FLAGGED' if e['memorisation_flag'] else ''} | "
            f"{marks} |"
        )
    (args.out / "gates.md").write_text("\n".join(lines) + "\n")
    tile_figure(dm, folders, args.out / "tiles.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
