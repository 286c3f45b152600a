"""Train a segmentation model on real / synthetic / mixed imagery, test on real imagery.

``python -m synthsat.train_segmentation data=dubai mix.ratio=0.5 mix.source=DIR seed=1``
(``DIR``: the synthetic tile folder, or with ``mix.lambda_div=<lambda>`` a folder holding
tile folders, e.g. ``results/<experiment>/synthesis``: the one whose manifest records that
lambda is used, see :func:`synthsat.data.mixing.resolve_mix`).

Writes ``<run dir>/metrics.json`` (test scores and the run's essentials),
``checkpoints/`` and the resolved ``config.yaml``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from synthsat import config_dir
from synthsat.data.synthetic_tiles import describe_source
from synthsat.jobs.runtime import (
    build_trainer,
    check_step_budget,
    config_choice,
    finish_run,
    fit_record,
    prepare_run,
    resume_path,
    save_final_checkpoint,
    scores_record,
)
from synthsat.jobs.user_errors import user_errors
from synthsat.tracking import run_info, source_params


def segmentation_run(
    cfg: DictConfig, mix: dict[str, Any] | None, source: dict[str, Any] | None
) -> dict[str, Any]:
    """The job's W&B run (:func:`~synthsat.tracking.run_info`): ``seg r<ratio> λ<lambda>
    s<seed>``, the lambda being the synthetic source's (its manifest's; a control
    generator shows its name instead); the source is added to the run config as
    ``synthetic_source`` (generator, lambda_div, checkpoint) and ``lambda_div``."""
    params = {
        "ratio": float(mix["ratio"]) if mix else None,
        **source_params(source),
        "seed": cfg.get("seed"),
    }
    return run_info(cfg, "seg", params, synthetic_source=source, lambda_div=params["lambda_div"])


def scored_record(
    test_ckpt: str, best_path: str, final_step: int, curve: list[tuple[int, float]]
) -> dict[str, Any]:
    """Which weights the test scored, as data: ``scored`` (``best`` or ``last``), their
    ``scored_step`` and ``scored_val_miou``, and the run's ``val_curve`` ([step, val mIoU]
    after each validation).

    Args:
        test_ckpt: the job's ``test_ckpt`` (``best`` or ``last``).
        best_path: the best checkpoint's path ("" when none was written).
        final_step: the global step fit ended at.
        curve: (step, val mIoU) of every validation of the fit.
    """
    record: dict[str, Any] = {"val_curve": [[int(s), float(v)] for s, v in curve]}
    if test_ckpt == "best" and best_path and curve:
        top = max(v for _, v in curve)
        step, value = next((s, v) for s, v in curve if v == top)  # the checkpoint keeps the first
        return {**record, "scored": "best", "scored_step": step, "scored_val_miou": value}
    last = next((v for s, v in curve if s == final_step), None)
    return {**record, "scored": "last", "scored_step": final_step, "scored_val_miou": last}


def checkpoint_to_test(test_ckpt: str, best_path: str) -> str | None:
    """The checkpoint the test loads: the best one with ``test_ckpt=best`` when one was
    written, else None (the weights fit ended with, those of ``last.ckpt``).

    Args:
        test_ckpt: the job's ``test_ckpt`` (``best`` or ``last``).
        best_path: the best checkpoint's path ("" when none was written).
    """
    return best_path if test_ckpt == "best" and best_path else None


def recorded_checkpoint(tested: str | None, last: Path | None) -> str | None:
    """The ``checkpoint`` of ``metrics.json``: the absolute path of the tested checkpoint
    or, when the final weights were tested, of ``last.ckpt`` (None when it was not written).

    Args:
        tested: what :func:`checkpoint_to_test` chose.
        last: the final checkpoint :func:`~synthsat.jobs.runtime.save_final_checkpoint` wrote.
    """
    ckpt = tested if tested is not None else (str(last) if last is not None else None)
    return str(Path(ckpt).resolve()) if ckpt else None


def summary(metrics: dict[str, Any]) -> str:
    """The line the job prints: test mIoU, per-class IoU, accuracy, steps, fit time and
    where ``metrics.json`` is."""
    iou = ", ".join(
        f"{k} {v:.3f}" if v is not None else f"{k} n/a" for k, v in metrics["iou"].items()
    )
    return (
        f"test mIoU {metrics['miou']:.4f} (per class: {iou}); pixel accuracy "
        f"{metrics['pixel_accuracy']:.4f}; {metrics['steps']} steps in "
        f"{metrics['fit_time_s']:.0f} s -> {metrics['run_dir']}/metrics.json"
    )


def objective(metrics: dict[str, Any]) -> float:
    """A sweeper's objective: the validation mIoU of the tested checkpoint
    (``scored_val_miou``; nan when no validation ran), never a test score."""
    value = metrics.get("scored_val_miou")
    return float("nan") if value is None else float(value)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test on the real test tiles and write ``metrics.json``; returns its content."""
    out = prepare_run(cfg)
    mix = OmegaConf.to_container(cfg.mix, resolve=True) if cfg.get("mix") else None
    datamodule = instantiate(cfg.data, mix=mix)
    mix = datamodule.mix  # mix.source: the tile folder that mix.lambda_div picked
    datamodule.prepare_data()
    datamodule.setup("fit")
    task = instantiate(cfg.segmentation, metadata=datamodule.metadata(), _convert_="all")
    # which generator made the synthetic tiles, as their manifest records it
    source = describe_source(mix["source"]) if mix and mix.get("source") else None
    trainer = build_trainer(cfg, run=segmentation_run(cfg, mix, source))
    start = time.perf_counter()
    trainer.fit(task, datamodule=datamodule, ckpt_path=resume_path(cfg), weights_only=True)
    fit_time = time.perf_counter() - start
    last = save_final_checkpoint(trainer)  # the final weights, which test_ckpt=last scores
    check_step_budget(trainer)  # a max_time stop short of max_steps fails the job
    from synthsat.callbacks import ValidationCurve  # lightning: loaded when the job runs

    # the curve as fit left it (testing a checkpoint restores the callbacks' saved state)
    curve = next((c for c in trainer.callbacks if isinstance(c, ValidationCurve)), None)
    points = list(curve.curve) if curve is not None else []
    best = getattr(trainer.checkpoint_callback, "best_model_path", "")
    ckpt = checkpoint_to_test(str(cfg.get("test_ckpt", "best")), best or "")
    trainer.test(task, datamodule=datamodule, ckpt_path=ckpt, verbose=False, weights_only=True)
    metrics = {
        **scores_record("test", task.test_results, datamodule),
        "segmentation": config_choice("segmentation"),
        "encoder": cfg.segmentation.get("backbone"),
        "loss": cfg.segmentation.get("loss"),
        "mix": mix,
        "synthetic_source": source,
        **fit_record(cfg, trainer, fit_time),
        "wall_time_s": round(time.perf_counter() - start, 1),
        "checkpoint": recorded_checkpoint(ckpt, last),
        **scored_record(
            str(cfg.get("test_ckpt", "best")), best or "", int(trainer.global_step), points
        ),
    }
    return finish_run(out, metrics)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train_segmentation")
@user_errors
def main(cfg: DictConfig) -> float:
    """Console entry point ``synthsat-train-segmentation``.

    Returns:
        the validation mIoU of the tested checkpoint (``scored_val_miou``; nan when no
        validation ran): the objective of a Hydra sweeper (e.g. optuna), so that a search
        chooses on validation data and never on the test tiles.
    """
    metrics = train(cfg)
    print(summary(metrics))
    return objective(metrics)


if __name__ == "__main__":
    main()
