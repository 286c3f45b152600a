"""Shared plumbing of the Hydra entry points: seeding, run directory, loggers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def prepare_run(cfg: DictConfig) -> Path:
    """Seed everything, create the run directory and save the resolved config there.

    Returns:
        the run directory (``cfg.paths.output_dir``).
    """
    if cfg.get("num_threads"):
        # One intra-op thread by default: on a small shared CPU, OpenMP threads competing
        # with data-loader workers and other jobs made steps up to 10x slower.
        torch.set_num_threads(int(cfg.num_threads))
    if cfg.get("seed") is not None:
        L.seed_everything(int(cfg.seed), workers=True)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".config.yaml.part"
    tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    os.replace(tmp, out / "config.yaml")
    return out


def build_loggers(cfg: DictConfig) -> list[Any]:
    """Instantiate every logger under ``cfg.logger`` (an empty group gives none)."""
    loggers = []
    for conf in (cfg.get("logger") or {}).values():
        if isinstance(conf, DictConfig) and "_target_" in conf:
            loggers.append(instantiate(conf))
    return loggers
