"""Train the mask-conditional generator.

``python -m synthsat.train_generator data=toyworld generator=cpu trainer.max_steps=...``

Writes ``<run dir>/checkpoints/{last,best-stepNNNNNN}.ckpt``, sample grids under
``<run dir>/samples/`` (the ``samples`` callback) and ``metrics.json``;
``ckpt_path=...`` resumes with the step count and optimiser state.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from synthsat import config_dir
from synthsat.jobs.runtime import (
    build_trainer,
    check_step_budget,
    config_choice,
    finish_run,
    fit_record,
    prepare_run,
    resume_path,
    save_final_checkpoint,
)
from synthsat.jobs.user_errors import user_errors
from synthsat.tracking import run_info


def train(cfg: DictConfig) -> dict[str, Any]:
    """Build the data, task and trainer from ``cfg``, fit, and write ``metrics.json``.

    The patch size is the generator's (``generator.patch_size``; ``data.patch_size``
    follows it). After a completed fit, ``last.ckpt`` is (re)written so that it holds
    the final state.

    Returns:
        the run's essentials: steps, the best validation score and its checkpoint, the
        last checkpoint, the run directory (as in ``metrics.json``).
    """
    out = prepare_run(cfg)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    task = instantiate(cfg.generator, metadata=datamodule.metadata(), _convert_="all")
    lambda_div = float(cfg.generator.get("lambda_div", 0.0))
    run = run_info(cfg, "gen", {"lambda_div": lambda_div, "seed": cfg.get("seed")})
    trainer = build_trainer(cfg, run=run)
    start = time.perf_counter()
    # The EMA generator (averaged, never trained; see GeneratorTask.train) and the VGG of
    # the perceptual loss (frozen) stay in eval mode on purpose: Lightning's "Found N
    # module(s) in eval mode at the start of training" is always about them here.
    warnings.filterwarnings(
        "ignore",
        message=r"Found \d+ module\(s\) in eval mode at the start of training",
        category=UserWarning,
    )
    trainer.fit(task, datamodule=datamodule, ckpt_path=resume_path(cfg), weights_only=True)
    fit_time = time.perf_counter() - start
    checkpoint = trainer.checkpoint_callback
    last = save_final_checkpoint(trainer)
    check_step_budget(trainer)  # a max_time stop short of max_steps fails the job
    best = getattr(checkpoint, "best_model_path", "") or None
    score = getattr(checkpoint, "best_model_score", None)
    metrics = {
        "score": float(score) if score is not None else None,
        "monitor": getattr(checkpoint, "monitor", None),
        "data": config_choice("data"),
        "generator": config_choice("generator"),
        "lambda_div": lambda_div,
        "patch_size": int(task.hparams.patch_size),
        **fit_record(cfg, trainer, fit_time),
        "checkpoint": str(last.resolve()) if last is not None and last.exists() else None,
        "best_checkpoint": str(Path(best).resolve()) if best else None,
    }
    return finish_run(out, metrics)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train_generator")
@user_errors
def main(cfg: DictConfig) -> float | None:
    """Console entry point (``synthsat-train-generator``).

    Returns:
        the best monitored validation score (``val/score``, lower is better; None
        without a validation), the objective of a Hydra sweeper (e.g. optuna).
    """
    metrics = train(cfg)
    print(f"{metrics['steps']} generator steps -> {metrics['checkpoint']}")
    return metrics["score"]


if __name__ == "__main__":
    main()
