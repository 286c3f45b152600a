"""The study's grid: its synthetic sources (a GAN per ``lambda_div``, the controls, the
GAN's imagery of new layouts) and its segmentation runs over ratios, modes, sources,
seeds and step budgets, with the names their stages take (:func:`source_name`,
:func:`seg_label`). :mod:`synthsat.study.plan` makes a stage of each."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf


def _fmt(x: float) -> str:
    return f"{float(x):g}"


def source_name(lambda_div: float | None, generator: str | None, layouts: str | None = None) -> str:
    """Stage name of a synthetic source: ``lambda<x>`` (a trained GAN) or a control's name;
    ``lambda<x>-<method>`` for the GAN's imagery of new layouts made by ``method``."""
    name = str(generator) if generator else f"lambda{_fmt(lambda_div or 0.0)}"
    return f"{name}-{layouts}" if layouts else name


def seg_label(
    ratio: float,
    mode: str,
    copies: int,
    lambda_div: float | None,
    seed: int,
    generator: str | None = None,
    steps: int | None = None,
    layouts: str | None = None,
) -> str:
    """A segmentation stage's label, e.g. ``r0.5-replace-lambda2-seed1`` (with a step
    budget of ``pipeline.steps``: ``r0.5-replace-lambda2-steps1440-seed1``; on new layouts
    of ``pipeline.layouts``: ``r0.5-replace-lambda2-recombine-seed1``)."""
    label = f"r{_fmt(ratio)}-{mode}" + (f"x{copies}" if mode == "add" else "")
    if lambda_div is not None or generator:
        label += "-" + source_name(lambda_div, generator, layouts)
    if steps is not None:
        label += f"-steps{int(steps)}"
    return label + f"-seed{seed}"


def segmentation_runs(p: DictConfig) -> list[dict[str, Any]]:
    """(ratio, mode, copies, lambda, generator, seed) of every segmentation run, seed by
    seed (so an interrupted study holds complete seeds).

    Every synthetic source (a GAN per ``lambdas``, and each control generator of
    ``controls``, e.g. ``classtexture``) gets the ``replace`` runs of ``ratios`` > 0 and
    the ``add`` runs of ``copies`` (real data plus k synthetic copies: ``ratio`` 0 of
    add mode, the augmentation regime); so does the GAN's imagery of new layouts, per
    method of ``layouts`` and lambda of ``layout_lambdas`` (null: every lambda), with
    ``params["layouts"]`` its method. Real-only runs depend on no source and run once
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
    sources: list[tuple[float | None, str | None, str | None]]
    sources = [(float(lam), None, None) for lam in p.lambdas]
    sources += [(None, str(name), None) for name in p.get("controls") or []]
    sources += [(lam, None, method) for method, lam in layout_sources(p)]
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
        for lam, generator, layouts in sources:
            source = {"lambda_div": lam, "generator": generator, "seed": seed, **budget}
            if layouts:
                source["layouts"] = layouts
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


def layout_lambdas(p: DictConfig) -> list[float]:
    """The lambdas whose GAN renders the new layouts: ``layout_lambdas`` (null: every one of
    ``lambdas``).

    Raises:
        ConfigError: a lambda of ``layout_lambdas`` that ``lambdas`` trains no GAN for.
    """
    from synthsat.errors import ConfigError

    trained = [float(lam) for lam in p.lambdas]
    chosen = p.get("layout_lambdas")
    if chosen is None:
        return trained
    lambdas = [float(lam) for lam in chosen]
    missing = [lam for lam in lambdas if lam not in trained]
    if missing:
        raise ConfigError(
            f"pipeline.layout_lambdas={[_fmt(x) for x in missing]}: no generator of "
            f"pipeline.lambdas={[_fmt(x) for x in trained]} renders them"
        )
    return lambdas


def layout_methods(p: DictConfig) -> list[str]:
    """The methods of ``pipeline.layouts`` (checked, without repeats).

    Raises:
        ConfigError: an unknown method, or one named twice.
    """
    from synthsat.errors import ConfigError
    from synthsat.layouts.job import METHODS

    methods = [str(m) for m in p.get("layouts") or []]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or len(set(methods)) != len(methods):
        raise ConfigError(f"pipeline.layouts={methods}: each of {list(METHODS)} at most once")
    return methods


def layout_sources(p: DictConfig) -> list[tuple[str, float]]:
    """(method, lambda) of every source of GAN imagery on new layouts (none without
    ``pipeline.layouts``)."""
    methods = layout_methods(p)
    return [(m, lam) for m in methods for lam in layout_lambdas(p)] if methods else []


def is_real_only(params: Mapping[str, Any]) -> bool:
    """Whether a segmentation run trains on real imagery alone (it needs no synthesis)."""
    return float(params["ratio"]) == 0 and params["mode"] == "replace"


def with_data_overrides(cfg: DictConfig) -> DictConfig:
    """``cfg`` with the study's ``pipeline.data_overrides`` applied (the data its stages
    read); ``cfg`` itself where there are none (or no ``pipeline``): the one place that
    merges them (the pipeline's data check, the output-folder check, the rendering of
    new layouts)."""
    overrides = OmegaConf.select(cfg, "pipeline.data_overrides", default=None)
    if not overrides:
        return cfg
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist([str(o) for o in overrides]))
