"""The study's stages, in waves: what ``python -m synthsat.pipeline`` runs, and its dry run.

A wave's stages depend only on earlier waves, so they run side by side (one job array
on SLURM)::

    1 generator          train the generator per lambda_div
    2 synthesis          synthesise the training tiles per lambda_div, and per control
    3 segmentation       train + test segmentation per (ratio, mode, source, seed)
    4 synthetic_metrics  fidelity and diversity per source (needs a real-only checkpoint)
    (then the report, in the pipeline's own process)

:func:`study_plan` composes the stages (in the main thread: Hydra's compose is not
thread-safe); :func:`describe_plan` is ``pipeline.dry_run=true``'s printout, with the
sbatch parameters of ``pipeline.executor=slurm`` and an estimate of the device hours.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from synthsat.stages import Stage, make_stage

#: The waves of a study, in order.
WAVES = ("generator", "synthesis", "segmentation", "synthetic_metrics")

#: The benchmark that measures a kind's step (or stage) time.
BENCHMARKS = {
    "generator": "benchmarks/generator_step.py",
    "segmentation": "benchmarks/segmentation_step.py",
    "synthesis": "benchmarks/synthesis.py",
}

#: Placeholder of the real-only checkpoint in a plan composed before segmentation ran.
PENDING_CHECKPOINT = "REAL_ONLY_CHECKPOINT"


def _fmt(x: float) -> str:
    return f"{float(x):g}"


def source_name(lambda_div: float | None, generator: str | None) -> str:
    """Stage name of a synthetic source: ``lambda<x>`` (a trained GAN) or a control's name."""
    return str(generator) if generator else f"lambda{_fmt(lambda_div or 0.0)}"


def seg_label(
    ratio: float,
    mode: str,
    copies: int,
    lambda_div: float | None,
    seed: int,
    generator: str | None = None,
) -> str:
    """A segmentation stage's label, e.g. ``r0.5-replace-lambda2-seed1``."""
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
    p: DictConfig, logged: list[str], results: Path, lam: float
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
    p: DictConfig, logged: list[str], synthetic: Mapping[str, Path], params: dict[str, Any]
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
        seg_label(**params),
        "synthsat.train_segmentation",
        [*logged, *p.segmentation_overrides, *mix, f"seed={params['seed']}"],
        params,
    )


@dataclass
class StudyPlan:
    """The study's stages by wave, and what links the waves.

    Attributes:
        results: the study's results directory.
        waves: stages per wave (:data:`WAVES`); ``synthetic_metrics`` is composed by
            :meth:`metric_stages` once the real-only checkpoint exists.
        synthetic: the tiles folder of each synthetic source, by :func:`source_name`.
        sources: each source's params (``lambda_div``, ``generator``).
        runs: the params of each segmentation stage, in order.
    """

    results: Path
    waves: dict[str, list[Stage]] = field(default_factory=dict)
    synthetic: dict[str, Path] = field(default_factory=dict)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    logged: list[str] = field(default_factory=list)
    metric_overrides: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Stages per kind, the synthetic-metric stages included (one per source)."""
        counts = {kind: len(stages) for kind, stages in self.waves.items()}
        if "synthetic_metrics" in self.waves:
            counts["synthetic_metrics"] = len(self.synthetic)
        return {k: v for k, v in counts.items() if v}

    def metric_stages(self, real_ckpt: str | None) -> list[Stage]:
        """The synthetic-metric stage of each source (``real_ckpt``: the real-only
        segmentation checkpoint they score with, None without one)."""
        extra = [f"seg_ckpt={real_ckpt}"] if real_ckpt else []
        return [
            make_stage(
                "synthetic_metrics",
                name,
                "synthsat.evaluate_synthetic",
                [*self.logged, f"synthetic={tiles}", *extra, *self.metric_overrides],
                self.sources[name],
            )
            for name, tiles in self.synthetic.items()
        ]


def study_plan(cfg: DictConfig, data_choice: str) -> StudyPlan:
    """Compose every stage of the study ``cfg`` (the pipeline's config) on data
    ``data_choice`` (the ``data`` config group chosen); needs an initialised Hydra."""
    p = cfg.pipeline
    results = Path(p.results_dir)
    common = [f"data={data_choice}", *p.data_overrides, f"experiment_name={cfg.experiment_name}"]
    logged = [*common, f"logger={p.logger}"]
    plan = StudyPlan(results=results, logged=logged)
    generators: list[Stage] = []
    syntheses: list[Stage] = []
    for lam in p.lambdas:
        gen, syn = synthetic_stages(p, logged, results, float(lam))
        generators.append(gen)
        syntheses.append(syn)
    syntheses += [control_stage(p, logged, str(name)) for name in p.get("controls") or []]
    for syn in syntheses:
        name = source_name(syn.params.get("lambda_div"), syn.params.get("generator"))
        plan.synthetic[name] = syn.directory(results) / "tiles"
        plan.sources[name] = dict(syn.params)
    plan.runs = segmentation_runs(p)
    plan.waves = {
        "generator": generators,
        "synthesis": syntheses,
        "segmentation": [segmentation_stage(p, logged, plan.synthetic, r) for r in plan.runs],
    }
    if p.synthetic_metrics:
        plan.metric_overrides = list(p.synthetic_metric_overrides)
        plan.waves["synthetic_metrics"] = []  # composed after segmentation
    return plan


def real_only_checkpoint(runs: Sequence[dict[str, Any]], outs: Sequence[Path]) -> str | None:
    """The checkpoint of the first real-only segmentation run (None without one)."""
    for params, out in zip(runs, outs):
        if params["lambda_div"] is None and not params["generator"]:
            return json.loads((out / "metrics.json").read_text()).get("checkpoint")
    return None


def _select(stage: Stage, key: str) -> Any:
    """A value of a stage's composed config (None where unset or not resolvable)."""
    cfg = OmegaConf.create(stage.config)
    try:
        return OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
    except Exception:  # noqa: BLE001 - an interpolation that needs a running Hydra job
        return None


def stage_steps(stage: Stage) -> tuple[int | None, bool]:
    """A training stage's step budget: ``(steps, bound)``.

    ``trainer.max_steps`` where set (> 0), else ``trainer.max_epochs`` times the batches of
    an epoch (``data.patches_per_epoch / data.batch_size``): then ``bound`` is True, as
    early stopping may end it sooner. ``(None, False)`` for a job without a trainer.
    """
    if _select(stage, "trainer") is None:
        return None, False
    steps = _select(stage, "trainer.max_steps")
    if isinstance(steps, int) and steps > 0:
        return steps, False
    epochs = _select(stage, "trainer.max_epochs")
    patches, batch = _select(stage, "data.patches_per_epoch"), _select(stage, "data.batch_size")
    if all(isinstance(v, int) and v > 0 for v in (epochs, patches, batch)):
        return epochs * -(-patches // batch), True
    return None, False


@dataclass
class Measured:
    """Job times of one kind of stage finished in a study's results.

    Attributes:
        stages: how many were measured.
        stage_s: mean seconds per stage.
        step_s: seconds per training step (total seconds over total ``trainer.max_steps``
            of the runs, from their ``.hydra/config.yaml``), None without steps.
    """

    stages: int
    stage_s: float
    step_s: float | None


def measured_times(results: Path) -> dict[str, Measured]:
    """:class:`Measured` job times of each kind of stage finished in ``results``."""
    seen: dict[str, list[float]] = {}
    for done in sorted(results.glob("*/*/done.json")):
        record = json.loads(done.read_text())
        config = done.parent / ".hydra" / "config.yaml"
        steps = None
        if config.exists():
            steps = OmegaConf.select(OmegaConf.load(config), "trainer.max_steps", default=None)
        seconds = float(record["seconds"])
        n, total_s, stepped_s, total_steps = seen.setdefault(record["kind"], [0, 0.0, 0.0, 0])
        ok = isinstance(steps, int) and steps > 0
        seen[record["kind"]] = [
            n + 1,
            total_s + seconds,
            stepped_s + (seconds if ok else 0.0),
            total_steps + (steps if ok else 0),
        ]
    return {
        kind: Measured(int(n), total_s / n, stepped_s / steps if steps else None)
        for kind, (n, total_s, stepped_s, steps) in seen.items()
    }


def _max_time_s(stage: Stage) -> float | None:
    """A training stage's ``trainer.max_time`` (``DD:HH:MM:SS``) in seconds, None if unset."""
    value = _select(stage, "trainer.max_time")
    if not isinstance(value, str) or value.count(":") != 3:
        return None
    days, hours, minutes, seconds = (int(x) for x in value.split(":"))
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


@dataclass
class WaveEstimate:
    """A wave's device time: ``seconds`` (None: no step time known), how it was got."""

    seconds: float | None
    how: str


def estimate_wave(
    kind: str,
    stages: Sequence[Stage],
    estimate: Mapping[str, Any],
    measured: Mapping[str, Measured],
) -> WaveEstimate:
    """The device time of a wave's ``stages``: steps x seconds per step for training
    stages (a time budget where ``trainer.max_time`` is set), seconds per stage for the
    others. Seconds per step come from ``measured`` (this study's finished stages) or
    ``estimate.step_s.<kind>``; seconds per stage from ``measured`` or
    ``estimate.stage_s.<kind>``."""
    step_s = (estimate.get("step_s") or {}).get(kind)
    stage_s = (estimate.get("stage_s") or {}).get(kind)
    source = f"pipeline.estimate, {estimate.get('device') or 'device not named'}"
    if kind in measured:
        m = measured[kind]
        step_s = m.step_s if m.step_s is not None else step_s
        stage_s = m.stage_s
        source = f"measured: {m.stages} finished {kind} stage{'s' * (m.stages != 1)} here"
    budgets = [_max_time_s(stage) for stage in stages]
    if stages and all(b is not None for b in budgets):
        total = float(sum(b for b in budgets if b is not None))
        return WaveEstimate(total, f"trainer.max_time {total / len(stages) / 60:.0f} min each")
    steps = [stage_steps(stage) for stage in stages]
    if stages and all(s is not None for s, _ in steps):
        n_steps = sum(s for s, _ in steps if s is not None)
        bound = "at most " if any(b for _, b in steps) else ""
        if step_s is None:
            return WaveEstimate(
                None,
                f"{bound}{n_steps} steps; no step time: set pipeline.estimate.step_s.{kind}, "
                f"measured with {BENCHMARKS.get(kind, 'benchmarks/')} on the target device",
            )
        return WaveEstimate(
            n_steps * float(step_s), f"{bound}{n_steps} steps x {float(step_s):.3g} s ({source})"
        )
    if stage_s is None:
        how = f"no time per stage: set pipeline.estimate.stage_s.{kind}"
        if kind in BENCHMARKS:
            how += f", measured with {BENCHMARKS[kind]} on the target device"
        return WaveEstimate(None, how)
    return WaveEstimate(
        len(stages) * float(stage_s), f"{len(stages)} x {float(stage_s):g} s ({source})"
    )


def _planned_checkpoint(plan: StudyPlan) -> str:
    """The real-only checkpoint the synthetic-metric stages will score with: the finished
    real-only run's, else a placeholder (those stages' keys are then not final)."""
    outs = [stage.directory(plan.results) for stage in plan.waves.get("segmentation", [])]
    try:
        return real_only_checkpoint(plan.runs, outs) or PENDING_CHECKPOINT
    except FileNotFoundError:  # the real-only run has not finished
        return PENDING_CHECKPOINT


def describe_plan(
    plan: StudyPlan,
    executor: str,
    estimate: Mapping[str, Any],
    slurm: Mapping[str, Any] | None = None,
) -> str:
    """``pipeline.dry_run=true``'s printout: the stages per wave, the job count, the
    ``#SBATCH`` lines of each wave's job array (``executor`` ``slurm``) and the device
    hours (:func:`estimate_wave`)."""
    from synthsat.executors import sbatch_lines

    counts = plan.counts()
    measured = measured_times(plan.results)
    lines = [
        f"[dry run] {sum(counts.values())} jobs in {len(counts)} waves on the {executor} "
        f"executor, then the report; results in {plan.results}"
    ]
    hours: float = 0.0
    unknown: list[str] = []
    waves = [kind for kind in WAVES if kind in counts]
    sbatch = {
        kind: sbatch_lines(slurm or {}, kind, counts[kind], plan.results / ".submitit")
        for kind in waves
        if executor == "slurm"
    }
    common = [
        line for line in next(iter(sbatch.values()), []) if all(line in v for v in sbatch.values())
    ]
    if common:
        lines.append("sbatch, every wave (one job array each):")
        lines += [f"  {line}" for line in common]
    for k, kind in enumerate(waves):
        stages = plan.waves[kind] or plan.metric_stages(_planned_checkpoint(plan))
        done = sum((stage.directory(plan.results) / "done.json").exists() for stage in stages)
        labels = [stage.label for stage in stages]
        shown = ", ".join(labels[:4]) + (
            f", ... ({len(labels) - 4} more)" if len(labels) > 4 else ""
        )
        lines.append(f"wave {k + 1} {kind}: {len(stages)} stages ({done} done): {shown}")
        est = estimate_wave(kind, stages, estimate, measured)
        if est.seconds is None:
            unknown.append(kind)
            lines.append(f"  device time: not known ({est.how})")
        else:
            hours += est.seconds / 3600
            lines.append(f"  device time: {est.seconds / 3600:.1f} h ({est.how})")
        lines += [f"  {line}" for line in sbatch.get(kind, []) if line not in common]
    total = f"{hours:.1f} device hours"
    if unknown and hours == 0:
        total = "device hours not known (no time for any wave)"
    elif unknown:
        total = f"over {total} (not known: {', '.join(unknown)})"
    lines.append(f"total: {sum(counts.values())} jobs, {total}")
    return "\n".join(lines)
