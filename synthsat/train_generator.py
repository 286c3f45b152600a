"""Train the mask-conditional generator.

``python -m synthsat.train_generator data=toyworld generator=cpu trainer.max_steps=...``

Writes ``<run dir>/checkpoints/{last,best-stepNNNNNN}.ckpt`` and sample grids under
``<run dir>/samples/``; ``ckpt_path=...`` resumes with the step count and optimiser state.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from synthsat import config_dir
from synthsat.runtime import build_loggers, prepare_run, user_errors
from synthsat.tasks.checkpoints import RandomStateCheckpoint


def train(cfg: DictConfig) -> Path:
    """Build the data, task and trainer from ``cfg`` and fit.

    The datamodule's patch size is set to the generator preset's ``patch_size``. After a
    completed fit, ``last.ckpt`` is (re)written so that it holds the final state.

    Returns:
        the run directory.
    """
    out = prepare_run(cfg)
    datamodule = instantiate(cfg.data, patch_size=cfg.generator.patch_size)
    datamodule.prepare_data()
    datamodule.setup("fit")
    task = instantiate(
        cfg.generator, data=datamodule.metadata(), patch_size=datamodule.patch_size, _convert_="all"
    )
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    callbacks.append(RandomStateCheckpoint())  # resumed runs continue the same draws
    loggers = build_loggers(cfg)
    trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)
    trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    checkpoint = trainer.checkpoint_callback
    if (
        isinstance(checkpoint, ModelCheckpoint)
        and checkpoint.dirpath
        and checkpoint.save_last
        and not trainer.interrupted
    ):
        trainer.save_checkpoint(Path(checkpoint.dirpath) / "last.ckpt")
    return out


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train_generator")
@user_errors
def main(cfg: DictConfig) -> None:
    """Console entry point (``synthsat-train-generator``)."""
    train(cfg)


if __name__ == "__main__":
    main()
