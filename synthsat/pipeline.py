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
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from synthsat import config_dir
from synthsat.atomic import write_text
from synthsat.data import DataError
from synthsat.report import summarise
from synthsat.runtime import prepare_run, user_errors
from synthsat.samples import sample_grid


@dataclass
class Stage:
    """One job of the study: a module run with Hydra overrides in its own directory."""

    kind: str
    label: str
    module: str
    overrides: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    config: str = ""

    @property
    def key(self) -> str:
        """Hash of what determines the stage's outputs: module, overrides and config."""
        blob = json.dumps([self.module, self.overrides, self.config], sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:10]

    def directory(self, results: Path) -> Path:
        """Where the stage writes (named by label and hash)."""
        return results / self.kind / f"{self.label}-{self.key}"


def composed_config(module: str, overrides: list[str]) -> str:
    """The job's config (``conf/<job>.yaml`` with ``overrides``), uninterpolated, as YAML.

    Needs an initialised Hydra (inside the pipeline's ``@hydra.main``); the job's config
    file is named after the module's last part (``synthsat.train_generator``).
    """
    cfg = compose(config_name=module.rsplit(".", 1)[-1], overrides=overrides)
    return OmegaConf.to_yaml(cfg, resolve=False)


def make_stage(
    kind: str, label: str, module: str, overrides: list[str], params: dict[str, Any]
) -> Stage:
    """A stage whose key covers its composed config (so preset edits rerun it)."""
    return Stage(kind, label, module, overrides, params, composed_config(module, overrides))


_SAY_LOCK = threading.Lock()


def say(message: str) -> None:
    """Print one whole line, also when stages run side by side in threads."""
    with _SAY_LOCK:
        sys.stdout.write(message + "\n")
        sys.stdout.flush()


class StageFailed(RuntimeError):
    """A stage's job exited with an error."""


def run_stage(
    stage: Stage, results: Path, log: list[str], env: dict[str, str] | None = None
) -> Path:
    """Run ``stage`` unless it is already done; return its directory.

    Args:
        stage: the job to run.
        results: the study's results directory.
        log: receives one line per stage (ran / skipped).
        env: environment of the job's process (default: this process's).
    """
    out = stage.directory(results)
    done = out / "done.json"
    if done.exists():
        log.append(f"skip  {stage.kind}/{stage.label} (done)")
        say(f"[pipeline] skip {stage.kind}/{stage.label}: done in {out}")
        return out
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", stage.module, *stage.overrides, f"hydra.run.dir={out}"]
    say(f"[pipeline] run  {stage.kind}/{stage.label}: {' '.join(cmd[1:])}")
    start = time.perf_counter()
    with open(out / "stage.log", "w") as logfile:
        proc = subprocess.run(cmd, stdout=logfile, stderr=subprocess.STDOUT, check=False, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (out / "stage.log").read_text().splitlines()[-25:]
        raise StageFailed(
            f"stage {stage.kind}/{stage.label} failed (exit {proc.returncode}); "
            f"log: {out / 'stage.log'}\n" + "\n".join(tail)
        )
    record = {
        "kind": stage.kind,
        "label": stage.label,
        "module": stage.module,
        "overrides": stage.overrides,
        "params": stage.params,
        "seconds": seconds,
    }
    write_text(done, json.dumps(record, indent=2))
    log.append(f"ran   {stage.kind}/{stage.label} in {seconds:.0f} s")
    say(f"[pipeline] done {stage.kind}/{stage.label} in {seconds:.0f} s")
    return out


def run_parallel(jobs: int, tasks: Iterable[Callable[[], Any]]) -> list[Any]:
    """Call ``tasks`` with at most ``jobs`` running at once; results in task order.

    On the first failure no further task starts; the running ones finish (so no stage is
    left half-written by an abandoned process) and the failure is raised.
    """
    tasks = list(tasks)
    if jobs <= 1:
        return [task() for task in tasks]
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = [pool.submit(task) for task in tasks]
        return [future.result() for future in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def stage_env(num_threads: int, jobs: int) -> dict[str, str]:
    """Environment for stage processes: the study's threads shared among ``jobs``."""
    env = dict(os.environ)
    if jobs > 1:
        env["SYNTHSAT_THREADS"] = str(max(1, int(num_threads or os.cpu_count() or 1) // jobs))
    return env


def record_timing(results: Path, wall_s: float, log: list[str]) -> dict[str, Any]:
    """Add this pipeline run to ``timing.json`` and return its content.

    ``total_s`` sums the wall time of every pipeline run that reached the report (a
    resumed study took several); ``stages`` sums each kind's job time from the stages'
    own ``done.json`` records, whichever run did them.
    """
    path = results / "timing.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    runs = list(old.get("runs", []))
    if not runs and "total_s" in old:  # written before runs were recorded one by one
        runs.append({"wall_s": old["total_s"]})
    runs.append(
        {
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "wall_s": wall_s,
            "ran": sum(line.startswith("ran") for line in log),
            "skipped": sum(line.startswith("skip") for line in log),
            "log": log,
        }
    )
    stages: dict[str, float] = {}
    for done in sorted(results.glob("*/*/done.json")):
        record = json.loads(done.read_text())
        stages[record["kind"]] = stages.get(record["kind"], 0.0) + float(record["seconds"])
    timing = {"total_s": sum(r["wall_s"] for r in runs), "stages": stages, "runs": runs}
    write_text(path, json.dumps(timing, indent=2))
    return timing


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

    def run(stage: Stage) -> Path:
        return run_stage(stage, results, log, env)

    # Stages are composed here, in the main thread (Hydra's compose is not thread-safe);
    # the worker threads only run them.
    def synthetic_stages(lam: float) -> tuple[Stage, Stage]:
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
                *common,
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

    def control_stage(name: str) -> Stage:
        # a control generator (e.g. classtexture) needs no training: synthesis only
        return make_stage(
            "synthesis",
            name,
            "synthsat.synthesize",
            [
                *common,
                *p.control_overrides,
                f"method={name}",
                f"samples={p.samples}",
                "out=${paths.output_dir}/tiles",
                "splits=[train]",
                f"seed={p.synthesis_seed}",
            ],
            {"lambda_div": None, "generator": name},
        )

    def run_chain(stages: tuple[Stage, ...]) -> Path:
        return [run(stage) for stage in stages][-1]

    chains = {source_name(lam, None): synthetic_stages(lam) for lam in p.lambdas}
    chains.update({name: (control_stage(name),) for name in p.get("controls") or []})
    syn_dirs = run_parallel(jobs, [lambda c=chain: run_chain(c) for chain in chains.values()])
    synthetic = {name: d / "tiles" for name, d in zip(chains, syn_dirs)}

    def segmentation_stage(params: dict[str, Any]) -> Stage:
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

    runs = segmentation_runs(p)
    seg_stages = [segmentation_stage(r) for r in runs]
    outs = run_parallel(jobs, [lambda s=stage: run(s) for stage in seg_stages])
    real_ckpt: str | None = None
    for params, out in zip(runs, outs):
        if params["lambda_div"] is None and not params["generator"]:
            real_ckpt = json.loads((out / "metrics.json").read_text()).get("checkpoint")
            break

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
    print(f"[pipeline] report: {report}")
    print(report.read_text())
    return report


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="pipeline")
@user_errors
def main(cfg: DictConfig) -> None:
    """Run the study configured by ``experiment=NAME``."""
    prepare_run(cfg)
    if cfg.get("pipeline") is None:
        raise SystemExit("choose a study: python -m synthsat.pipeline experiment=demo|dubai|paper")
    print(OmegaConf.to_yaml(cfg.pipeline))
    run_study(cfg)


if __name__ == "__main__":
    main()
