"""Synthesise georeferenced imagery for mask tiles: ``python -m synthsat.synthesize ckpt=...``.

``method=generator`` (default) runs a trained generator checkpoint; ``method=classtexture``
fills each mask region with real texture of its class (no training, no checkpoint; see
:mod:`synthsat.synthesis.classtexture`). Both write the same files and manifest
(:mod:`synthsat.data.synthetic_tiles`); :func:`run` returns what it did.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from synthsat import config_dir, schemas
from synthsat.data import DataError
from synthsat.data.synthetic_tiles import describe_source, output_name
from synthsat.errors import ConfigError
from synthsat.jobs.runtime import build_trainer, prepare_run
from synthsat.jobs.user_errors import user_errors
from synthsat.tracking import build_loggers, log_images, run_info, source_params

if TYPE_CHECKING:  # torch and Lightning load when the job runs, after Hydra's checks
    from synthsat.synthesis import SynthesisWriter, Synthesizer, TileRequest

log = logging.getLogger(__name__)

#: The values of ``method``.
METHODS = schemas.METHODS  # one list: the schema checks it when the config is composed


def run(cfg: DictConfig) -> dict[str, Any]:
    """Synthesise ``cfg.samples`` images for every mask of ``cfg.splits`` into ``cfg.out``.

    Returns:
        ``tiles_written`` and ``tiles_skipped`` (outputs that were already there) by
        this process, ``out_dir`` (the tiles and ``manifest.json``) and ``seconds``
        (wall time of the run).
    """
    start = time.perf_counter()
    expand_out(cfg)
    writer = _make_tiles(cfg)
    out = Path(cfg.out)
    print(
        f"synthesis: {len(writer.written)} tile(s) written, {len(writer.skipped)} already "
        f"there; outputs and manifest.json in {out}"
    )
    result = {
        "tiles_written": len(writer.written),
        "tiles_skipped": len(writer.skipped),
        "out_dir": str(out),
        "seconds": time.perf_counter() - start,
    }
    outputs = [out / output_name(str(r["tile"]), int(r["sample"])) for r in writer.written]
    track_synthesis(cfg, result, outputs)
    return result


def expand_out(cfg: DictConfig) -> None:
    """Set ``cfg.out`` to its path with ``~`` expanded, once, before anything uses it: the
    output checks, the tiles, the manifest and the saved ``config.yaml`` then name one
    folder (``out="~/x"`` was checked as ``$HOME/x`` and written to a literal ``./~/x``)."""
    out = cfg.get("out")
    if out not in (None, ""):
        OmegaConf.update(cfg, "out", str(Path(str(out)).expanduser()), merge=False)


def track_synthesis(cfg: DictConfig, result: dict[str, Any], outputs: list[Path]) -> None:
    """Log a synthesis run to the experiment loggers (``cfg.logger``; none: nothing).

    The run is ``synth λ<lambda>`` (the manifest's lambda_div; a control shows its
    generator's name), with the source (generator, lambda_div, checkpoint) in its config.
    Logged: ``synthesis/tiles``, ``synthesis/skipped``, ``synthesis/mpx`` (pixels of the
    tiles written, in millions), ``synthesis/seconds``, ``synthesis/mpx_per_s`` and, for
    W&B, downsampled RGB previews of the first ``cfg.previews`` tiles written (key
    ``synthesis/previews``).

    Args:
        cfg: the job's config.
        result: what :func:`run` returns.
        outputs: the tiles written, in the order they were written.
    """
    if not cfg.get("logger"):
        return
    source = describe_source(result["out_dir"])
    params = {**source_params(source), "seed": cfg.get("seed")}
    run = run_info(cfg, "synth", params, synthetic_source=source, lambda_div=source["lambda_div"])
    loggers = build_loggers(cfg, run)
    if not loggers:
        return
    import rasterio

    from synthsat.figures import tile_preview

    pixels = 0
    for path in outputs:
        with rasterio.open(path) as src:
            pixels += src.width * src.height
    seconds = float(result["seconds"])
    numbers = {
        "synthesis/tiles": float(result["tiles_written"]),
        "synthesis/skipped": float(result["tiles_skipped"]),
        "synthesis/mpx": pixels / 1e6,
        "synthesis/seconds": seconds,
        "synthesis/mpx_per_s": pixels / 1e6 / max(seconds, 1e-9),
    }
    rgb_bands = list(OmegaConf.select(cfg, "data.rgb_bands", default=None) or [0, 1, 2])
    previews = [tile_preview(p, rgb_bands) for p in outputs[: int(cfg.get("previews", 4))]]
    for logger in loggers:
        logger.log_metrics(numbers, step=0)
        captions = [p.name for p in outputs[: len(previews)]]
        log_images(logger, "synthesis/previews", previews, caption=captions, step=0)
        logger.finalize("success")


def _make_tiles(cfg: DictConfig) -> SynthesisWriter:
    """Check ``cfg``, build the synthesiser of ``cfg.method`` and make the tiles."""
    from synthsat.synthesis import TileSynthesizer, load_chip_generator

    method = str(cfg.get("method", "generator"))
    if method not in METHODS:
        raise ConfigError(f"method={method}: must be one of {list(METHODS)}")
    if method == "generator" and cfg.get("ckpt") is None:
        raise ConfigError(
            "ckpt=null: method=generator needs a GeneratorTask checkpoint "
            "(ckpt=outputs/train_generator/<run>/checkpoints/last.ckpt), or use "
            "method=classtexture / classcolour (controls without a checkpoint)"
        )
    if method != "generator" and cfg.get("scale") not in (None, 1, 1.0):
        raise ConfigError(
            f"scale={cfg.scale}: synthesis at a scale is for method=generator (the scale "
            f"its checkpoint was trained at); method={method} paints the masks' own grid"
        )
    texture = _texture_settings(cfg) if method == "classtexture" else None
    prepare_run(cfg)
    if texture is not None:
        return _run_classtexture(cfg, texture)
    if method == "classcolour":
        return _run_classcolour(cfg)
    ckpt = Path(cfg.ckpt).expanduser().resolve()
    generator = load_chip_generator(ckpt)
    meta = generator.data
    datamodule = instantiate(cfg.data)
    if list(datamodule.classes) != list(meta["classes"]) or datamodule.bands != meta["bands"]:
        raise DataError(
            f"{ckpt}: the generator was trained on {len(meta['classes'])} classes "
            f"{meta['classes']} and {meta['bands']} band(s), but data "
            f"{datamodule.source.describe()} has {datamodule.num_classes} classes "
            f"{datamodule.classes} and {datamodule.bands} band(s)"
        )
    datamodule.source.prepare()
    requests = _requests(cfg, datamodule)
    chip = int(cfg.chip_size or generator.chip_size)
    scale = synthesis_scale(cfg, meta)
    synthesizer = TileSynthesizer(
        generator,
        meta["mean"],
        meta["std"],
        int(meta["ignore_index"]),
        style=cfg.style,
        style_scope=cfg.style_scope,
        overlap=None if cfg.overlap is None else int(cfg.overlap),
        batch_size=int(cfg.batch_size),
        chip_size=chip,
        label_map=datamodule.source.label_map,
        colour_map=datamodule.source.colour_map,
        dtype=cfg.dtype,
        block_size=int(cfg.block_size),
        compress=str(cfg.compress),
        channels_last=bool(cfg.channels_last),
        autocast=bool(cfg.autocast),
        provenance={"checkpoint": str(ckpt), "lambda_div": generator.lambda_div},
        band_names=datamodule.band_names,
        rgb_bands=datamodule.rgb_bands,
        cog=bool(cfg.get("cog", False)),
        scale=scale,
    )
    return _synthesise(cfg, synthesizer, requests)


def synthesis_scale(cfg: DictConfig, meta: dict[str, Any]) -> float:
    """The grid a generator synthesises on: ``cfg.scale``, or with ``scale=null`` the
    ``data.scale`` its checkpoint was trained at (1 for checkpoints that record none).

    Raises:
        ConfigError: a scale outside (0, 1].
    """
    value = cfg.get("scale")
    scale = float(meta.get("scale", 1.0) if value is None else value)
    if not 0 < scale <= 1:
        raise ConfigError(f"scale={scale}: must be in (0, 1] (a fraction of the masks' grid)")
    if value is not None and scale != float(meta.get("scale", 1.0)):
        log.warning(
            "scale=%g overrides the data.scale=%g the generator was trained at",
            scale,
            float(meta.get("scale", 1.0)),
        )
    return scale


def _requests(cfg: DictConfig, datamodule: Any) -> list[TileRequest]:
    """The outputs to make: ``cfg.samples`` per mask of ``cfg.splits`` (or ``cfg.tiles``)."""
    from synthsat.synthesis import make_requests

    pairs = [p for split in cfg.splits for p in datamodule.source.pairs(split)]
    if cfg.get("tiles"):
        wanted = [str(t) for t in cfg.tiles]
        unknown = sorted(set(wanted) - {p.name for p in pairs})
        if unknown:
            raise DataError(
                f"tiles {unknown} are not in splits {list(cfg.splits)} of "
                f"{datamodule.source.describe()}"
            )
        pairs = [p for p in pairs if p.name in set(wanted)]
    return make_requests(
        [(p.name, p.mask, p.image) for p in pairs], Path(cfg.out), int(cfg.samples), int(cfg.seed)
    )


def _texture_settings(cfg: DictConfig) -> dict[str, Any]:
    """The checked ``classtexture`` settings (recorded with every output).

    Raises:
        ConfigError: naming the key, its value and the rule.
    """
    opts = cfg.classtexture
    for key in ("patch_size", "per_class"):
        value = opts[key]
        try:
            good = not isinstance(value, bool) and int(value) == float(value) and int(value) >= 1
        except (TypeError, ValueError):
            good = False
        if not good:
            raise ConfigError(f"classtexture.{key}={value}: must be a whole number >= 1")
    for key in ("purity", "fallback_purity"):
        value = opts[key]
        try:
            good = 0 < float(value) <= 1
        except (TypeError, ValueError):
            good = False
        if not good:
            raise ConfigError(f"classtexture.{key}={value}: must be a number in (0, 1]")
    size, per_class = int(opts.patch_size), int(opts.per_class)
    purity, fallback = float(opts.purity), float(opts.fallback_purity)
    splits = [str(s) for s in opts.texture_splits]
    if not splits:
        raise ConfigError("classtexture.texture_splits=[]: name at least one split")
    return {
        "patch_size": size,
        "purity": purity,
        "fallback_purity": fallback,
        "per_class": per_class,
        "texture_splits": splits,
    }


def _run_classtexture(cfg: DictConfig, texture: dict[str, Any]) -> SynthesisWriter:
    """``method=classtexture``: a texture bank from the real tiles of ``texture_splits``."""
    from synthsat.synthesis import build_bank

    datamodule, tiles = _real_tiles(cfg, texture["texture_splits"], "classtexture.texture_splits")
    bank = build_bank(
        tiles,
        datamodule.num_classes,
        datamodule.ignore_index,
        patch_size=texture["patch_size"],
        purity=texture["purity"],
        fallback_purity=texture["fallback_purity"],
        per_class=texture["per_class"],
        seed=int(cfg.seed),
    )
    log.info("class textures: %s", bank.sources)
    return _run_control(cfg, datamodule, bank, {"texture": texture})


def _run_classcolour(cfg: DictConfig) -> SynthesisWriter:
    """``method=classcolour``: each class's mean colour and per-class pixel noise,
    measured on the real tiles of ``classcolour.splits``."""
    from synthsat.synthesis.classcolour import ClassColours

    splits = [str(s) for s in cfg.classcolour.splits]
    if not splits:
        raise ConfigError("classcolour.splits=[]: name at least one split")
    datamodule, tiles = _real_tiles(cfg, splits, "classcolour.splits")
    colours = ClassColours.measure(tiles, datamodule.num_classes, datamodule.ignore_index)
    stats = {
        name: {"mean": colours.mean[k].round(3).tolist(), "std": colours.std[k].round(3).tolist()}
        for k, name in enumerate(datamodule.classes)
    }
    log.info("class colours (raw values): %s", stats)
    return _run_control(cfg, datamodule, colours, {"colour": {"splits": splits}})


def _real_tiles(cfg: DictConfig, splits: list[str], key: str) -> tuple[Any, list[Any]]:
    """The data module and the (image, mask) arrays of its tiles of ``splits`` (``key``:
    the setting that names them, for the error).

    Raises:
        ConfigError: a split the data does not have.
        DataError: no tiles in those splits.
    """
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    unknown = sorted(set(splits) - set(datamodule.tiles))
    if unknown:
        raise ConfigError(f"{key}={splits}: must name splits of {sorted(datamodule.tiles)}")
    from synthsat.data.raster_io import refuse_placeholder

    for s in splits:
        for tile in datamodule.tiles[s]:
            refuse_placeholder(tile.pair.image, f"method={cfg.method} ({key})")
    tiles = [(t.image, t.mask) for s in splits for t in datamodule.tiles[s]]
    if not tiles:
        raise DataError(f"{datamodule.source.describe()}: no tiles in splits {splits}")
    return datamodule, tiles


def _run_control(
    cfg: DictConfig, datamodule: Any, painter: Any, provenance: dict[str, Any]
) -> SynthesisWriter:
    """Synthesise with a control (a texture bank or class colours) into ``cfg.out``."""
    from synthsat.synthesis import ClassTextureSynthesizer

    synthesizer = ClassTextureSynthesizer(
        painter,
        datamodule.num_classes,
        datamodule.ignore_index,
        label_map=datamodule.source.label_map,
        colour_map=datamodule.source.colour_map,
        dtype=cfg.dtype,
        block_size=int(cfg.block_size),
        compress=str(cfg.compress),
        provenance=provenance,
        band_names=datamodule.band_names,
        rgb_bands=datamodule.rgb_bands,
        cog=bool(cfg.get("cog", False)),
    )
    return _synthesise(cfg, synthesizer, _requests(cfg, datamodule))


def _synthesise(
    cfg: DictConfig, synthesizer: Synthesizer, requests: list[TileRequest]
) -> SynthesisWriter:
    """Run the requests through the Lightning synthesis path into ``cfg.out``."""
    from synthsat.synthesis import run_synthesis

    trainer = build_trainer(cfg, logger=False, enable_checkpointing=False)
    return run_synthesis(synthesizer, requests, Path(cfg.out), trainer)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="synthesize")
@user_errors
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run(cfg)


if __name__ == "__main__":
    main()
