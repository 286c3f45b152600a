"""Stage keys that survive a move and an edit (issue 24, deliverable 8: a study runs in
parts on different machines, and a finished stage's committed record is skipped there).

A stage's folder is named by a hash of its module, overrides and composed config. The
study's results folder is written as a token in that hash, so the same study keys its
stages alike in any checkout. Stages finished under the keys of earlier commits (absolute
paths, configs before a3b8a58: :func:`~synthsat.stages.legacy_config`) are still found,
so the committed Dubai records keep their names.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from synthsat import config_dir
from synthsat.plan import study_plan
from synthsat.stages import Stage

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "experiments" / "dubai_curve" / "steps11520" / "stages"
CURVE_LONG = ["pipeline.seeds=[0,1,2,3,4]", "pipeline.steps=[11520]"]


@pytest.fixture(autouse=True)
def _hydra() -> Iterator[None]:
    with initialize_config_dir(config_dir(), version_base="1.3"):
        yield


def _stages(root: Path, *overrides: str) -> tuple[Path, list[Stage]]:
    plan = study_plan(compose("pipeline", overrides=[f"paths.root={root}", *overrides]), "dubai")
    return plan.results, [s for wave in plan.waves.values() for s in wave]


def test_a_study_keys_its_stages_alike_wherever_its_results_lie(tmp_path: Path) -> None:
    """Two checkouts of one study: the synthesis stage (its ``ckpt=`` names the
    generator's folder) and the mixed run (its ``mix.source=`` the tiles) carry their
    absolute paths in their overrides, yet their folders have the same names."""
    study = ["experiment=dubai_curve_long", *CURVE_LONG]
    res_a, a = _stages(tmp_path / "a", *study)
    res_b, b = _stages(tmp_path / "b", *study)
    assert res_a != res_b and len(a) == len(b) == 12
    with_paths = [s for s in a if any(str(res_a) in o for o in s.overrides)]
    assert {s.kind for s in with_paths} == {"synthesis", "segmentation"}
    for sa, sb in zip(a, b, strict=True):
        assert sa.directory(res_a).relative_to(res_a) == sb.directory(res_b).relative_to(res_b)
    for sa, sb in zip(with_paths, [b[a.index(s)] for s in with_paths], strict=True):
        assert sa.key != sb.key  # the absolute-path key would differ


def test_a_stage_finished_under_its_absolute_path_key_is_still_found(tmp_path: Path) -> None:
    stage = Stage("synthesis", "lambda0", "synthsat.synthesize", [f"ckpt={tmp_path}/g/last.ckpt"])
    new = tmp_path / "synthesis" / f"lambda0-{stage.key_in(tmp_path)}"
    legacy = tmp_path / "synthesis" / f"lambda0-{stage.key}"
    assert new != legacy
    assert stage.directory(tmp_path) == new  # nothing finished: the new name
    legacy.mkdir(parents=True)
    assert stage.directory(tmp_path) == new  # begun, never finished: not resumed
    (legacy / "done.json").write_text("{}")
    assert stage.directory(tmp_path) == legacy
    new.mkdir(parents=True)
    (new / "done.json").write_text("{}")
    assert stage.directory(tmp_path) == new  # both: the new one


def test_the_committed_dubai_records_keep_their_names(tmp_path: Path) -> None:
    """The generator and the five real-only runs at the 11520 cap, committed under
    ``experiments/dubai_curve/steps11520/stages``, were keyed before ``traceback`` was
    renamed from ``debug``, ``paths.shared_dir`` followed ``SYNTHSAT_SHARED`` and
    ``synthesize`` had ``scale``: their legacy keys are the committed names."""
    _, stages = _stages(tmp_path, "experiment=dubai_curve_long", *CURVE_LONG)
    names = {f"{s.kind}/{s.label}-{key}" for s in stages for key in s.legacy_keys()}
    committed = {
        f"{p.parent.name}/{p.name}"
        for p in COMMITTED.glob("*/*")
        if p.is_dir() and "steps1440" not in p.name
    }
    pathless = {n for n in committed if n.startswith(("generator/", "segmentation/r0-"))}
    assert len(pathless) == 6
    assert pathless <= names
    results = tmp_path / "results"
    for stage in stages:
        name = next((n for n in pathless if n.startswith(f"{stage.kind}/{stage.label}-")), None)
        if name is None:
            continue
        assert stage.directory(results) != results / name  # nothing there yet
        (results / name).mkdir(parents=True)
        (results / name / "done.json").write_text("{}")
        assert stage.directory(results) == results / name  # copied in: skipped
