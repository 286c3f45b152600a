"""Fidelity and diversity metrics of synthetic imagery:
``python -m synthsat.evaluate_synthetic data=NAME synthetic=DIR [seg_ckpt=CKPT]``.

Compares the synthetic tiles in ``synthetic`` with the real tiles of ``split`` whose
masks they were generated from and writes ``metrics.json`` (atomically) to the run
directory; see :func:`synthsat.metrics.synthetic.synthetic_metrics`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from synthsat import config_dir
from synthsat.data.errors import DataError
from synthsat.data.synthetic_tiles import describe_source
from synthsat.jobs.runtime import check_checkpoint_data, prepare_run, resolve_device
from synthsat.jobs.user_errors import user_errors
from synthsat.tracking import build_loggers, run_info, source_params

if TYPE_CHECKING:  # torch loads when the job runs, after Hydra's checks
    import torch

    from synthsat.metrics.synthetic import Segmenter


def load_segmenter(path: str | Path, metadata: dict[str, Any], device: torch.device) -> Segmenter:
    """The real-trained segmentation model of checkpoint ``path``, checked against the data."""
    from synthsat.metrics.synthetic import Segmenter
    from synthsat.tasks.checkpoints import load_task

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: segmentation checkpoint (seg_ckpt) does not exist")
    task = load_task(path, "segmentation", "evaluate_synthetic", device, key="seg_ckpt")
    trained = task.hparams.get("metadata", task.hparams.get("data")) or {}
    check_checkpoint_data(f"seg_ckpt={path}", trained, metadata, "segmentation model")
    return Segmenter.from_task(task.to(device))


def run(cfg: DictConfig) -> dict[str, Any]:
    """Compute the metrics of ``cfg`` and write ``metrics.json`` to the run directory."""
    from synthsat.metrics.segmentation import write_metrics
    from synthsat.metrics.synthetic import synthetic_metrics

    out = prepare_run(cfg)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    if cfg.split not in datamodule.tiles:
        raise ValueError(f"split must be one of {sorted(datamodule.tiles)}, got '{cfg.split}'")
    metadata = datamodule.metadata()
    device = resolve_device(cfg.device)
    segmenter = load_segmenter(cfg.seg_ckpt, metadata, device) if cfg.seg_ckpt else None
    metrics = synthetic_metrics(
        datamodule.tiles[cfg.split],
        cfg.synthetic,
        metadata,
        segmenter,
        chip_size=cfg.chip_size,
        max_chips=cfg.max_chips,
        max_pixels=cfg.max_pixels,
        batch_size=cfg.batch_size,
        fid=OmegaConf.to_container(cfg.fid, resolve=True),
        seed=cfg.seed,
        device=device,
    )
    metrics["info"].update(
        {"split": cfg.split, "synthetic": str(cfg.synthetic), "seg_ckpt": cfg.seg_ckpt}
    )
    path = write_metrics(out / "metrics.json", metrics)
    headline = {k: v for k, v in metrics.items() if k not in ("details", "info")}
    numbers = {f"synthetic/{k}": float(v) for k, v in headline.items() if v is not None}
    source = describe_source(cfg.synthetic)
    params = source_params(source)
    run = run_info(
        cfg, "synmetrics", params, synthetic_source=source, lambda_div=params["lambda_div"]
    )
    for logger in build_loggers(cfg, run):
        logger.log_hyperparams(
            {"synthetic": str(cfg.synthetic), "split": cfg.split, "seg_ckpt": str(cfg.seg_ckpt)}
        )
        logger.log_metrics(numbers, step=0)
        logger.finalize("success")
    print(json.dumps(headline, indent=2))
    print(f"metrics written to {path}")
    return metrics


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="evaluate_synthetic")
@user_errors
def main(cfg: DictConfig) -> None:
    """Entry point of ``synthsat-evaluate-synthetic``."""
    run(cfg)


if __name__ == "__main__":
    main()
