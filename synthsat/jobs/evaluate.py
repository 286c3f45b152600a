"""Score a segmentation checkpoint on real imagery.

``python -m synthsat.evaluate ckpt=<run>/checkpoints/last.ckpt data=dubai``

Writes ``<run dir>/metrics.json`` (mIoU over the scored classes, per-class IoU, pixel
accuracy, confusion matrix). The checkpoint's band normalisation is applied to the data.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from synthsat import config_dir
from synthsat.errors import ConfigError
from synthsat.jobs.runtime import (
    check_checkpoint_data,
    finish_run,
    prepare_run,
    resolve_device,
    scores_record,
)
from synthsat.jobs.user_errors import user_errors


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Score ``cfg.ckpt`` on ``cfg.split`` of ``cfg.data`` and write ``metrics.json``."""
    from synthsat.metrics.segmentation import evaluate_model
    from synthsat.tasks.checkpoints import load_task

    out = prepare_run(cfg)
    ckpt = Path(str(cfg.ckpt)).expanduser()
    if cfg.split not in ("val", "test"):
        raise ConfigError(f"split={cfg.split}: must be 'val' or 'test'")
    device = resolve_device(cfg.get("device", "auto"))
    task = load_task(ckpt, "segmentation", "evaluate", map_location=device)
    meta = task.hparams.metadata
    # Checked on the config, before the datamodule is built with the checkpoint's band
    # statistics (which it refuses, less clearly, when the band counts differ).
    check_checkpoint_data(f"ckpt={ckpt}", meta, cfg.data)
    datamodule = instantiate(cfg.data, mean=meta["mean"], std=meta["std"])
    datamodule.setup("test")
    loader = datamodule.test_dataloader() if cfg.split == "test" else datamodule.val_dataloader()
    start = time.perf_counter()
    result = evaluate_model(
        task,
        loader,
        datamodule.num_classes,
        datamodule.scored_classes,
        datamodule.ignore_index,
        datamodule.classes,
        device=device,
    )
    metrics = {
        **scores_record(cfg.split, result, datamodule),
        "checkpoint": str(ckpt.resolve()),
        "wall_time_s": round(time.perf_counter() - start, 1),
    }
    return finish_run(out, metrics)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="evaluate")
@user_errors
def main(cfg: DictConfig) -> float:
    """Console entry point ``synthsat-evaluate``.

    Returns:
        the mIoU (the objective of a Hydra sweeper, e.g. optuna).
    """
    metrics = evaluate(cfg)
    print(
        f"{metrics['split']} mIoU {metrics['miou']:.4f}, pixel accuracy "
        f"{metrics['pixel_accuracy']:.4f} -> {metrics['run_dir']}/metrics.json"
    )
    return float(metrics["miou"])


if __name__ == "__main__":
    main()
