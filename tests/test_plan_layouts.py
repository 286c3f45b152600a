"""New-layout arms (``pipeline.layouts``, issue 30) as data: the layouts stage per method,
its rendering by the study's GAN, the runs on it at the study's ratios, seeds and budget
(mixed with the layouts' own masks), the graph's needs, the dry run and the report's
labels; a study without it keeps every stage and key."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import toy_data_overrides
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from synthsat import config_dir
from synthsat.errors import ConfigError
from synthsat.report import read_summary, summarise
from synthsat.report.arms import run_source, source_label, source_rank
from synthsat.study.grid import is_real_only, seg_label
from synthsat.study.plan import StudyPlan, study_plan

STUDY = [
    "pipeline.lambdas=[0.0,2.0]",
    "pipeline.ratios=[0.0,0.5]",
    "pipeline.copies=[1]",
    "pipeline.add_ratio=0.0",
    "pipeline.seeds=[3,4]",
    "pipeline.logger=none",
    "pipeline.segmentation_overrides=['segmentation=tiny','trainer.max_steps=360']",
]


@pytest.fixture(autouse=True)
def _hydra() -> Iterator[None]:
    """An initialised Hydra: plans (and the synthetic-metric stages) compose configs."""
    with initialize_config_dir(config_dir(), version_base="1.3"):
        yield


def _plan(tmp_path: Path, toy_root: Path, *extra: str) -> StudyPlan:
    data = ",".join(f"'{o}'" for o in toy_data_overrides(toy_root))
    overrides = [f"paths.root={tmp_path}", f"pipeline.data_overrides=[{data}]", *STUDY, *extra]
    return study_plan(compose("pipeline", overrides=overrides), "toyworld")


def _overrides(stage: Any) -> dict[str, str]:
    return dict(o.split("=", 1) for o in stage.overrides)


def test_the_new_layout_arms(tmp_path: Path, toy_root: Path) -> None:
    plan = _plan(
        tmp_path,
        toy_root,
        "pipeline.layouts=[recombine]",
        "pipeline.layout_lambdas=[0.0]",
        "pipeline.layout_count=7",
    )
    results = plan.results
    assert list(plan.waves) == [
        "generator",
        "layouts",
        "synthesis",
        "segmentation",
        "synthetic_metrics",
    ]
    (made,) = plan.waves["layouts"]
    o = _overrides(made)
    assert (made.kind, made.label, made.module) == ("layouts", "recombine", "synthsat.layouts")
    assert (o["method"], o["n"], o["data"]) == ("recombine", "7", "toyworld")
    assert o["data.source.root"] == str(toy_root)  # the study's data: its training masks
    composed = OmegaConf.create(made.config)
    assert (composed.method, composed.n) == ("recombine", 7)
    folder = made.directory(results) / "layouts"
    assert plan.layouts == {"recombine": folder}

    gens = {g.label: g for g in plan.waves["generator"]}
    syns = {s.label: s for s in plan.waves["synthesis"]}
    assert list(syns) == ["lambda0", "lambda2", "lambda0-recombine"]
    render = syns["lambda0-recombine"]
    o = _overrides(render)
    assert o["data"] == "rasters" and o["data.source.root"] == str(folder)
    assert o["ckpt"] == str(gens["lambda0"].directory(results) / "checkpoints" / "last.ckpt")
    assert o["style"] == "random" and o["splits"] == "[train]"
    composed = OmegaConf.create(render.config)
    assert composed.data.source._target_ == "synthsat.data.PairedRasterSource"
    assert list(composed.data.classes) == list(
        OmegaConf.create(syns["lambda0"].config).data.classes
    )
    assert "data.source.tiles" not in o  # the toy world's own source keys stay out
    assert render.params == {"lambda_div": 0.0, "layouts": "recombine"}

    # the same runs as on the training layouts, at the same seeds and budget
    by_label = {s.label: s for s in plan.waves["segmentation"]}
    layout_runs = [r for r in plan.runs if r.get("layouts")]
    assert [seg_label(**r) for r in layout_runs] == [
        "r0.5-replace-lambda0-recombine-seed3",
        "r0-addx1-lambda0-recombine-seed3",
        "r0.5-replace-lambda0-recombine-seed4",
        "r0-addx1-lambda0-recombine-seed4",
    ]
    tiles = render.directory(results) / "tiles"
    assert plan.synthetic["lambda0-recombine"] == tiles
    for run in layout_runs:
        stage = by_label[seg_label(**run)]
        twin = by_label[seg_label(**{**run, "layouts": None})]  # on the training layouts
        o, t = _overrides(stage), _overrides(twin)
        assert o["mix.source"] == str(tiles) and o["mix.layouts"] == str(folder)
        assert OmegaConf.create(stage.config).mix.layouts == str(folder)
        assert {k: v for k, v in o.items() if k not in ("mix.source", "mix.layouts")} == {
            k: v for k, v in t.items() if k != "mix.source"
        }
        assert "layouts:" not in twin.config  # unset: left out of its key
        assert stage.params["layouts"] == "recombine" and "layouts" not in twin.params

    # needs: the rendering waits for its generator and its layouts; the runs for it
    stages, needs = plan.graph()
    labels = [f"{s.kind}/{s.label}" for s in stages]
    assert labels[:3] == ["generator/lambda0", "generator/lambda2", "layouts/recombine"]
    assert 2 not in needs
    i = labels.index("synthesis/lambda0-recombine")
    assert needs[i] == [gens["lambda0"].directory(results), made.directory(results)]
    j = labels.index("segmentation/r0.5-replace-lambda0-recombine-seed4")
    assert needs[j] == [render.directory(results)]
    assert all(not is_real_only(r) for r in layout_runs)

    # no synthetic metrics (nor sample grid) of new layouts: no real imagery of them
    assert plan.counts()["synthetic_metrics"] == 2 and plan.counts()["layouts"] == 1
    assert [s.label for s in plan.metric_stages(None)] == ["lambda0", "lambda2"]
    assert list(plan.tile_synthetic()) == ["lambda0", "lambda2"]


def test_without_layouts_nothing_changes(tmp_path: Path, toy_root: Path) -> None:
    plain = _plan(tmp_path, toy_root, "pipeline.seeds=[3]")
    both = _plan(tmp_path, toy_root, "pipeline.seeds=[3]", "pipeline.layouts=[recombine,learned]")
    assert "layouts" not in plain.waves and not plain.layouts
    # every stage of the plain study is in the study with layouts, with the same key
    for kind, stages in plain.waves.items():
        keys = {s.directory(plain.results) for s in both.waves[kind]}
        assert all(s.directory(plain.results) in keys for s in stages)
    assert [s.label for s in both.waves["synthesis"]][2:] == [
        "lambda0-recombine",
        "lambda2-recombine",
        "lambda0-learned",
        "lambda2-learned",
    ]  # null layout_lambdas: every lambda


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("pipeline.layouts=[recombin]", r"pipeline.layouts=\['recombin'\]"),
        ("pipeline.layouts=[learned,learned]", "at most once"),
        ("pipeline.layout_lambdas=[5.0]", r"layout_lambdas=\['5'\]: no generator"),
    ],
)
def test_bad_settings(tmp_path: Path, toy_root: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _plan(tmp_path, toy_root, "pipeline.layouts=[recombine]", override)


def test_the_dry_run_lists_them(tmp_path: Path, toy_root: Path) -> None:
    from synthsat.study.dry_run import describe_plan

    plan = _plan(tmp_path, toy_root, "pipeline.seeds=[3]", "pipeline.layouts=[recombine]")
    text = describe_plan(plan, "local", {})
    assert "wave 2 layouts: 1 stages (0 done): recombine" in text
    assert "wave 3 synthesis: 4 stages (0 done): lambda0, lambda2, lambda0-recombine, " in text


def _stage(root: Path, name: str, params: dict, miou: float) -> None:
    d = root / "segmentation" / name
    d.mkdir(parents=True)
    (d / "done.json").write_text(json.dumps({"kind": "segmentation", "params": params}))
    source = None if params["ratio"] == 0 else {"generator": "gan", "lambda_div": 0.0}
    (d / "metrics.json").write_text(json.dumps({"miou": miou, "synthetic_source": source}))


def test_the_report_labels_them_apart(tmp_path: Path) -> None:
    base = {"mode": "replace", "copies": 0, "generator": None}
    for seed in (0, 1):
        real = {**base, "ratio": 0.0, "lambda_div": None, "seed": seed}
        same = {**base, "ratio": 0.5, "lambda_div": 0.0, "seed": seed}
        new = {**same, "layouts": "recombine"}
        _stage(tmp_path, f"real{seed}", real, 0.5 + seed / 100)
        _stage(tmp_path, f"same{seed}", same, 0.52 + seed / 100)
        _stage(tmp_path, f"new{seed}", new, 0.55 + seed / 100)
    report = summarise(tmp_path).read_text()
    assert "| 50% synthetic | lambda_div = 0 | 0.5250 " in report
    assert "| 50% synthetic | lambda_div = 0, layouts = recombine | 0.5550 " in report
    rows = list(csv.DictReader((tmp_path / "summary.csv").read_text().splitlines()))
    assert {r["layouts"] for r in rows} == {"", "recombine"}
    back = read_summary(tmp_path / "summary.csv")
    assert sorted(r["source"] for r in back) == sorted(
        ["", "", "lambda_div = 0", "lambda_div = 0", *["lambda_div = 0, layouts = recombine"] * 2]
    )
    new_params = {**base, "ratio": 0.5, "lambda_div": 2.0, "layouts": "learned"}
    assert run_source(new_params) == source_label(new_params)
    assert source_label(new_params) == "lambda_div = 2, layouts = learned"
    ranks = sorted(["lambda_div = 2", "lambda_div = 0, layouts = recombine", "lambda_div = 0"])
    assert sorted(ranks, key=source_rank) == [
        "lambda_div = 0",
        "lambda_div = 0, layouts = recombine",
        "lambda_div = 2",
    ]
