"""Synthesise georeferenced imagery for mask tiles: ``python -m synthsat.synthesize ckpt=...``."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from synthsat import config_dir
from synthsat.data import DataError
from synthsat.runtime import prepare_run, user_errors
from synthsat.synthesis import (
    SynthesisWriter,
    TileSynthesizer,
    load_chip_generator,
    make_requests,
    run_synthesis,
)


def run(cfg: DictConfig) -> SynthesisWriter:
    """Synthesise ``cfg.samples`` images for every mask of ``cfg.splits`` into ``cfg.out``."""
    prepare_run(cfg)
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
    out = Path(cfg.out)
    requests = make_requests(
        [(p.name, p.mask, p.image) for p in pairs], out, int(cfg.samples), int(cfg.seed)
    )
    chip = int(cfg.chip_size or generator.chip_size)
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
    )
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    writer = run_synthesis(synthesizer, requests, out, trainer)
    print(
        f"synthesis: {len(writer.written)} tile(s) written, {len(writer.skipped)} already "
        f"there; outputs and manifest.json in {out}"
    )
    return writer


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="synthesize")
@user_errors
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run(cfg)


if __name__ == "__main__":
    main()
