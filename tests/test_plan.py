"""The study's plan as data (:mod:`synthsat.study.plan`): which runs a study makes at which step
budgets, what each stage is given, and which stages each one waits for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from synthsat.study import plan as plan_module
from synthsat.study.grid import is_real_only, seg_label, segmentation_runs
from synthsat.study.plan import StudyPlan, segmentation_stage
from synthsat.study.stages import Stage


def _pipeline(**kw: Any) -> Any:
    base = {
        "lambdas": [0.0],
        "controls": [],
        "ratios": [0.0, 0.5],
        "copies": [],
        "add_ratio": 0.0,
        "seeds": [0, 1],
        "steps": [],
        "segmentation_overrides": ["segmentation=tiny", "trainer.max_steps=360"],
    }
    return OmegaConf.create({**base, **kw})


def test_runs_without_budgets_keep_their_labels() -> None:
    runs = segmentation_runs(_pipeline())
    assert [seg_label(**r) for r in runs] == [
        "r0-replace-seed0",
        "r0.5-replace-lambda0-seed0",
        "r0-replace-seed1",
        "r0.5-replace-lambda0-seed1",
    ]
    assert all("steps" not in r for r in runs)


def test_every_run_at_every_budget_small_budgets_first() -> None:
    runs = segmentation_runs(_pipeline(steps=[720, 360]))
    assert [seg_label(**r) for r in runs] == [
        "r0-replace-steps720-seed0",
        "r0.5-replace-lambda0-steps720-seed0",
        "r0-replace-steps720-seed1",
        "r0.5-replace-lambda0-steps720-seed1",
        "r0-replace-steps360-seed0",
        "r0.5-replace-lambda0-steps360-seed0",
        "r0-replace-steps360-seed1",
        "r0.5-replace-lambda0-steps360-seed1",
    ]  # in the order given
    assert [r["steps"] for r in runs] == [720] * 4 + [360] * 4
    assert [is_real_only(r) for r in runs] == [True, False] * 4


def test_controls_take_their_own_ratios() -> None:
    p = _pipeline(controls=["classcolour"], ratios=[0.0, 0.25, 0.5], control_ratios=[0.5])
    labels = [seg_label(**r) for r in segmentation_runs(p) if r["seed"] == 0]
    assert labels == [
        "r0-replace-seed0",
        "r0.25-replace-lambda0-seed0",
        "r0.5-replace-lambda0-seed0",
        "r0.5-replace-classcolour-seed0",
    ]
    p.control_ratios = None  # null: the controls take `ratios`
    assert len([r for r in segmentation_runs(p) if r["generator"]]) == 4


def test_a_budget_is_the_runs_last_max_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        plan_module,
        "make_stage",
        lambda kind, label, module, overrides, params: Stage(
            kind, label, module, overrides, params
        ),
    )
    p = _pipeline(steps=[1440])
    run = segmentation_runs(p)[1]
    stage = segmentation_stage(p, ["data=dubai"], {"lambda0": Path("/s/tiles")}, run)
    assert stage.label == "r0.5-replace-lambda0-steps1440-seed0"
    steps = [o for o in stage.overrides if o.startswith("trainer.max_steps=")]
    assert steps[-1] == "trainer.max_steps=1440"  # after the preset's: Hydra keeps the last
    assert "mix.source=/s/tiles" in stage.overrides and stage.overrides[-1] == "seed=0"


def _stage(kind: str, label: str, **params: Any) -> Stage:
    return Stage(kind, label, f"synthsat.{kind}", [label], params)


def test_the_graph_order_and_needs(tmp_path: Path) -> None:
    """Generators, then syntheses (each needing its generator), then real-only runs
    (needing nothing), then mixed runs (needing their source's synthesis)."""
    runs = segmentation_runs(_pipeline(lambdas=[0.0, 2.0], controls=["classtexture"]))
    gens = [_stage("generator", f"lambda{x}", lambda_div=x) for x in (0, 2)]
    syns = [_stage("synthesis", f"lambda{x}", lambda_div=float(x)) for x in (0, 2)]
    syns.append(_stage("synthesis", "classtexture", lambda_div=None, generator="classtexture"))
    segs = [_stage("segmentation", seg_label(**r), **r) for r in runs]
    plan = StudyPlan(tmp_path, {"generator": gens, "synthesis": syns, "segmentation": segs})
    plan.runs = runs
    stages, needs = plan.graph()
    labels = [s.label for s in stages]
    assert labels[:5] == ["lambda0", "lambda2", "lambda0", "lambda2", "classtexture"]
    assert labels[5:7] == ["r0-replace-seed0", "r0-replace-seed1"]  # real-only next
    assert len(stages) == 5 + len(segs)
    d = {s.label + s.kind: s.directory(tmp_path) for s in [*gens, *syns]}
    assert needs[2] == [d["lambda0generator"]] and needs[3] == [d["lambda2generator"]]
    assert 4 not in needs  # the control needs no training
    assert 5 not in needs and 6 not in needs  # real-only runs start at once
    for i, stage in enumerate(stages[7:], start=7):
        source = stage.label.split("-")[2]
        assert needs[i] == [d[source + "synthesis"]]


def _overrides(stage: Stage) -> dict[str, str]:
    """A stage's overrides as key -> value (the last one of a key wins, as in Hydra)."""
    return dict(o.split("=", 1) for o in stage.overrides)


def test_every_arm_gets_its_own_source_checkpoint_and_seed(tmp_path: Path) -> None:
    """The composed plan of a study (GAN at lambda 0 and 2, the classtexture control,
    real-only, replace and add runs, 2 seeds), checked as data without running a stage:
    each mixed run reads the tiles of its own source, each synthesis the last checkpoint
    of the generator with its lambda, real-only runs read no synthetic tiles, and every
    run has its seed, ratio and mode, in its overrides and in its composed config."""
    from hydra import compose, initialize_config_dir

    from synthsat.study.plan import study_plan

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose(
            "pipeline",
            overrides=[
                f"paths.root={tmp_path}",
                "pipeline.lambdas=[0.0,2.0]",
                "pipeline.controls=[classtexture]",
                "pipeline.ratios=[0.0,0.5]",
                "pipeline.copies=[1]",
                "pipeline.add_ratio=0.0",
                "pipeline.seeds=[3,4]",
                "pipeline.generator_seed=7",
                "pipeline.logger=none",
            ],
        )
        plan = study_plan(cfg, "toyworld")
    results = plan.results
    gens = {g.label: g for g in plan.waves["generator"]}
    syns = {s.label: s for s in plan.waves["synthesis"]}
    assert sorted(gens) == ["lambda0", "lambda2"]
    assert sorted(syns) == ["classtexture", "lambda0", "lambda2"]
    for lam, gen in zip((0.0, 2.0), (gens["lambda0"], gens["lambda2"]), strict=True):
        o = _overrides(gen)
        assert (float(o["generator.lambda_div"]), o["seed"]) == (lam, "7")
        syn = _overrides(syns[gen.label])
        assert syn["ckpt"] == str(gen.directory(results) / "checkpoints" / "last.ckpt")
        assert "method" not in syn
    assert _overrides(syns["classtexture"])["method"] == "classtexture"
    assert "ckpt" not in _overrides(syns["classtexture"])

    segs = plan.waves["segmentation"]
    arms = [(r["seed"], r["ratio"], r["mode"], r["lambda_div"], r["generator"]) for r in plan.runs]
    expected = [
        (seed, ratio, mode, lam, gen)
        for seed in (3, 4)
        for ratio, mode, lam, gen in [
            (0.0, "replace", None, None),
            (0.5, "replace", 0.0, None),
            (0.0, "add", 0.0, None),
            (0.5, "replace", 2.0, None),
            (0.0, "add", 2.0, None),
            (0.5, "replace", None, "classtexture"),
            (0.0, "add", None, "classtexture"),
        ]
    ]
    assert arms == expected and len(segs) == len(expected)
    for stage, (seed, ratio, mode, lam, gen) in zip(segs, expected, strict=True):
        o = _overrides(stage)
        composed = OmegaConf.create(stage.config)
        assert o["seed"] == str(seed) and composed.seed == seed
        assert float(o["mix.ratio"]) == ratio and o["mix.mode"] == mode
        assert (composed.mix.ratio, composed.mix.mode) == (ratio, mode)
        if lam is None and gen is None:  # real-only
            assert "mix.source" not in o and composed.mix.source is None
            continue
        name = gen or f"lambda{lam:g}"
        tiles = syns[name].directory(results) / "tiles"
        assert o["mix.source"] == str(tiles) == str(plan.synthetic[name])
        assert composed.mix.source == str(tiles)
        assert stage.params["lambda_div"] == lam and stage.params["generator"] == gen
