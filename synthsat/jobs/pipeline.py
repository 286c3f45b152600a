"""The whole study as one resumable job: ``python -m synthsat.pipeline experiment=NAME``.

Stages, each run as its own Hydra job (its own run directory with its resolved config),
in waves (:mod:`synthsat.study.plan`; a wave's stages run side by side)::

    generator/<lambda>      train the generator per lambda_div
    layouts/<method>        new land-cover masks per method of pipeline.layouts (if any)
    synthesis/<source>      synthesise the training tiles per lambda_div and control, and
                            render the new layouts (lambda<x>-<method>)
    segmentation/<run>      train + test segmentation per (ratio, source, seed)
    synthetic_metrics/<s>   fidelity and diversity per source
    report                  results/<experiment>/{report.md, summary.csv, *.png}

Each stage goes out as a submitit job (:mod:`synthsat.study.executors`):
``pipeline.executor=local`` (this machine, ``pipeline.jobs`` at once), ``slurm`` (one
job array per wave, sbatch parameters from the ``slurm`` config group) or ``debug``
(in this process). ``pipeline.dry_run=true`` prints the plan (stages per wave, jobs,
sbatch parameters, device hours) and runs nothing.

A stage's directory is named after its parameters and a hash of its composed config
(the job's config files with the stage's overrides applied, before interpolation); a
``done.json`` there marks it finished, so a rerun skips it, an interrupted study
continues where it stopped, and editing a preset file reruns the stages it changes.
Every stage line is numbered ``[k/N]`` (N: the run's stages, skipped ones included),
and each finished stage's line ends with the estimated time left
(:class:`~synthsat.study.progress.Progress`).
An interrupted training stage resumes from its ``last.ckpt``; a stage whose job still
runs (its ``stage.lock`` names a live process) stops the rerun; Ctrl-C or SIGTERM stops
the running stages with the pipeline (:func:`~synthsat.study.executors.stop_running`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from synthsat import config_dir
from synthsat.data import DataError
from synthsat.jobs.output_checks import check_outputs
from synthsat.jobs.runtime import prepare_run, validate_config
from synthsat.jobs.user_errors import user_errors
from synthsat.report import summarise
from synthsat.study.dry_run import describe_plan
from synthsat.study.executors import check_executor, make_executor, run_wave, stop_running
from synthsat.study.grid import with_data_overrides
from synthsat.study.plan import real_only_checkpoint, study_plan
from synthsat.study.processes import stopped_on_signal
from synthsat.study.progress import Progress
from synthsat.study.slurm import wave_devices, wave_resources
from synthsat.study.stages import Stage, record_timing, stage_threads
from synthsat.tracking import job_config, log_report_run

__all__ = [
    "check_data",
    "data_choice",
    "dry_run",
    "main",
    "run_study",
    "track_report",
]


def data_choice() -> str:
    """The data config group chosen for this run (e.g. ``toyworld``)."""
    return str(HydraConfig.get().runtime.choices["data"])


def check_data(cfg: DictConfig) -> Any:
    """Build the study's datamodule once: fails fast, with the source's own message,
    when the data is missing or bad, before any stage starts."""
    datamodule = instantiate(with_data_overrides(cfg).data)
    try:
        datamodule.prepare_data()
        datamodule.setup("fit")
    except DataError as err:
        raise DataError(f"[pipeline] data problem: {err}") from err
    print(datamodule.summary(), flush=True)
    return datamodule


def run_study(cfg: DictConfig) -> Path:
    """Run every stage of the study (skipping finished ones), wave by wave, as submitit
    jobs of ``pipeline.executor``, and write the report."""
    from synthsat.figures import sample_grid  # matplotlib and torch: not for a dry run

    p = cfg.pipeline
    results = Path(p.results_dir)
    check_executor(str(p.executor))  # before reading the data
    results.mkdir(parents=True, exist_ok=True)
    datamodule = check_data(cfg)
    plan = study_plan(cfg, data_choice())
    log: list[str] = []
    jobs = max(1, int(p.jobs))
    local = p.executor == "local"
    threads = stage_threads(int(cfg.num_threads), jobs if local else 1)
    env = {} if threads is None else {"SYNTHSAT_THREADS": str(threads)}
    progress = Progress(plan.counts(), jobs if local else max(1, sum(plan.counts().values())))
    t0 = time.perf_counter()

    def run(kind: str, stages: list[Stage]) -> list[Path]:
        # a SLURM wave asks for its stages' device: a CPU wave its CPUs (its stages'
        # threads), no GPU (synthsat.slurm.wave_devices)
        device = wave_devices({**plan.waves, kind: stages})[kind]
        wave_env = dict(env)
        if p.executor == "slurm":
            wave_env.update(wave_resources(cfg.get("slurm") or {}, kind, device).env())
        slurm = cfg.get("slurm")
        executor = make_executor(str(p.executor), results / ".submitit", slurm, kind, device)
        return run_wave(executor, stages, results, jobs, log, wave_env, progress)

    if local:  # one graph: a stage starts as soon as the stages it needs are done
        stages, needs = plan.graph()
        executor = make_executor("local", results / ".submitit", cfg.get("slurm"), "study")
        run_wave(executor, stages, results, jobs, log, env, progress, needs=needs)
    else:
        run("generator", plan.waves["generator"])
        if plan.waves.get("layouts"):
            run("layouts", plan.waves["layouts"])
        run("synthesis", plan.waves["synthesis"])
        run("segmentation", plan.waves["segmentation"])
    outs = [stage.directory(results) for stage in plan.waves["segmentation"]]
    if "synthetic_metrics" in plan.waves:
        run("synthetic_metrics", plan.metric_stages(real_only_checkpoint(plan.runs, outs)))

    sample_grid(datamodule, plan.tile_synthetic(), results / "sample_grid.png")
    record_timing(results, time.perf_counter() - t0, log)
    report = summarise(results, mark_paper=bool(p.mark_paper))
    track_report(cfg, results)
    print(f"[pipeline] report: {report}")
    print(report.read_text())
    return report


def dry_run(cfg: DictConfig) -> str:
    """The plan of ``pipeline.dry_run=true``: composed, printed, nothing run (the data
    is not read)."""
    p = cfg.pipeline
    plan = study_plan(cfg, data_choice())
    text = describe_plan(plan, str(p.executor), p.get("estimate") or {}, cfg.get("slurm"))
    print(text, flush=True)
    return text


def _cell(text: str) -> float | str | None:
    """A summary.csv cell as W&B shows it: a number where it is one, None where empty."""
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def track_report(cfg: DictConfig, results: Path) -> None:
    """Log the study's summary to a W&B run of job type ``report`` (``pipeline.logger``
    ``wandb`` only; no summary.csv: nothing).

    The run (name ``report``, group the experiment, in ``<results>/report/wandb/``, mode
    as the stages' by :func:`~synthsat.tracking.wandb_mode`, project and offline flag from
    ``report_logger.wandb``: ``conf/logger/wandb.yaml``, composed by Hydra) holds the
    whole pipeline config, ``summary.csv`` as a table (key ``report/summary``, one row
    per segmentation run) and the report's plots (``report/<name>`` images, the PNGs of
    ``results``).
    """
    summary = results / "summary.csv"
    if cfg.pipeline.get("logger") != "wandb" or not summary.exists():
        return
    import csv

    with summary.open(newline="") as f:
        header, *rows = list(csv.reader(f))
    log_report_run(
        cfg.report_logger.wandb,
        results / "report",
        str(cfg.experiment_name),
        job_config(cfg),
        header,
        [[_cell(c) for c in row] for row in rows],
        sorted(results.glob("*.png")),
    )


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="pipeline")
@user_errors
def main(cfg: DictConfig) -> None:
    """Run the study configured by ``experiment=NAME`` (its config is printed by Hydra's
    ``--cfg job``, not by the run)."""
    if cfg.get("pipeline") is not None and cfg.pipeline.get("dry_run"):
        # the plan needs the checked settings, not torch or Lightning (their start-up
        # took longer than the plan)
        validate_config(cfg)
        check_outputs(cfg)
        dry_run(cfg)
        return
    prepare_run(cfg)
    if cfg.get("pipeline") is None:
        raise SystemExit("choose a study: python -m synthsat.pipeline experiment=demo|dubai|paper")
    with stopped_on_signal(also=stop_running):  # SIGINT / SIGTERM stop the running stages
        run_study(cfg)


if __name__ == "__main__":
    main()
