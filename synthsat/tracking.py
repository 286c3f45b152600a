"""Experiment tracking: one named, tagged W&B run per job, with the whole job config.

A run's name and tags say its stage and parameters (``seg r0.5 λ2 s1``,
:func:`run_label`); its group is the experiment and its job type the job. The mode is
offline unless the config (``logger.wandb.offline=false``) or ``WANDB_MODE`` says
otherwise (:func:`wandb_mode`), and every job finishes its run (:func:`finish_tracking`)
so that the jobs of a multirun get a run each.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

# W&B prints no banners; its mode (offline by default) is set per run (wandb_mode).
os.environ.setdefault("WANDB_SILENT", "true")

#: The tools' folders that follow the run (under the project cache), by variable.
TOOL_DIRS = {
    "WANDB_DIR": "wandb",  # runs started without a dir of their own
    "WANDB_CACHE_DIR": "wandb/cache",  # (was ~/.cache/wandb)
    "WANDB_DATA_DIR": "wandb/data",  # artifact staging (was ~/.local/share/wandb)
    "MPLCONFIGDIR": "matplotlib",  # matplotlib's font cache (was ~/.cache/matplotlib)
}

#: The W&B logger's ``_target_`` (its runs are named, tagged and finished per job here).
WANDB_LOGGER = "lightning.pytorch.loggers.WandbLogger"

#: Short forms of run parameters in run names: ``seg r0.5 λ2 s1``.
LABELS = {"ratio": "r", "lambda_div": "λ", "seed": "s"}


def build_loggers(cfg: DictConfig, run: Mapping[str, Any] | None = None) -> list[Any]:
    """Instantiate every logger under ``cfg.logger`` (an empty group gives none).

    A W&B logger gets the run settings of :func:`wandb_settings`: its mode, the name,
    tags and job type of ``run`` (:func:`run_info`) and the whole resolved job config.

    Args:
        cfg: the job's config.
        run: what :func:`run_info` returns for the job (None: the task name only).
    """
    loggers = []
    for conf in (cfg.get("logger") or {}).values():
        if not (isinstance(conf, DictConfig) and "_target_" in conf):
            continue
        if conf._target_ == WANDB_LOGGER:
            # partial: the run config holds _target_ keys that must not be instantiated
            logger = instantiate(conf, _partial_=True)(**wandb_settings(cfg, conf, run))
            # Lightning passes anonymous=None to wandb.init, which W&B then warns has no
            # effect ("The anonymous setting ..."): not passed at all, it says nothing.
            init = getattr(logger, "_wandb_init", None)
            if isinstance(init, dict) and init.get("anonymous") is None:
                init.pop("anonymous", None)
            loggers.append(logger)
        else:
            loggers.append(instantiate(conf))
    return loggers


def wandb_mode(offline: bool | None) -> str:
    """W&B's mode of a run: ``WANDB_MODE`` where the environment sets it (``online``,
    ``offline``, ``disabled``), else ``offline`` when ``offline`` (the config's
    ``logger.wandb.offline``) is true or None, else ``online``."""
    env = os.environ.get("WANDB_MODE")
    if env:
        return env
    return "offline" if offline is None or bool(offline) else "online"


def run_label(stage: str, params: Mapping[str, Any]) -> tuple[str, list[str]]:
    """A run's name and tags from its stage and parameters (None values left out).

    ``run_label("seg", {"ratio": 0.5, "lambda_div": 2.0, "seed": 1})`` gives
    ``("seg r0.5 λ2 s1", ["seg", "ratio=0.5", "lambda_div=2", "seed=1"])``; parameters
    without a short form (:data:`LABELS`) show their value only in the name.
    """
    name, tags = [stage], [stage]
    for key, value in params.items():
        if value is None:
            continue
        text = f"{value:g}" if isinstance(value, float) else str(value)
        name.append(f"{LABELS.get(key, '')}{text}")
        tags.append(f"{key}={text}")
    return " ".join(name), tags


def source_params(source: Mapping[str, Any] | None) -> dict[str, Any]:
    """The run parameters of a synthetic source (:func:`~synthsat.data.synthetic_tiles.
    describe_source`): its ``lambda_div`` and, for a control generator (not ``gan``), its
    name as ``generator``; None where there is none."""
    source = source or {}
    generator = source.get("generator")
    return {
        "lambda_div": source.get("lambda_div"),
        "generator": generator if generator not in (None, "gan") else None,
    }


def run_info(
    cfg: DictConfig, stage: str, params: Mapping[str, Any], **config: Any
) -> dict[str, Any]:
    """A job's W&B run: name and tags (:func:`run_label`), job type (``cfg.task_name``)
    and ``config`` added to the job config (e.g. the synthetic source's lambda_div)."""
    name, tags = run_label(stage, params)
    return {"name": name, "tags": tags, "job_type": cfg.get("task_name"), "config": config}


def job_config(cfg: DictConfig) -> dict[str, Any]:
    """The whole job config, resolved, as plain containers (missing values as ``???``)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]


def wandb_settings(
    cfg: DictConfig, conf: DictConfig, run: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Arguments of a W&B logger beyond its config ``conf`` (``conf/logger/wandb.yaml``).

    ``mode`` (:func:`wandb_mode`; Lightning's ``offline`` flag is passed as False, since
    it would set ``WANDB_MODE`` for every later run of the process), ``name``
    (``conf.name`` when set, else ``run``'s, else the task name), ``tags``
    (``conf.tags`` and ``run``'s), ``job_type`` and ``config``: :func:`job_config` with
    ``run``'s config added.
    """
    run = dict(run or {})
    return {
        "offline": False,
        "mode": wandb_mode(conf.get("offline")),
        "name": conf.get("name") or run.get("name") or cfg.get("task_name"),
        "tags": [*(conf.get("tags") or []), *run.get("tags", [])],
        "job_type": conf.get("job_type") or run.get("job_type") or cfg.get("task_name"),
        "config": {**job_config(cfg), **run.get("config", {})},
    }


def finish_tracking(failed: bool = False) -> None:
    """Finish the W&B run in progress, if any (wandb not imported: nothing to do).

    Every job ends its run so that the next job of a multirun, in the same process,
    starts its own (Lightning's W&B logger would reuse a run in progress).

    Args:
        failed: the job raised (the run ends with exit code 1).
    """
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)


def log_images(
    logger: Any,
    key: str,
    images: Sequence[Any],
    caption: Sequence[str] | None = None,
    step: int | None = None,
) -> None:
    """Log ``images`` under ``key`` with a logger that has ``log_image`` (W&B's; others
    are left alone): numpy images as uint8 (:func:`synthsat.figures.to_uint8`, float
    [0, 1] scaled to 0..255), file paths as they are.

    Args:
        logger: a Lightning logger.
        key: the W&B key (e.g. ``test/panels``).
        images: (H, W, 3) arrays in [0, 1] or uint8, or paths of image files.
        caption: one caption per image.
        step: the step logged (None: the logger's own).
    """
    if not images or not hasattr(logger, "log_image"):
        return
    import numpy as np

    from synthsat.figures import to_uint8

    shown = [to_uint8(i) if isinstance(i, np.ndarray) else i for i in images]
    kwargs: dict[str, Any] = {} if caption is None else {"caption": list(caption)}
    if step is not None:
        kwargs["step"] = step
    logger.log_image(key=key, images=shown, **kwargs)


def wandb_loggers(trainer: Any) -> list[Any]:
    """The trainer's W&B loggers (none without wandb installed or a W&B logger)."""
    try:
        from lightning.pytorch.loggers import WandbLogger
    except ImportError:  # pragma: no cover - Lightning always has the class
        return []
    return [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]


def confusion_rows(confusion: Sequence[Sequence[int]], classes: Sequence[str]) -> list[list[Any]]:
    """``[truth, prediction, pixels]`` rows of a confusion matrix (rows: truth, columns:
    prediction), the long form W&B's confusion-matrix chart reads; empty cells left out."""
    return [
        [classes[t], classes[p], int(n)]
        for t, row in enumerate(confusion)
        for p, n in enumerate(row)
        if int(n)
    ]


def log_confusion_matrix(
    logger: Any, confusion: Sequence[Sequence[int]], classes: Sequence[str]
) -> None:
    """Log a confusion matrix as W&B's confusion-matrix chart (key
    ``test/confusion_matrix``) with a W&B logger."""
    import wandb

    columns = ["Actual", "Predicted", "nPredictions"]
    table = wandb.Table(columns=columns, data=confusion_rows(confusion, classes))
    chart = wandb.plot_table("wandb/confusion_matrix/v1", table, {k: k for k in columns})
    logger.experiment.log({"test/confusion_matrix": chart})


def log_report_run(
    settings: Mapping[str, Any],
    folder: Path,
    group: str,
    config: Mapping[str, Any],
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    images: Sequence[Path],
) -> None:
    """One W&B run of job type ``report`` (name and tags by :func:`run_label`, in
    ``folder/wandb``, group the experiment, mode by :func:`wandb_mode`): ``config``, the
    summary table (key ``report/summary``) and each image as ``report/<stem>``.

    Args:
        settings: ``logger/wandb`` settings (``project``, ``offline``).
        folder: the run's folder (created).
        group: the W&B group (the experiment).
        config: the run's config.
        header: the table's columns.
        rows: its rows.
        images: image files to log.
    """
    import wandb

    folder.mkdir(parents=True, exist_ok=True)
    name, tags = run_label("report", {})
    run = wandb.init(
        project=str(settings["project"]),
        dir=str(folder),
        name=name,
        tags=tags,
        group=group,
        job_type="report",
        mode=wandb_mode(settings.get("offline")),
        config=dict(config),
        reinit="finish_previous",
    )
    try:
        table = wandb.Table(columns=list(header), data=[list(r) for r in rows])
        logged = {f"report/{p.stem}": wandb.Image(str(p)) for p in images}
        run.log({"report/summary": table, **logged})
    finally:
        run.finish()


def keep_tool_dirs(cache_dir: str | Path) -> dict[str, str]:
    """Point W&B's and matplotlib's own folders under ``cache_dir`` (``paths.cache_dir``)
    unless the environment sets them (:data:`TOOL_DIRS`); the folders set.

    Set before either tool is imported (matplotlib reads ``MPLCONFIGDIR`` once), in the
    job's process: its stage jobs inherit them. W&B's own debug logs follow its cache
    (``WANDB_CACHE_DIR``), its runs' files their run's ``dir``.
    """
    root = Path(cache_dir).expanduser().resolve()
    chosen = {}
    for variable, sub in TOOL_DIRS.items():
        if not os.environ.get(variable):
            os.environ[variable] = chosen[variable] = str(root / sub)
            Path(chosen[variable]).mkdir(parents=True, exist_ok=True)
    return chosen
