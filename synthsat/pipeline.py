"""The whole study as one resumable job: ``python -m synthsat.pipeline experiment=NAME``.

Stages, each run as its own Hydra job (its own run directory with its resolved config)::

    generator/<lambda>      train the generator per lambda_div
    synthesis/<lambda>      synthesise the training tiles per lambda_div
    segmentation/<run>      train + test segmentation per (ratio, lambda_div, seed)
    synthetic_metrics/<l>   fidelity and diversity per lambda_div
    report                  results/<experiment>/{report.md, summary.csv, *.png}

A stage's directory is named after its parameters and a hash of its composed config
(the job's config files with the stage's overrides applied, before interpolation); a
``done.json`` there marks it finished, so a rerun skips it, an interrupted study
continues where it stopped, and editing a preset file reruns the stages it changes.
Every stage line is numbered ``[k/N]`` (N: the run's stages, skipped ones included),
and each finished stage's line ends with the estimated time left
(:class:`~synthsat.stages.Progress`).
An interrupted training stage resumes from its ``last.ckpt``; a stage whose job still
runs (its ``stage.lock`` names a live process) stops the rerun; Ctrl-C or SIGTERM stops
the running stages with the pipeline (:mod:`synthsat.processes`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from synthsat import config_dir
from synthsat.data import DataError
from synthsat.figures import sample_grid
from synthsat.processes import stopped_on_signal
from synthsat.report import summarise
from synthsat.runtime import prepare_run, user_errors
from synthsat.stages import (
    Progress,
    Stage,
    StageFailed,
    composed_config,
    make_stage,
    record_timing,
    run_parallel,
    run_stage,
    say,
    stage_env,
)
from synthsat.tracking import job_config, run_label, wandb_mode

__all__ = [
    "Progress",
    "Stage",
    "StageFailed",
    "check_data",
    "composed_config",
    "control_stage",
    "data_choice",
    "main",
    "make_stage",
    "real_only_checkpoint",
    "record_timing",
    "run_parallel",
    "run_stage",
    "run_study",
    "say",
    "segmentation_runs",
    "segmentation_stage",
    "source_name",
    "stage_counts",
    "stage_env",
    "synthetic_stages",
]


def _fmt(x: float) -> str:
    return f"{float(x):g}"


def data_choice() -> str:
    """The data config group chosen for this run (e.g. ``toyworld``)."""
    return str(HydraConfig.get().runtime.choices["data"])


def check_data(cfg: DictConfig) -> Any:
    """Build the study's datamodule once: fails fast, with the source's own message,
    when the data is missing or bad, before any stage starts."""
    data_cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(cfg.pipeline.data_overrides)))
    datamodule = instantiate(data_cfg.data)
    try:
        datamodule.prepare_data()
        datamodule.setup("fit")
    except DataError as err:
        raise DataError(f"[pipeline] data problem: {err}") from err
    print(datamodule.summary(), flush=True)
    return datamodule


def source_name(lambda_div: float | None, generator: str | None) -> str:
    """Stage name of a synthetic source: ``lambda<x>`` (a trained GAN) or a control's name."""
    return str(generator) if generator else f"lambda{_fmt(lambda_div or 0.0)}"


def _seg_label(
    ratio: float,
    mode: str,
    copies: int,
    lambda_div: float | None,
    seed: int,
    generator: str | None = None,
) -> str:
    label = f"r{_fmt(ratio)}-{mode}" + (f"x{copies}" if mode == "add" else "")
    if lambda_div is not None or generator:
        label += "-" + source_name(lambda_div, generator)
    return label + f"-seed{seed}"


def segmentation_runs(p: DictConfig) -> list[dict[str, Any]]:
    """(ratio, mode, copies, lambda, generator, seed) of every segmentation run, seed by
    seed (so an interrupted study holds complete seeds).

    Every synthetic source (a GAN per ``lambdas``, and each control generator of
    ``controls``, e.g. ``classtexture``) gets the ``replace`` runs of ``ratios`` > 0 and
    the ``add`` runs of ``copies`` (real data plus k synthetic copies: ``ratio`` 0 of
    add mode, the augmentation regime). Real-only runs depend on no source and run once
    per seed.
    """
    sources = [(float(lam), None) for lam in p.lambdas]
    sources += [(None, str(name)) for name in p.get("controls") or []]
    runs: list[dict[str, Any]] = []
    for seed in p.seeds:
        if any(float(r) == 0 for r in p.ratios):
            runs.append(
                {
                    "ratio": 0.0,
                    "mode": "replace",
                    "copies": 0,
                    "lambda_div": None,
                    "generator": None,
                    "seed": seed,
                }
            )
        for lam, generator in sources:
            source = {"lambda_div": lam, "generator": generator, "seed": seed}
            runs += [
                {"ratio": float(r), "mode": "replace", "copies": 0, **source}
                for r in p.ratios
                if float(r) > 0
            ]
            runs += [
                {"ratio": float(p.add_ratio), "mode": "add", "copies": int(k), **source}
                for k in p.copies
            ]
    return runs


def synthetic_stages(
    p: DictConfig, logged: list[str], common: list[str], results: Path, lam: float
) -> tuple[Stage, Stage]:
    """The GAN's stages for one ``lambda_div``: train the generator, then synthesise."""
    name = f"lambda{_fmt(lam)}"
    gen = make_stage(
        "generator",
        name,
        "synthsat.train_generator",
        [
            *logged,
            *p.generator_overrides,
            f"generator.lambda_div={lam}",
            f"seed={p.generator_seed}",
        ],
        {"lambda_div": lam},
    )
    syn = make_stage(
        "synthesis",
        name,
        "synthsat.synthesize",
        [
            *logged,
            *p.synthesize_overrides,
            f"ckpt={gen.directory(results) / 'checkpoints' / 'last.ckpt'}",
            f"samples={p.samples}",
            "out=${paths.output_dir}/tiles",
            "splits=[train]",
            f"style={p.style}",
            f"seed={p.synthesis_seed}",
        ],
        {"lambda_div": lam},
    )
    return gen, syn


def control_stage(p: DictConfig, logged: list[str], name: str) -> Stage:
    """A control generator's stage (e.g. classtexture): it needs no training, synthesis only."""
    return make_stage(
        "synthesis",
        name,
        "synthsat.synthesize",
        [
            *logged,
            *p.control_overrides,
            f"method={name}",
            f"samples={p.samples}",
            "out=${paths.output_dir}/tiles",
            "splits=[train]",
            f"seed={p.synthesis_seed}",
        ],
        {"lambda_div": None, "generator": name},
    )


def segmentation_stage(
    p: DictConfig, logged: list[str], synthetic: dict[str, Path], params: dict[str, Any]
) -> Stage:
    """The segmentation stage of one run of :func:`segmentation_runs` (``synthetic``: the
    tiles of each source, by :func:`source_name`)."""
    mix = [
        f"mix.ratio={params['ratio']}",
        f"mix.mode={params['mode']}",
        f"mix.copies={max(params['copies'], 1)}",
    ]
    if params["lambda_div"] is not None or params["generator"]:
        name = source_name(params["lambda_div"], params["generator"])
        mix.append(f"mix.source={synthetic[name]}")
    return make_stage(
        "segmentation",
        _seg_label(**params),
        "synthsat.train_segmentation",
        [*logged, *p.segmentation_overrides, *mix, f"seed={params['seed']}"],
        params,
    )


def real_only_checkpoint(runs: list[dict[str, Any]], outs: list[Path]) -> str | None:
    """The checkpoint of the first real-only segmentation run (None without one)."""
    for params, out in zip(runs, outs):
        if params["lambda_div"] is None and not params["generator"]:
            return json.loads((out / "metrics.json").read_text()).get("checkpoint")
    return None


def stage_counts(
    chains: Mapping[str, Sequence[Stage]], seg_stages: Sequence[Stage], metrics: bool
) -> dict[str, int]:
    """Stages of a pipeline run per kind: those of the synthetic sources' ``chains``, the
    segmentation stages and, with ``metrics``, one synthetic-metrics stage per source."""
    counts: dict[str, int] = {}
    for stage in [*(s for chain in chains.values() for s in chain), *seg_stages]:
        counts[stage.kind] = counts.get(stage.kind, 0) + 1
    if metrics and chains:
        counts["synthetic_metrics"] = len(chains)
    return counts


def run_study(cfg: DictConfig) -> Path:
    """Run every stage of the study (skipping finished ones) and write the report."""
    p = cfg.pipeline
    results = Path(p.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    datamodule = check_data(cfg)
    common = [f"data={data_choice()}", *p.data_overrides, f"experiment_name={cfg.experiment_name}"]
    logged = [*common, f"logger={p.logger}"]
    log: list[str] = []
    jobs = max(1, int(p.jobs))
    env = stage_env(int(cfg.num_threads), jobs)
    t0 = time.perf_counter()

    # Stages are composed here, in the main thread (Hydra's compose is not thread-safe);
    # the worker threads only run them. A chain's tiles are in its synthesis stage's
    # directory, so the segmentation stages are composed before any stage runs; the
    # synthetic-metric stages (one per source) need the real-only checkpoint, so they are
    # composed after segmentation, but counted now.
    chains: dict[str, tuple[Stage, ...]] = {
        source_name(lam, None): synthetic_stages(p, logged, common, results, lam)
        for lam in p.lambdas
    }
    chains.update({name: (control_stage(p, logged, name),) for name in p.get("controls") or []})
    synthetic = {name: chain[-1].directory(results) / "tiles" for name, chain in chains.items()}
    runs = segmentation_runs(p)
    seg_stages = [segmentation_stage(p, logged, synthetic, r) for r in runs]
    progress = Progress(stage_counts(chains, seg_stages, bool(p.synthetic_metrics)), jobs)

    def run(stage: Stage) -> Path:
        return run_stage(stage, results, log, env, progress)

    def run_chain(stages: tuple[Stage, ...]) -> Path:
        return [run(stage) for stage in stages][-1]

    run_parallel(jobs, [lambda c=chain: run_chain(c) for chain in chains.values()])
    outs = run_parallel(jobs, [lambda s=stage: run(s) for stage in seg_stages])
    real_ckpt = real_only_checkpoint(runs, outs)

    if p.synthetic_metrics:
        extra = [f"seg_ckpt={real_ckpt}"] if real_ckpt else []
        metric_stages = [
            make_stage(
                "synthetic_metrics",
                name,
                "synthsat.evaluate_synthetic",
                [*logged, f"synthetic={tiles}", *extra, *p.synthetic_metric_overrides],
                chains[name][-1].params,
            )
            for name, tiles in synthetic.items()
        ]
        run_parallel(jobs, [lambda s=stage: run(s) for stage in metric_stages])

    sample_grid(datamodule, synthetic, results / "sample_grid.png")
    record_timing(results, time.perf_counter() - t0, log)
    report = summarise(results, mark_paper=bool(p.mark_paper))
    track_report(cfg, results)
    print(f"[pipeline] report: {report}")
    print(report.read_text())
    return report


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
    as the stages' by :func:`~synthsat.tracking.wandb_mode`, project as
    ``conf/logger/wandb.yaml``) holds the whole pipeline config, ``summary.csv`` as a
    table (key ``report/summary``, one row per segmentation run) and the report's plots
    (``report/<name>`` images, the PNGs of ``results``).
    """
    summary = results / "summary.csv"
    if cfg.pipeline.get("logger") != "wandb" or not summary.exists():
        return
    import csv

    import wandb

    settings = OmegaConf.load(Path(config_dir()) / "logger" / "wandb.yaml").wandb
    with summary.open(newline="") as f:
        header, *rows = list(csv.reader(f))
    (results / "report").mkdir(exist_ok=True)
    name, tags = run_label("report", {})
    run = wandb.init(
        project=str(settings.project),
        dir=str(results / "report"),
        name=name,
        tags=tags,
        group=str(cfg.experiment_name),
        job_type="report",
        mode=wandb_mode(settings.offline),
        config=job_config(cfg),
        reinit="finish_previous",
    )
    try:
        table = wandb.Table(columns=header, data=[[_cell(c) for c in row] for row in rows])
        images = {f"report/{p.stem}": wandb.Image(str(p)) for p in sorted(results.glob("*.png"))}
        run.log({"report/summary": table, **images})
    finally:
        run.finish()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="pipeline")
@user_errors
def main(cfg: DictConfig) -> None:
    """Run the study configured by ``experiment=NAME``."""
    prepare_run(cfg)
    if cfg.get("pipeline") is None:
        raise SystemExit("choose a study: python -m synthsat.pipeline experiment=demo|dubai|paper")
    print(OmegaConf.to_yaml(cfg.pipeline))
    with stopped_on_signal():  # SIGINT / SIGTERM stop the running stages too
        run_study(cfg)


if __name__ == "__main__":
    main()
