"""The study's stages, in waves: what ``python -m synthsat.pipeline`` runs, and its dry run.

A wave's stages depend only on earlier waves, so they run side by side (one job array
on SLURM)::

    1 generator          train the generator per lambda_div
    - layouts            new land-cover masks per method of ``pipeline.layouts`` (only
                         with it; python -m synthsat.layouts)
    2 synthesis          synthesise the training tiles per lambda_div, and per control;
                         render each method's new layouts with the GAN per lambda_div
                         of ``pipeline.layout_lambdas``
    3 segmentation       train + test segmentation per (ratio, mode, source, seed)
    4 synthetic_metrics  fidelity and diversity per source (needs a real-only checkpoint;
                         not of new layouts, which have no real imagery to compare with)
    (then the report, in the pipeline's own process)

:func:`study_plan` composes the stages (in the main thread: Hydra's compose is not
thread-safe); :mod:`synthsat.study.dry_run` prints the plan (``pipeline.dry_run=true``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from synthsat.study.compose import compose_cache

# the grid's names (re-exported: they were this module's before the split)
from synthsat.study.grid import (  # noqa: F401
    _fmt,
    is_real_only,
    layout_lambdas,
    layout_methods,
    layout_sources,
    seg_label,
    segmentation_runs,
    source_name,
    with_data_overrides,
)
from synthsat.study.stages import Stage, make_stage

#: The waves of a study, in order.
WAVES = ("generator", "layouts", "synthesis", "segmentation", "synthetic_metrics")

#: Placeholder of the real-only checkpoint in a plan composed before segmentation ran.
PENDING_CHECKPOINT = "REAL_ONLY_CHECKPOINT"


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


def layouts_stage(p: DictConfig, common: list[str], method: str) -> Stage:
    """The layouts job of ``method`` (``python -m synthsat.layouts``): ``layout_count``
    new masks from the training masks, written to ``<stage>/layouts``."""
    return make_stage(
        "layouts",
        method,
        "synthsat.layouts",
        [
            *common,
            *(p.get("layout_overrides") or []),
            f"method={method}",
            f"n={int(p.layout_count)}",
            "out=${paths.output_dir}/layouts",
            f"seed={p.layout_seed}",
        ],
        {"layouts": method},
    )


def render_data_overrides(cfg: DictConfig, layouts: Path) -> list[str]:
    """The data overrides of a job that reads the layouts folder ``layouts`` as its data
    (``data=rasters``), with the study's classes, bands and, from
    ``pipeline.data_overrides``, every setting but the source's."""
    from synthsat.layouts.job import render_overrides

    p = cfg.pipeline
    data = with_data_overrides(cfg).data
    rest = [
        o for o in p.data_overrides if not str(o).startswith(("data=", "data.source.", "~data."))
    ]
    return [*render_overrides(data, layouts), *rest]


def render_stage(
    cfg: DictConfig,
    tail: list[str],
    results: Path,
    generator: Stage,
    layouts: Stage,
) -> Stage:
    """The synthesis stage that renders the new layouts of the ``layouts`` stage with the
    GAN of ``generator`` (``tail``: the stages' overrides after the data's). The layouts
    have no real images (their images are placeholders), so the style is drawn at random
    whatever ``pipeline.style`` says."""
    p = cfg.pipeline
    lam = float(generator.params["lambda_div"])
    method = str(layouts.params["layouts"])
    folder = layouts.directory(results) / "layouts"
    return make_stage(
        "synthesis",
        source_name(lam, None, method),
        "synthsat.synthesize",
        [
            *render_data_overrides(cfg, folder),
            *tail,
            *p.synthesize_overrides,
            f"ckpt={generator.directory(results) / 'checkpoints' / 'last.ckpt'}",
            f"samples={p.samples}",
            "out=${paths.output_dir}/tiles",
            "splits=[train]",
            "style=random",
            f"seed={p.synthesis_seed}",
        ],
        {"lambda_div": lam, "layouts": method},
    )


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
    p: DictConfig,
    logged: list[str],
    synthetic: Mapping[str, Path],
    params: dict[str, Any],
    layouts: Mapping[str, Path] | None = None,
) -> Stage:
    """The segmentation stage of one run of :func:`segmentation_runs` (``synthetic``: the
    tiles of each source, by :func:`source_name`; ``layouts``: each layout method's
    layouts folder, which a run on new layouts mixes with, ``mix.layouts``)."""
    mix = [
        f"mix.ratio={params['ratio']}",
        f"mix.mode={params['mode']}",
        f"mix.copies={max(params['copies'], 1)}",
    ]
    if params["lambda_div"] is not None or params["generator"]:
        name = source_name(params["lambda_div"], params["generator"], params.get("layouts"))
        mix.append(f"mix.source={synthetic[name]}")
        if params.get("layouts"):
            mix.append(f"mix.layouts={(layouts or {})[params['layouts']]}")
    budget = [f"trainer.max_steps={params['steps']}"] if params.get("steps") is not None else []
    return make_stage(
        "segmentation",
        seg_label(**params),
        "synthsat.train_segmentation",
        [*logged, *p.segmentation_overrides, *mix, *budget, f"seed={params['seed']}"],
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
        sources: each source's params (``lambda_div``, ``generator``; ``layouts`` for
            imagery of new layouts).
        runs: the params of each segmentation stage, in order.
        layouts: the layouts folder of each method of ``pipeline.layouts``.
    """

    results: Path
    waves: dict[str, list[Stage]] = field(default_factory=dict)
    synthetic: dict[str, Path] = field(default_factory=dict)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    logged: list[str] = field(default_factory=list)
    metric_overrides: list[str] = field(default_factory=list)
    layouts: dict[str, Path] = field(default_factory=dict)

    def tile_synthetic(self) -> dict[str, Path]:
        """The tiles folder of each source that re-renders the training tiles (not new
        layouts): what the synthetic metrics and the sample grid compare with real tiles."""
        return {
            name: tiles
            for name, tiles in self.synthetic.items()
            if not self.sources.get(name, {}).get("layouts")
        }

    def counts(self) -> dict[str, int]:
        """Stages per kind, the synthetic-metric stages included (one per source of
        :meth:`tile_synthetic`)."""
        counts = {kind: len(stages) for kind, stages in self.waves.items()}
        if "synthetic_metrics" in self.waves:
            counts["synthetic_metrics"] = len(self.tile_synthetic())
        return {k: v for k, v in counts.items() if v}

    def graph(self) -> tuple[list[Stage], dict[int, list[Path]]]:
        """The generator, synthesis and segmentation stages as one graph: the stages in
        the order they should take a free slot (generators, layouts, syntheses, real-only
        runs, then the rest) and, by index, the directories of the stages each one needs
        (a synthesis its generator, and a rendering of new layouts also their layouts
        stage; a mixed run its synthesis; real-only runs and layouts stages need none)."""
        gens = self.waves.get("generator", [])
        made = self.waves.get("layouts", [])
        syns = self.waves.get("synthesis", [])
        segs = self.waves.get("segmentation", [])
        by_name = {
            source_name(
                s.params.get("lambda_div"), s.params.get("generator"), s.params.get("layouts")
            ): s
            for s in syns
        }
        need: dict[int, list[Path]] = {}
        ordered: list[Stage] = [*gens, *made]
        for syn in syns:
            method = syn.params.get("layouts")
            trained_by = source_name(syn.params.get("lambda_div"), None) if method else syn.label
            gen = next((g for g in gens if g.label == trained_by), None)
            if gen is not None:
                need[len(ordered)] = [gen.directory(self.results)]
            if method:
                layouts = next(m for m in made if m.params.get("layouts") == method)
                need.setdefault(len(ordered), []).append(layouts.directory(self.results))
            ordered.append(syn)
        real = [i for i, r in enumerate(self.runs) if is_real_only(r)]
        for i in real + [i for i in range(len(segs)) if i not in real]:
            params = self.runs[i]
            if not is_real_only(params):
                name = source_name(params["lambda_div"], params["generator"], params.get("layouts"))
                need[len(ordered)] = [by_name[name].directory(self.results)]
            ordered.append(segs[i])
        return ordered, need

    def metric_stages(self, real_ckpt: str | None) -> list[Stage]:
        """The synthetic-metric stage of each source of :meth:`tile_synthetic`
        (``real_ckpt``: the real-only segmentation checkpoint they score with, None
        without one)."""
        extra = [f"seg_ckpt={real_ckpt}"] if real_ckpt else []
        return [
            make_stage(
                "synthetic_metrics",
                name,
                "synthsat.evaluate_synthetic",
                [*self.logged, f"synthetic={tiles}", *extra, *self.metric_overrides],
                self.sources[name],
            )
            for name, tiles in self.tile_synthetic().items()
        ]


def study_plan(cfg: DictConfig, data_choice: str) -> StudyPlan:
    """Compose every stage of the study ``cfg`` (the pipeline's config) on data
    ``data_choice`` (the ``data`` config group chosen); needs an initialised Hydra.
    Stages that differ only in their last plain overrides share one compose
    (:func:`~synthsat.study.compose.compose_cache`)."""
    with compose_cache():
        return _study_plan(cfg, data_choice)


def _study_plan(cfg: DictConfig, data_choice: str) -> StudyPlan:
    """:func:`study_plan`, in its compose cache."""
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
    made = {method: layouts_stage(p, common, method) for method in layout_methods(p)}
    tail = [f"experiment_name={cfg.experiment_name}", f"logger={p.logger}"]  # not the data's
    for method, lam in layout_sources(p):
        gen = next(g for g in generators if float(g.params["lambda_div"]) == lam)
        syntheses.append(render_stage(cfg, tail, results, gen, made[method]))
    for syn in syntheses:
        name = source_name(
            syn.params.get("lambda_div"), syn.params.get("generator"), syn.params.get("layouts")
        )
        plan.synthetic[name] = syn.directory(results) / "tiles"
        plan.sources[name] = dict(syn.params)
    plan.layouts = {m: stage.directory(results) / "layouts" for m, stage in made.items()}
    plan.runs = segmentation_runs(p)
    plan.waves = {
        "generator": generators,
        **({"layouts": list(made.values())} if made else {}),
        "synthesis": syntheses,
        "segmentation": [
            segmentation_stage(p, logged, plan.synthetic, r, plan.layouts) for r in plan.runs
        ],
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
