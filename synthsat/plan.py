"""The study's stages, in waves: what ``python -m synthsat.pipeline`` runs, and its dry run.

A wave's stages depend only on earlier waves, so they run side by side (one job array
on SLURM)::

    1 generator          train the generator per lambda_div
    2 synthesis          synthesise the training tiles per lambda_div, and per control
    3 segmentation       train + test segmentation per (ratio, mode, source, seed)
    4 synthetic_metrics  fidelity and diversity per source (needs a real-only checkpoint)
    (then the report, in the pipeline's own process)

:func:`study_plan` composes the stages (in the main thread: Hydra's compose is not
thread-safe); :mod:`synthsat.dry_run` prints the plan (``pipeline.dry_run=true``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from synthsat.stages import Stage, make_stage

#: The waves of a study, in order.
WAVES = ("generator", "synthesis", "segmentation", "synthetic_metrics")

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
