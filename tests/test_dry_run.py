"""The study's dry run in seconds (issue 28 row 6): a plan's stages of a kind share one
Hydra compose (:func:`~synthsat.stages.compose_cache`) with unchanged configs and keys,
and ``pipeline.dry_run=true`` prints the plan (no YAML dump) with its device hours."""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from synthsat import config_dir
from synthsat.plan import study_plan
from synthsat.stages import RENAMED_KEYS, UNSET_KEYS, Stage

_ABSENT = object()


@pytest.fixture(autouse=True)
def _hydra() -> Iterator[None]:
    with initialize_config_dir(config_dir(), version_base="1.3"):
        yield


def _reference_config(stage: Stage) -> str:
    """A stage's composed config as it was computed before the compose cache: a full
    Hydra compose of its own overrides, dumped by ``OmegaConf.to_yaml`` (the unset keys
    taken out of a plain copy, the renamed keys under their old names)."""
    cfg = compose(config_name=stage.module.rsplit(".", 1)[-1], overrides=stage.overrides)
    plain: Any = OmegaConf.to_container(cfg, resolve=False)
    for key, value in UNSET_KEYS.items():
        if OmegaConf.select(cfg, key, default=_ABSENT, throw_on_resolution_failure=False) != value:
            continue
        *parents, last = key.split(".")
        node = plain
        for part in parents:
            node = node[part]
        del node[last]
    for key, old_name in RENAMED_KEYS.items():
        *parents, last = key.split(".")
        node = plain
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and last in node:
            items = list(node.items())
            node.clear()
            node.update({old_name if k == last else k: v for k, v in items})
    return OmegaConf.to_yaml(OmegaConf.create(plain), resolve=False)


@pytest.mark.parametrize(
    ("experiment", "data", "extra"),
    [
        ("paper", "chesapeake", ["pipeline.lambdas=[0.0]", "pipeline.ratios=[0.0,0.5]"]),
        (
            "dubai",
            "dubai",
            [
                "pipeline.lambdas=[0.0]",
                "pipeline.ratios=[0.0,0.5]",
                "pipeline.layouts=[recombine]",
                "pipeline.steps=[100]",
            ],
        ),
    ],
)
def test_a_shared_compose_keeps_every_stage_config_and_key(
    tmp_path: Path, experiment: str, data: str, extra: list[str]
) -> None:
    """Generators, layouts, syntheses (a control's and a rendering of new layouts),
    segmentation runs and synthetic metrics: each stage's config is the full compose's."""
    overrides = [f"experiment={experiment}", f"paths.root={tmp_path}", "pipeline.seeds=[0]"]
    plan = study_plan(compose("pipeline", overrides=[*overrides, *extra]), data)
    stages = [s for wave in plan.waves.values() for s in wave] + plan.metric_stages("x.ckpt")
    assert {s.kind for s in stages} >= {"generator", "synthesis", "segmentation"}
    for stage in stages:
        before = Stage(stage.kind, stage.label, stage.module, stage.overrides, stage.params)
        before.config = _reference_config(stage)
        assert (stage.config, stage.key) == (before.config, before.key), stage.label


def test_a_stage_pickles_without_its_composed_config(tmp_path: Path) -> None:
    plan = study_plan(
        compose("pipeline", overrides=["experiment=demo", f"paths.root={tmp_path}"]), "toyworld"
    )
    stage = plan.waves["generator"][0]
    assert stage.composed is not None
    back = pickle.loads(pickle.dumps(stage))
    assert back.composed is None and (back.config, back.key) == (stage.config, stage.key)
    assert back.composed_cfg().trainer == stage.composed_cfg().trainer  # read back


def _pipeline(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``python -m synthsat.pipeline experiment=paper pipeline.dry_run=true`` in ``tmp_path``."""
    args = ["experiment=paper", "pipeline.dry_run=true", f"paths.root={tmp_path}", *extra]
    return subprocess.run(
        [sys.executable, "-m", "synthsat.pipeline", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )


def test_the_paper_dry_run_prints_its_plan_and_device_hours_in_seconds(tmp_path: Path) -> None:
    """All 237 stages of ``experiment=paper``: the plan is the first thing printed (the
    config only with Hydra's ``--cfg``), with device hours from ``pipeline.estimate``.
    How long it takes is measured by ``benchmarks/dry_run.py``, not here."""
    proc = _pipeline(
        tmp_path,
        "pipeline.estimate.device=made-up",
        "pipeline.estimate.step_s.generator=0.5",
        "pipeline.estimate.step_s.segmentation=0.01",
        "pipeline.estimate.stage_s.synthesis=600",
        "pipeline.estimate.stage_s.synthetic_metrics=60",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if not line.startswith("Seed set")]
    assert lines[0].startswith("[dry run] 237 jobs in 4 waves on the local executor")
    assert "results_dir:" not in proc.stdout and "lambdas:" not in proc.stdout  # no YAML dump
    # 6 x 5000 generator steps x 0.5 s + 6 x 600 s + at most 21.9 M steps x 0.01 s + 6 x 60 s
    assert "  device time: 4.2 h (30000 steps x 0.5 s (pipeline.estimate, made-up)" in lines[2]
    total = (30000 * 0.5 + 6 * 600 + 21_900_000 * 0.01 + 6 * 60) / 3600
    assert lines[-1] == f"total: 237 jobs, {total:.1f} device hours"


def test_the_dry_run_prints_the_config_only_with_cfg(tmp_path: Path) -> None:
    proc = _pipeline(tmp_path, "--cfg", "job")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"^  results_dir: ", proc.stdout, re.M)
    assert "[dry run]" not in proc.stdout  # --cfg prints the config and runs nothing
