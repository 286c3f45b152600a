"""New land-cover masks like a data set's training masks: ``python -m synthsat.layouts``.

``method=recombine`` composes them from the training masks' own pieces
(:mod:`synthsat.layouts.recombine`); ``method=learned`` samples a small VAE of masks
trained on them (:mod:`synthsat.layouts.learned`). Both write a data folder
(:mod:`synthsat.layouts.writer`) that ``synthesize`` reads with ``data=rasters
data.source.root=<out>`` (the command is printed and recorded), and the layout metrics
of what they wrote against the training masks (:mod:`synthsat.metrics.layout`).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from synthsat import config_dir
from synthsat.atomic import write_text
from synthsat.errors import ConfigError
from synthsat.jobs.user_errors import user_errors

log = logging.getLogger(__name__)

#: The values of ``method``.
METHODS = ("recombine", "learned")
#: The file of the layout metrics in ``out``.
METRICS = "layout_metrics.json"


def layout_shape(size: Any, masks: list[Any]) -> tuple[int, int]:
    """The (H, W) of the layouts: ``size`` (N or [H, W]) or, null, the smallest training
    mask's height and width.

    Raises:
        ConfigError: a size that is not a whole number >= 8 or a pair of them.
    """
    if size is None:
        return min(m.shape[0] for m in masks), min(m.shape[1] for m in masks)
    sides = list(size) if OmegaConf.is_list(size) or isinstance(size, list | tuple) else [size]
    if len(sides) == 1:
        sides = sides * 2
    try:
        good = len(sides) == 2 and all(
            not isinstance(s, bool) and int(s) == float(s) and int(s) >= 8 for s in sides
        )
    except (TypeError, ValueError):
        good = False
    if not good:
        raise ConfigError(f"size={size}: must be null, a whole number >= 8 or [H, W] of them")
    return int(sides[0]), int(sides[1])


def render_overrides(data: DictConfig, out: Path) -> list[str]:
    """The Hydra overrides (unquoted) that read the layouts folder ``out`` as the data of a
    job, with the classes, bands and ignore index of ``data`` (the layouts' data)."""
    classes = ",".join(f"'{c}'" for c in data.classes)
    overrides = [
        "data=rasters",
        f"data.source.root={out}",
        f"data.classes=[{classes}]",
        f"data.bands={int(data.bands)}",
        f"data.ignore_index={data.ignore_index}",
    ]
    if data.get("band_names"):
        overrides.append(f"data.band_names=[{','.join(str(b) for b in data.band_names)}]")
    overrides.append(f"data.rgb_bands=[{','.join(str(b) for b in data.rgb_bands)}]")
    return overrides


#: How :func:`synthesize_command` quotes an override for a shell, by key.
_QUOTES = {"data.classes": '"', "data.band_names": "'", "data.rgb_bands": "'"}


def synthesize_command(cfg: DictConfig, out: Path) -> str:
    """The ``synthesize`` command that renders the layouts in ``out`` (its data overrides)."""
    parts = ["python -m synthsat.synthesize"]
    for override in render_overrides(cfg.data, out):
        quote = _QUOTES.get(override.split("=", 1)[0], "")
        parts.append(f"{quote}{override}{quote}")
    # the folder's images are placeholders: a style drawn at random, never encoded
    return " ".join([*parts, "style=random", "ckpt=<generator checkpoint>", "out=<synthetic dir>"])


def run(cfg: DictConfig) -> dict[str, Any]:
    """Make ``cfg.n`` layouts with ``cfg.method`` into ``cfg.out``; returns ``out_dir``,
    ``layouts`` (their count), ``metrics`` (the metrics file or None) and ``seconds``."""
    from synthsat.jobs.runtime import prepare_run
    from synthsat.layouts.training import read_training_masks, road_classes
    from synthsat.layouts.writer import check_out, write_layouts

    start = time.perf_counter()
    method = str(cfg.method)
    if method not in METHODS:
        raise ConfigError(f"method={method}: must be one of {list(METHODS)}")
    n = int(cfg.n)
    if n < 1:
        raise ConfigError(f"n={n}: must be a whole number >= 1")
    out = Path(str(cfg.out)).expanduser()
    OmegaConf.update(cfg, "out", str(out), merge=False)
    prepare_run(cfg)  # settings checked; out refused inside (or holding) the data folder
    check_out(out)
    source = instantiate(cfg.data.source)
    ignore = cfg.data.ignore_index
    training = read_training_masks(
        source, [str(s) for s in cfg.splits], list(cfg.data.classes), ignore
    )
    shape = layout_shape(cfg.get("size"), training.masks)
    settings = OmegaConf.to_container(cfg[method], resolve=True)
    assert isinstance(settings, dict)
    roads = settings.get("road_classes")
    roads = road_classes(training.classes) if roads is None else tuple(int(c) for c in roads)
    settings["road_classes"] = list(roads)
    names = [f"{cfg.prefix}_{i:05d}" for i in range(n)]
    if method == "recombine":
        layouts, infos = _recombine(cfg, training, settings, shape, n)
    else:
        from synthsat.layouts.learned import learned_layouts

        layouts, infos = learned_layouts(training, settings, shape, n, int(cfg.seed))
    record = {
        "method": method,
        "seed": int(cfg.seed),
        "data": source.describe(),
        "splits": [str(s) for s in cfg.splits],
        "training_tiles": training.names,
        "classes": training.classes,
        "ignore_index": ignore,
        "shape": list(shape),
        "settings": settings,
        "synthesize": synthesize_command(cfg, out),
    }
    extent = [p.mask for p in source.all_pairs()]
    write_layouts(out, names, layouts, training, record, infos, extent)
    metrics_path = None
    if cfg.metrics.enabled:
        from synthsat.metrics.layout import compare_layouts

        scores = compare_layouts(
            layouts,
            training.masks,
            training.classes,
            ignore,
            roads,
            nearest=bool(cfg.metrics.nearest),
            copy_threshold=float(cfg.metrics.copy_threshold),
            downsample=int(cfg.metrics.downsample),
        )
        metrics_path = write_text(out / METRICS, json.dumps(scores, indent=2) + "\n")
        near = scores.get("nearest", {})
        print(
            f"layouts: class-share TV {scores['share_tv']:.3f}, adjacency TV "
            f"{scores['adjacency_tv']:.3f}"
            + (f", {len(near['copied'])} copied layout(s)" if near else "")
        )
    print(f"layouts: {n} {method} layout(s) in {out}/masks; render them with:")
    print(f"  {record['synthesize']}")
    return {
        "out_dir": str(out),
        "layouts": n,
        "metrics": None if metrics_path is None else str(metrics_path),
        "seconds": time.perf_counter() - start,
    }


def _recombine(
    cfg: DictConfig, training: Any, settings: dict[str, Any], shape: tuple[int, int], n: int
) -> tuple[list[Any], list[dict[str, Any]]]:
    """``method=recombine``: ``n`` layouts of ``shape`` (ConfigError for bad settings)."""
    from synthsat.layouts.recombine import Recombiner, RecombineSettings

    try:
        recombine = RecombineSettings(
            **{**settings, "road_classes": tuple(settings["road_classes"])}
        )
    except TypeError as err:  # an unknown key
        raise ConfigError(f"recombine: {err}") from err
    try:
        recombine.check()
    except ValueError as err:
        raise ConfigError(str(err)) from err
    maker = Recombiner(training.masks, training.num_classes, training.ignore_index, recombine)
    made = []
    for i in range(n):
        try:
            made.append(maker.layout(int(cfg.seed), i, shape))
        except ValueError as err:
            raise ConfigError(f"size={list(shape)}: {err}") from err
    return [m for m, _ in made], [i for _, i in made]


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="layouts")
@user_errors
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run(cfg)
