"""Shared plumbing of the Hydra entry points (the one place for it: no job imports another).

Seeding, the run directory, loggers, callbacks and trainers built from the config, the
device and the config choices of a run, config validation before any data is read, a
checkpoint checked against the data and outputs kept out of input data folders; errors
users read are :mod:`synthsat.jobs.user_errors`' (:func:`user_errors`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from synthsat.atomic import write_text
from synthsat.data.errors import DataError
from synthsat.errors import BudgetNotMet, ConfigError
from synthsat.jobs.output_checks import check_outputs

# re-exported: the names were this module's before the split
from synthsat.jobs.user_errors import shared_data_hint, user_errors  # noqa: F401
from synthsat.schemas import schema_violation
from synthsat.tracking import build_loggers, keep_tool_dirs

if TYPE_CHECKING:  # Lightning and torch load when a job runs, after Hydra checked its config
    import lightning as L
    import torch


def prepare_run(cfg: DictConfig) -> Path:
    """Check the config, seed everything, create the run directory and save the config.

    W&B's and matplotlib's folders follow the run's cache (``paths.cache_dir``, see
    :func:`~synthsat.tracking.keep_tool_dirs`). The settings are validated
    (:func:`validate_config`), the output folders checked against the input data
    folders (:func:`check_outputs`) and a training job's ``ckpt_path`` read
    (:func:`~synthsat.tasks.checkpoints.check_resume`: missing, empty, corrupt, of the
    wrong kind or unsafe to load, it is a one-line ``CheckpointError``) before anything
    is written or data read.

    Returns:
        the run directory (``cfg.paths.output_dir``).

    Raises:
        ConfigError: a setting out of range, or an output folder inside the data.
        CheckpointError: a ``ckpt_path`` the job cannot resume from.
    """
    cache = OmegaConf.select(cfg, "paths.cache_dir", default=None, throw_on_missing=False)
    if cache:  # before Lightning (and so any matplotlib or W&B) loads
        keep_tool_dirs(str(cache))
    import lightning as L
    import torch
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from synthsat.tasks.checkpoints import check_resume

    lightning_lines_once()
    quiet_known_lines()
    validate_config(cfg)
    check_outputs(cfg)
    check_resume(str(cfg.get("task_name")), resume_path(cfg))
    if cfg.get("num_threads"):
        # One intra-op thread by default: on a small shared CPU, OpenMP threads competing
        # with data-loader workers and other jobs made steps up to 10x slower.
        torch.set_num_threads(int(cfg.num_threads))
    if cfg.get("seed") is not None:
        L.seed_everything(int(cfg.seed), workers=True)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if rank_zero_only.rank == 0:  # under DDP every process runs the job: written once
        write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    return out


def resume_path(cfg: DictConfig) -> str | None:
    """The checkpoint a training job resumes from (``ckpt_path``, ``~`` expanded; None)."""
    ckpt = cfg.get("ckpt_path")
    return str(Path(str(ckpt)).expanduser()) if ckpt not in (None, "") else None


def lightning_lines_once() -> None:
    """Lightning's info lines (``Seed set to 0``, ``GPU available: ...``) printed once and
    plainly, as when Lightning loads before Hydra configures logging.

    Jobs load Lightning after Hydra has composed the config (and set up the root logger);
    Lightning's loggers then pass their records both to its own handler and up to the
    root's, so every line came twice. Here they keep a plain handler of their own and
    stop there (what Lightning itself does when it finds the root logger bare).
    """
    import logging

    for name in ("lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        if logger.propagate:
            logger.addHandler(logging.StreamHandler())
            logger.propagate = False


class _DropTips:
    """A logging filter dropping Lightning's advertising tips (``💡 Tip: ...``)."""

    def filter(self, record: Any) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def quiet_known_lines() -> None:
    """Leave out the third-party lines a job prints that are no problem of the run:

    * Lightning's ``💡 Tip: For seamless cloud ...`` (litlogger / litmodels adverts), logged
      on ``lightning.pytorch.utilities.rank_zero`` beside the lines that matter (dropped by
      a filter on that logger, not by its level);
    * torch's FutureWarning about ``LeafSpec``, raised inside Lightning 2.6's own pytree
      helper (``lightning.pytorch.utilities._pytree``), not in this project's code.

    W&B's "anonymous" warning is avoided where it starts (:func:`~synthsat.tracking.
    build_loggers`), the generator's eval-mode modules in ``train_generator``. Idempotent.
    """
    import logging
    import warnings

    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropTips) for f in logger.filters):
        logger.addFilter(_DropTips())
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
    )


#: Lightning's checkpoint callback, which :func:`build_callbacks` builds as
#: :class:`~synthsat.tasks.checkpoints.ResumableCheckpoint` (same settings and files,
#: ``last.ckpt`` after every validation).
MODEL_CHECKPOINT = "lightning.pytorch.callbacks.ModelCheckpoint"
RESUMABLE_CHECKPOINT = "synthsat.tasks.checkpoints.ResumableCheckpoint"


def build_callbacks(cfg: DictConfig) -> list[Any]:
    """Instantiate every callback under ``cfg.callbacks`` (``conf/callbacks/``; null
    entries are skipped, so ``callbacks.early_stopping=null`` turns one off). Lightning's
    ``ModelCheckpoint`` is built as :class:`~synthsat.tasks.checkpoints.
    ResumableCheckpoint`, so that ``last.ckpt`` follows every validation (the configs keep
    naming Lightning's class: their keys, and so finished study stages, stay as they are).
    """
    callbacks = []
    for conf in (cfg.get("callbacks") or {}).values():
        if not (isinstance(conf, DictConfig) and "_target_" in conf):
            continue
        if conf._target_ == MODEL_CHECKPOINT:
            callbacks.append(instantiate(conf, _target_=RESUMABLE_CHECKPOINT))
        else:
            callbacks.append(instantiate(conf))
    return callbacks


def progress_bar(setting: bool | None, stream: Any = None) -> bool:
    """Whether Lightning draws its progress bar: ``setting`` when it is true or false;
    when it is None (``trainer.enable_progress_bar: null``, auto), whether ``stream``
    (default ``sys.stderr``, where the bar is drawn) is a terminal. Without a bar the
    training jobs log plain lines (:class:`synthsat.callbacks.ProgressLog`), which suit
    log files and pipeline stage logs."""
    if setting is not None:
        return bool(setting)
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def build_trainer(
    cfg: DictConfig, run: Mapping[str, Any] | None = None, **kwargs: Any
) -> L.Trainer:
    """The Lightning trainer of ``cfg.trainer`` with the run's loggers and callbacks.

    ``trainer.enable_progress_bar: null`` draws the bar only on a terminal
    (:func:`progress_bar`), :func:`~synthsat.callbacks.step_progress_bar` unless
    ``callbacks`` holds a bar of its own (it counts steps under a step budget, where
    Lightning's reads ``Epoch 0/-2``); training stops after the step in progress on SIGTERM
    (:class:`~synthsat.callbacks.StopOnSigterm`).

    Args:
        cfg: the job's config.
        run: the job's W&B run settings (:func:`run_info`).
        **kwargs: further trainer arguments (they override the config's).
    """
    from lightning.pytorch.callbacks import ProgressBar

    from synthsat.callbacks import StopOnSigterm, step_progress_bar

    kwargs.setdefault("logger", build_loggers(cfg, run) or False)
    kwargs.setdefault("callbacks", [*build_callbacks(cfg), StopOnSigterm()])
    kwargs.setdefault("enable_progress_bar", progress_bar(cfg.trainer.get("enable_progress_bar")))
    kwargs["callbacks"] = list(kwargs["callbacks"] or [])
    bars = [c for c in kwargs["callbacks"] if isinstance(c, ProgressBar)]
    if not kwargs["enable_progress_bar"]:  # a bar added under callbacks too
        kwargs["callbacks"] = [c for c in kwargs["callbacks"] if c not in bars]
    elif not bars:
        kwargs["callbacks"] = [*kwargs["callbacks"], step_progress_bar()]
    return instantiate(cfg.trainer, **kwargs)


def save_final_checkpoint(trainer: L.Trainer) -> Path | None:
    """Write ``last.ckpt`` with the weights fit ended with; its path (None: the
    checkpoint callback keeps no ``last.ckpt``, or fit was interrupted and the
    ``last.ckpt`` it left is the one to resume from).

    Lightning 2.6 writes ``last.ckpt`` only beside a new best checkpoint: after a final
    validation that did not improve, it holds older weights than the ones fit ended with.
    """
    from lightning.pytorch.callbacks import ModelCheckpoint

    ckpt = trainer.checkpoint_callback
    if not (isinstance(ckpt, ModelCheckpoint) and ckpt.dirpath and ckpt.save_last):
        return None
    last = Path(ckpt.dirpath) / f"{ckpt.CHECKPOINT_NAME_LAST}{ckpt.FILE_EXTENSION}"
    if trainer.interrupted:
        return last if last.exists() else None
    trainer.save_checkpoint(last)  # Lightning's default: the whole state a resumed run needs
    return last


def check_step_budget(trainer: L.Trainer) -> None:
    """Raise :class:`~synthsat.errors.BudgetNotMet` when fit stopped on ``max_time``
    before ``max_steps``: a step budget is what a study compares runs by, so a time cap
    that cuts it short is a failure of the run, not a shorter run (its ``last.ckpt`` is
    kept: a rerun with a larger ``trainer.max_time`` resumes from it).
    """
    from lightning.pytorch.callbacks import Timer

    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    steps, budget = int(trainer.global_step), int(trainer.max_steps)
    if trainer.interrupted or timer is None or budget < 0 or steps >= budget:
        return
    remaining = timer.time_remaining()
    if remaining is not None and remaining <= 0:
        raise BudgetNotMet(
            f"trainer.max_time={timer.time_elapsed() + remaining:.0f} s ran out at step {steps} of "
            f"trainer.max_steps={budget}: the step budget was not met; raise trainer.max_time "
            "(a safety cap) and rerun to resume from last.ckpt, or lower trainer.max_steps"
        )


def resolve_device(name: str | None) -> torch.device:
    """``auto`` (or None) -> cuda when available, else cpu; anything else as given."""
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(str(name))


def config_choice(group: str, default: str = "custom") -> str:
    """The option chosen for config ``group`` in the running Hydra app (or ``default``)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return default
    return str(HydraConfig.get().runtime.choices.get(group) or default)


def fit_record(cfg: DictConfig, trainer: L.Trainer, fit_time: float) -> dict[str, Any]:
    """What every training job records about its fit: seed, steps, epochs, fit time."""
    return {
        "seed": cfg.get("seed"),
        "steps": int(trainer.global_step),
        "max_steps": int(trainer.max_steps),  # the step budget (-1: none)
        "epochs": int(trainer.current_epoch),
        "fit_time_s": round(fit_time, 1),
    }


def scores_record(split: str, scores: Mapping[str, Any], datamodule: Any) -> dict[str, Any]:
    """Segmentation scores of ``split`` with the classes and data they were scored on."""
    return {
        "split": split,
        **scores,
        "classes": datamodule.classes,
        "scored_classes": datamodule.scored_classes,
        "data": config_choice("data"),
        "data_root": datamodule.source.describe(),
    }


def finish_run(out: Path, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` with the run directory, written to ``<out>/metrics.json``; returned.

    Every job's ``run()`` returns what this writes. Under DDP (where every process runs
    the job) only the global-zero process writes it.
    """
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from synthsat.metrics.segmentation import write_metrics

    record = {**metrics, "run_dir": str(out.resolve())}
    if rank_zero_only.rank == 0:
        write_metrics(out / "metrics.json", record)
    return record


def check_checkpoint_data(
    where: str, trained: Mapping[str, Any], data: Mapping[str, Any], model: str = "model"
) -> None:
    """Refuse a checkpoint whose model was trained on other bands or classes than the data.

    Args:
        where: the checkpoint setting, e.g. ``ckpt=<path>``.
        trained: the checkpoint's data metadata (``bands``, ``classes``).
        data: the data's (``bands``, ``classes``), e.g. ``datamodule.metadata()``.
        model: what the checkpoint holds, for the message.

    Raises:
        DataError: naming both sides.
    """

    def describe(meta: Mapping[str, Any]) -> str:
        return f"bands={meta.get('bands')}, classes={list(meta.get('classes') or [])}"

    same_bands = trained.get("bands") is not None and int(trained["bands"]) == int(data["bands"])
    if not same_bands or list(trained.get("classes") or []) != list(data["classes"]):
        raise DataError(
            f"{where}: the {model} was trained on {describe(trained)}; "
            f"the data has {describe(data)}"
        )


# -- config values -----------------------------------------------------------------------
def _check(cfg: DictConfig, key: str, ok: Callable[[Any], bool], rule: str) -> None:
    value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
    if value is None:
        return
    values = list(value) if isinstance(value, ListConfig | list | tuple) else [value]
    for v in values:
        try:
            good = ok(v)
        except (TypeError, ValueError):
            good = False
        if not good:
            raise ConfigError(f"{key}={value}: {rule}")


def _positive_int(v: Any) -> bool:
    return not isinstance(v, bool) and int(v) == float(v) and int(v) > 0


def validate_config(cfg: DictConfig) -> None:
    """Check ranges, choices and types of the settings, before any data is read.

    The rules of single keys are the schemas' (:mod:`synthsat.schemas`, applied here by
    :func:`~synthsat.schemas.schema_violation` to a config composed without them); this
    adds the pipeline's lists, which have no schema, and the rules that join two keys.

    Raises:
        ConfigError: naming the key, its value and the rule.
    """
    found = schema_violation(cfg)
    if found:
        key, value, rule = found
        raise ConfigError(f"{key}={value}: {rule}")
    _check(cfg, "pipeline.lambdas", lambda v: float(v) >= 0, "must be a number >= 0")
    _check(cfg, "pipeline.ratios", lambda v: 0 <= float(v) <= 1, "must be a number in [0, 1]")
    _check(cfg, "pipeline.steps", _positive_int, "must be whole numbers >= 1 (step budgets)")
    generator_patch = OmegaConf.select(cfg, "generator.patch_size", default=None)
    if generator_patch is not None:  # train_generator: one patch size, the generator's
        _check(
            cfg,
            "data.patch_size",
            lambda v: int(v) == int(generator_patch),
            f"the generator trains on generator.patch_size={generator_patch} patches; "
            "set generator.patch_size (data.patch_size follows it)",
        )
    from synthsat.data.cache import NONFINITE

    _check(cfg, "data.on_nonfinite", lambda v: v in NONFINITE, f"must be one of {NONFINITE}")
    chip = OmegaConf.select(cfg, "chip_size", default=None, throw_on_missing=False)
    if chip is not None:
        _check(
            cfg,
            "overlap",
            lambda v: 0 <= int(v) < int(chip) and int(v) == float(v),
            f"must be a whole number of pixels in [0, chip_size={chip})",
        )
