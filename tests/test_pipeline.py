"""The study pipeline end to end on a tiny toy world: stages, skip-on-rerun, report,
and offline wandb tracking."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest


def _list(items: list[str]) -> str:
    return "[" + ",".join(f'"{i}"' for i in items) + "]"


def run_pipeline(root: Path) -> subprocess.CompletedProcess:
    data = [
        f"data.source.root={root}/data/tiny",
        "data.source.tiles=3",
        "data.source.size=128",
        "data.num_workers=0",
    ]
    overrides = [
        "experiment=demo",
        f"paths.root={root}",
        f"hydra.run.dir={root}/outputs/pipeline",
        "pipeline.lambdas=[0.0]",
        "pipeline.ratios=[0.0,1.0]",
        "pipeline.samples=2",
        "pipeline.jobs=2",  # stages side by side (each with one thread)
        f"pipeline.data_overrides={_list(data)}",
        "pipeline.generator_overrides="
        + _list(["generator=cpu", "generator.patch_size=32", "trainer.max_steps=2"]),
        "pipeline.segmentation_overrides="
        + _list(
            [
                "segmentation=tiny",
                "data.patch_size=64",
                "trainer.max_steps=2",
                "data.patches_per_epoch=8",
                "data.eval_chip_size=64",
            ]
        ),
        "pipeline.synthetic_metric_overrides=" + _list(["chip_size=64", "max_chips=4"]),
    ]
    return subprocess.run(
        [sys.executable, "-m", "synthsat.pipeline", *overrides],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("study")
    return root, run_pipeline(root)


def test_pipeline_runs_every_stage_and_reports(
    study: tuple[Path, subprocess.CompletedProcess],
) -> None:
    root, proc = study
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = root / "results" / "demo"
    for kind in ("generator", "synthesis", "segmentation", "synthetic_metrics"):
        assert list((results / kind).glob("*/done.json")), f"no finished {kind} stage"
    tiles = list((results / "synthesis").glob("*/tiles/*_s1.tif"))
    assert tiles, "synthesis wrote no second sample"
    rows = list(csv.DictReader((results / "summary.csv").read_text().splitlines()))
    assert sorted(float(r["ratio"]) for r in rows) == [0.0, 1.0]
    assert all(0.0 <= float(r["miou"]) <= 1.0 for r in rows)
    report = (results / "report.md").read_text()
    assert "real-only" in report and "synthetic-only" in report
    assert "diversity_l1" in report
    assert "## Per-class IoU (mean over seeds)" in report
    assert "consistency_miou" in report  # the real-only model reached the metric stage
    for png in ("miou_vs_ratio.png", "sample_grid.png", "fidelity_diversity.png"):
        assert (results / png).stat().st_size > 1000
    # Every stage directory holds its resolved config.
    for done in results.glob("*/*/done.json"):
        assert (done.parent / "config.yaml").exists()


def test_wandb_offline_tracking(study: tuple[Path, subprocess.CompletedProcess]) -> None:
    root, proc = study
    assert proc.returncode == 0
    seg = next((root / "results" / "demo" / "segmentation").glob("r0-*"))
    runs = list(seg.glob("wandb/offline-run-*/run-*.wandb"))
    assert runs, "no offline wandb run (wandb sync-able) in the stage directory"
    log = runs[0].read_bytes()  # protobuf records: keys are stored as plain UTF-8
    for key in (b"test/miou", b"test/iou_no_data", b"val/loss", b"train/loss", b"mix", b"seed"):
        assert key in log, f"{key!r} not logged"
    assert b"train_segmentation" in log  # job type = stage; group = experiment (demo)
    assert b"demo" in log


def test_rerun_skips_finished_stages(study: tuple[Path, subprocess.CompletedProcess]) -> None:
    root, first = study
    assert first.returncode == 0
    proc = run_pipeline(root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[pipeline] run " not in proc.stdout
    assert proc.stdout.count("[pipeline] skip") == 5
    # the study's wall time adds up the pipeline runs; stage time comes from done.json
    timing = json.loads((root / "results" / "demo" / "timing.json").read_text())
    first, second = timing["runs"]
    assert first["ran"] == 5 and second == {**second, "ran": 0, "skipped": 5}
    assert timing["total_s"] == first["wall_s"] + second["wall_s"]
    assert timing["stages"]["segmentation"] > 0
    assert "over 2 pipeline run(s)" in (root / "results" / "demo" / "report.md").read_text()
