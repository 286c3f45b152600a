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
    steps: int | None = None,
) -> str:
    """A segmentation stage's label, e.g. ``r0.5-replace-lambda2-seed1`` (with a step
    budget of ``pipeline.steps``: ``r0.5-replace-lambda2-steps1440-seed1``)."""
    label = f"r{_fmt(ratio)}-{mode}" + (f"x{copies}" if mode == "add" else "")
    if lambda_div is not None or generator:
        label += "-" + source_name(lambda_div, generator)
    if steps is not None:
        label += f"-steps{int(steps)}"
    return label + f"-seed{seed}"


def segmentation_runs(p: DictConfig) -> list[dict[str, Any]]:
    """(ratio, mode, copies, lambda, generator, seed) of every segmentation run, seed by
    seed (so an interrupted study holds complete seeds).

    Every synthetic source (a GAN per ``lambdas``, and each control generator of
    ``controls``, e.g. ``classtexture``) gets the ``replace`` runs of ``ratios`` > 0 and
    the ``add`` runs of ``copies`` (real data plus k synthetic copies: ``ratio`` 0 of
    add mode, the augmentation regime). Real-only runs depend on no source and run once
    per seed. Controls take ``control_ratios`` instead of ``ratios`` where it is set.
    With step budgets (``pipeline.steps``, a learning curve) every run is
    repeated at each budget (``params["steps"]``: its ``trainer.max_steps``).
    """
    budgets = [int(s) for s in p.get("steps") or []]
    if not budgets:
        return _runs_at(p, None)
    return [run for steps in budgets for run in _runs_at(p, steps)]


def _runs_at(p: DictConfig, steps: int | None) -> list[dict[str, Any]]:
    """:func:`segmentation_runs` at one step budget (None: the overrides' own)."""
    sources = [(float(lam), None) for lam in p.lambdas]
    sources += [(None, str(name)) for name in p.get("controls") or []]
    control_ratios = p.get("control_ratios")
    budget = {} if steps is None else {"steps": steps}
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
                    **budget,
                }
            )
        for lam, generator in sources:
            source = {"lambda_div": lam, "generator": generator, "seed": seed, **budget}
            ratios = p.ratios if generator is None or control_ratios is None else control_ratios
            runs += [
                {"ratio": float(r), "mode": "replace", "copies": 0, **source}
                for r in ratios
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
    budget = [f"trainer.max_steps={params['steps']}"] if params.get("steps") is not None else []
    return make_stage(
        "segmentation",
        seg_label(**params),
        "synthsat.train_segmentation",
        [*logged, *p.segmentation_overrides, *mix, *budget, f"seed={params['seed']}"],
        params,
    )


def is_real_only(params: Mapping[str, Any]) -> bool:
    """Whether a segmentation run trains on real imagery alone (it needs no synthesis)."""
    return float(params["ratio"]) == 0 and params["mode"] == "replace"


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

    def graph(self) -> tuple[list[Stage], dict[int, list[Path]]]:
        """The generator, synthesis and segmentation stages as one graph: the stages in
        the order they should take a free slot (generators, syntheses, real-only runs,
        then the rest) and, by index, the directories of the stages each one needs (a
        synthesis its generator, a mixed run its synthesis; real-only runs need none)."""
        gens = self.waves.get("generator", [])
        syns = self.waves.get("synthesis", [])
        segs = self.waves.get("segmentation", [])
        by_name = {
            source_name(s.params.get("lambda_div"), s.params.get("generator")): s for s in syns
        }
        need: dict[int, list[Path]] = {}
        ordered: list[Stage] = [*gens]
        for syn in syns:
            gen = next((g for g in gens if g.label == syn.label), None)
            if gen is not None:
                need[len(ordered)] = [gen.directory(self.results)]
            ordered.append(syn)
        real = [i for i, r in enumerate(self.runs) if is_real_only(r)]
        for i in real + [i for i in range(len(segs)) if i not in real]:
            params = self.runs[i]
            if not is_real_only(params):
                name = source_name(params["lambda_div"], params["generator"])
                need[len(ordered)] = [by_name[name].directory(self.results)]
            ordered.append(segs[i])
        return ordered, need

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
    """The checkpoint of the first real-only segmentation run at the largest step budget
    (None without one)."""
    real = [(params, out) for params, out in zip(runs, outs) if is_real_only(params)]
    if not real:
        return None
    most = max(int(params.get("steps") or 0) for params, _ in real)
    out = next(out for params, out in real if int(params.get("steps") or 0) == most)
    return json.loads((out / "metrics.json").read_text()).get("checkpoint")
