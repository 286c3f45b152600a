"""The values :mod:`synthsat.study.plan` decides, pinned without composing a stage: labels and
source names, the overrides each stage is given, the stage counts, the synthetic-metric
stages and the real-only checkpoint the metrics score with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from synthsat.errors import ConfigError
from synthsat.study import plan as plan_module
from synthsat.study.grid import (
    is_real_only,
    layout_lambdas,
    layout_methods,
    layout_sources,
    seg_label,
    segmentation_runs,
    source_name,
)
from synthsat.study.plan import (
    StudyPlan,
    control_stage,
    layouts_stage,
    real_only_checkpoint,
    segmentation_stage,
    synthetic_stages,
)
from synthsat.study.stages import Stage


@pytest.fixture(autouse=True)
def _plain_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stages without a Hydra compose: kind, label, module, overrides and params only."""
    monkeypatch.setattr(
        plan_module,
        "make_stage",
        lambda kind, label, module, overrides, params: Stage(
            kind, label, module, list(overrides), params
        ),
    )


def _p(**kw: Any) -> Any:
    base = {
        "lambdas": [2.0],
        "controls": [],
        "ratios": [0.0, 0.5],
        "copies": [],
        "add_ratio": 0.0,
        "seeds": [1],
        "steps": [],
        "generator_overrides": ["generator=cpu"],
        "synthesize_overrides": ["batch=2"],
        "control_overrides": ["c=1"],
        "segmentation_overrides": ["segmentation=tiny"],
        "samples": 3,
        "style": "auto",
        "generator_seed": 5,
        "synthesis_seed": 6,
        "layout_count": 4,
        "layout_seed": 8,
    }
    return OmegaConf.create({**base, **kw})


def test_source_names_and_labels() -> None:
    assert source_name(2.0, None) == "lambda2"
    assert source_name(0.5, None) == "lambda0.5"
    assert source_name(None, None) == "lambda0"
    assert source_name(None, "classtexture") == "classtexture"
    assert source_name(2.0, None, "recombine") == "lambda2-recombine"
    assert seg_label(0.5, "replace", 0, 2.0, 1) == "r0.5-replace-lambda2-seed1"
    assert seg_label(0.0, "add", 3, 2.0, 1) == "r0-addx3-lambda2-seed1"
    assert seg_label(0.0, "replace", 0, None, 4) == "r0-replace-seed4"
    assert seg_label(0.25, "replace", 0, None, 1, generator="classcolour") == (
        "r0.25-replace-classcolour-seed1"
    )
    assert seg_label(0.5, "replace", 0, 0.0, 2, steps=720, layouts="recombine") == (
        "r0.5-replace-lambda0-recombine-steps720-seed2"
    )
    assert seg_label(0.5, "replace", 0, 0.0, 2, steps=0) == "r0.5-replace-lambda0-steps0-seed2"


def test_add_runs_copy_real_data_at_the_add_ratio() -> None:
    runs = segmentation_runs(_p(copies=[1, 2], add_ratio=0.0))
    assert [seg_label(**r) for r in runs] == [
        "r0-replace-seed1",
        "r0.5-replace-lambda2-seed1",
        "r0-addx1-lambda2-seed1",
        "r0-addx2-lambda2-seed1",
    ]
    assert [r["copies"] for r in runs] == [0, 0, 1, 2]
    assert all(type(r["ratio"]) is float for r in runs)
    assert [is_real_only(r) for r in runs] == [True, False, False, False]


def test_without_a_zero_ratio_there_is_no_real_only_run() -> None:
    runs = segmentation_runs(_p(ratios=[0.5, 1.0]))
    assert [seg_label(**r) for r in runs] == [
        "r0.5-replace-lambda2-seed1",
        "r1-replace-lambda2-seed1",
    ]


def test_layout_settings() -> None:
    assert layout_methods(_p()) == []
    assert layout_sources(_p()) == []
    assert layout_lambdas(_p(lambdas=[0, 2])) == [0.0, 2.0]
    assert layout_lambdas(_p(lambdas=[0, 2], layout_lambdas=[2])) == [2.0]
    with pytest.raises(ConfigError, match=r"layout_lambdas=\['1', '3'\]: no generator of "):
        layout_lambdas(_p(lambdas=[0, 2], layout_lambdas=[1, 2, 3]))
    with pytest.raises(ConfigError, match=r"pipeline.layouts=\['recombine', 'recombine'\]"):
        layout_methods(_p(layouts=["recombine", "recombine"]))
    with pytest.raises(ConfigError, match="each of"):
        layout_methods(_p(layouts=["nosuchmethod"]))
    p = _p(lambdas=[0, 2], layouts=["recombine"])
    assert layout_sources(p) == [("recombine", 0.0), ("recombine", 2.0)]


def test_the_generator_and_synthesis_overrides(tmp_path: Path) -> None:
    gen, syn = synthetic_stages(_p(), ["data=toy"], tmp_path, 2.0)
    assert (gen.kind, gen.label, gen.module) == ("generator", "lambda2", "synthsat.train_generator")
    assert gen.overrides == ["data=toy", "generator=cpu", "generator.lambda_div=2.0", "seed=5"]
    assert gen.params == syn.params == {"lambda_div": 2.0}
    assert (syn.kind, syn.label, syn.module) == ("synthesis", "lambda2", "synthsat.synthesize")
    assert syn.overrides == [
        "data=toy",
        "batch=2",
        f"ckpt={gen.directory(tmp_path) / 'checkpoints' / 'last.ckpt'}",
        "samples=3",
        "out=${paths.output_dir}/tiles",
        "splits=[train]",
        "style=auto",
        "seed=6",
    ]


def test_the_control_and_layouts_overrides() -> None:
    control = control_stage(_p(), ["data=toy"], "classtexture")
    assert (control.kind, control.label) == ("synthesis", "classtexture")
    assert control.overrides == [
        "data=toy",
        "c=1",
        "method=classtexture",
        "samples=3",
        "out=${paths.output_dir}/tiles",
        "splits=[train]",
        "seed=6",
    ]
    assert control.params == {"lambda_div": None, "generator": "classtexture"}
    made = layouts_stage(_p(layout_overrides=["x=1"]), ["data=toy"], "recombine")
    assert (made.kind, made.label, made.module) == ("layouts", "recombine", "synthsat.layouts")
    assert made.overrides == [
        "data=toy",
        "x=1",
        "method=recombine",
        "n=4",
        "out=${paths.output_dir}/layouts",
        "seed=8",
    ]
    assert made.params == {"layouts": "recombine"}


def test_the_segmentation_overrides() -> None:
    real = {"ratio": 0.0, "mode": "replace", "copies": 0, "lambda_div": None}
    real |= {"generator": None, "seed": 1}
    stage = segmentation_stage(_p(), ["data=toy"], {}, real)
    assert stage.overrides == [
        "data=toy",
        "segmentation=tiny",
        "mix.ratio=0.0",
        "mix.mode=replace",
        "mix.copies=1",  # at least one copy, whatever the mode
        "seed=1",
    ]
    assert (stage.kind, stage.module) == ("segmentation", "synthsat.train_segmentation")
    assert stage.params is real
    added = {**real, "mode": "add", "copies": 3, "lambda_div": 0.0, "layouts": "recombine"}
    stage = segmentation_stage(
        _p(),
        [],
        {"lambda0-recombine": Path("/t")},
        added,
        {"recombine": Path("/l")},
    )
    assert stage.overrides[1:] == [
        "mix.ratio=0.0",
        "mix.mode=add",
        "mix.copies=3",
        "mix.source=/t",
        "mix.layouts=/l",
        "seed=1",
    ]
    control = {**real, "ratio": 0.5, "generator": "classtexture", "steps": 0}
    stage = segmentation_stage(_p(), [], {"classtexture": Path("/c")}, control)
    assert "mix.source=/c" in stage.overrides
    assert stage.overrides[-2:] == ["trainer.max_steps=0", "seed=1"]


def test_counts_tile_sources_and_metric_stages(tmp_path: Path) -> None:
    gen = Stage("generator", "lambda2", "m", [], {"lambda_div": 2.0})
    plan = StudyPlan(tmp_path, {"generator": [gen], "layouts": [], "synthetic_metrics": []})
    plan.synthetic = {"lambda2": tmp_path / "a", "lambda2-recombine": tmp_path / "b"}
    plan.sources = {
        "lambda2": {"lambda_div": 2.0},
        "lambda2-recombine": {"lambda_div": 2.0, "layouts": "recombine"},
    }
    plan.logged, plan.metric_overrides = ["data=toy"], ["n=2"]
    assert plan.tile_synthetic() == {"lambda2": tmp_path / "a"}
    assert plan.counts() == {"generator": 1, "synthetic_metrics": 1}  # no empty kinds
    (stage,) = plan.metric_stages("/r.ckpt")
    assert (stage.kind, stage.label, stage.module) == (
        "synthetic_metrics",
        "lambda2",
        "synthsat.evaluate_synthetic",
    )
    assert stage.overrides == ["data=toy", f"synthetic={tmp_path / 'a'}", "seg_ckpt=/r.ckpt", "n=2"]
    assert stage.params == {"lambda_div": 2.0}
    (stage,) = plan.metric_stages(None)
    assert stage.overrides == ["data=toy", f"synthetic={tmp_path / 'a'}", "n=2"]
    plan.waves.pop("synthetic_metrics")
    assert plan.counts() == {"generator": 1}


def test_the_real_only_checkpoint_is_the_first_at_the_largest_budget(tmp_path: Path) -> None:
    runs, outs = [], []
    for i, (ratio, steps) in enumerate([(0.0, 720), (0.5, 1440), (0.0, 1440), (0.0, 1440)]):
        out = tmp_path / str(i)
        out.mkdir()
        (out / "metrics.json").write_text(json.dumps({"checkpoint": f"/ckpt{i}"}))
        runs.append({"ratio": ratio, "mode": "replace", "steps": steps})
        outs.append(out)
    assert real_only_checkpoint(runs, outs) == "/ckpt2"
    no_budget = [{k: v for k, v in r.items() if k != "steps"} for r in runs]
    assert real_only_checkpoint(no_budget, outs) == "/ckpt0"
    assert real_only_checkpoint(runs[1:2], outs[1:2]) is None
    (tmp_path / "2" / "metrics.json").write_text("{}")
    assert real_only_checkpoint(runs, outs) is None  # a run that wrote no checkpoint


def test_a_plan_without_stages_has_an_empty_graph(tmp_path: Path) -> None:
    """Waves that are not there count as empty (a plan before it is composed, or a
    study without syntheses): no stage, nothing to wait for."""
    assert StudyPlan(tmp_path).graph() == ([], {})
    real = {"ratio": 0.0, "mode": "replace", "copies": 0, "lambda_div": None, "generator": None}
    seg = Stage("segmentation", "r0-replace-seed0", "m", [], {**real, "seed": 0})
    plan = StudyPlan(tmp_path, {"segmentation": [seg]}, runs=[{**real, "seed": 0}])
    assert plan.graph() == ([seg], {})


def test_a_rendering_of_new_layouts_needs_its_lambdas_generator_and_the_layouts(
    tmp_path: Path,
) -> None:
    gens = [Stage("generator", f"lambda{x}", "m", [], {"lambda_div": float(x)}) for x in (0, 2)]
    made = Stage("layouts", "recombine", "m", [], {"layouts": "recombine"})
    render = Stage(
        "synthesis", "lambda2-recombine", "m", [], {"lambda_div": 2.0, "layouts": "recombine"}
    )
    plan = StudyPlan(tmp_path, {"generator": gens, "layouts": [made], "synthesis": [render]})
    stages, needs = plan.graph()
    assert stages == [*gens, made, render]
    assert needs == {3: [gens[1].directory(tmp_path), made.directory(tmp_path)]}
    alone = StudyPlan(tmp_path, {"layouts": [made], "synthesis": [render]})
    assert alone.graph()[1] == {1: [made.directory(tmp_path)]}  # no generator in the plan


def test_with_data_overrides_is_the_one_merge_of_the_studys_data_settings() -> None:
    from omegaconf import OmegaConf

    from synthsat.study.grid import with_data_overrides

    cfg = OmegaConf.create(
        {
            "data": {"source": {"root": "/a", "splits": None}, "scale": 1.0},
            "pipeline": {"data_overrides": ["data.source.root=/b", "data.scale=0.25"]},
        }
    )
    merged = with_data_overrides(cfg)
    assert (merged.data.source.root, merged.data.scale) == ("/b", 0.25)
    assert cfg.data.source.root == "/a"  # the study's own config is untouched
    plain = OmegaConf.create({"data": {"scale": 1.0}})
    assert with_data_overrides(plain) is plain  # no pipeline: nothing merged
    plain.pipeline = {"data_overrides": []}
    assert with_data_overrides(plain) is plain
