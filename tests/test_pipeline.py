"""The study pipeline end to end on a tiny toy world: stages, skip-on-rerun, report,
and offline wandb tracking."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from wandb_offline import offline_runs, read_run


def _list(items: list[str]) -> str:
    return "[" + ",".join(f'"{i}"' for i in items) + "]"


def run_pipeline(root: Path, *extra: str) -> subprocess.CompletedProcess:
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
        *extra,
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


def check_scores(root: Path, results: Path, rows: list[dict[str, str]], report: str) -> None:
    """Every segmentation stage's scores, recomputed from its confusion matrix, and the
    matrix itself against the test tile: the numbers the report carries must be these."""
    data = root / "data" / "tiny"
    (test_tile,) = json.loads((data / "splits.json").read_text())["test"]
    with rasterio.open(data / "masks" / f"{test_tile}.tif") as src:
        test_mask = src.read(1)
    labels = np.bincount(test_mask.ravel(), minlength=7)
    labels[0] = 0  # no-data (the ignore index) is scored nowhere
    stages = sorted((results / "segmentation").glob("*/metrics.json"))
    assert len(stages) == len(rows) == 2
    for path in stages:
        m = json.loads(path.read_text())
        cm = np.asarray(m["confusion_matrix"], dtype=np.float64)
        assert m["scored_classes"] == [1, 2, 3, 4, 5, 6]
        # rows = true classes: every labelled test pixel counted once, no-data never
        np.testing.assert_array_equal(cm.sum(1), labels)
        assert m["scored_pixels"] == labels.sum()
        tp = np.diag(cm)
        union = cm.sum(0) + cm.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
        scored = iou[m["scored_classes"]]
        miou = float(np.nanmean(scored))
        assert m["miou"] == pytest.approx(miou, abs=1e-12)
        assert m["pixel_accuracy"] == pytest.approx(tp[1:].sum() / labels.sum(), abs=1e-12)
        for c, name in enumerate(m["classes"]):  # NaN (nothing to score) is written as null
            got = m["iou"][name]
            assert np.isnan(iou[c]) if got is None else got == pytest.approx(iou[c], abs=1e-12)
        # summary.csv carries the same numbers for this run
        params = json.loads((path.parent / "done.json").read_text())["params"]
        (row,) = [r for r in rows if float(r["ratio"]) == float(params["ratio"])]
        assert float(row["miou"]) == pytest.approx(miou, abs=1e-12)
        per_class = [float(row[f"iou/{m['classes'][c]}"] or "nan") for c in m["scored_classes"]]
        np.testing.assert_allclose(per_class, scored, atol=1e-12)
        assert float(row["miou"]) == pytest.approx(float(np.nanmean(per_class)), abs=1e-12)
        # and so do the report's tables (one seed: the values themselves, no spread)
        overall, per_class_table = report.split("## Per-class IoU")
        start = f"| {row['label']} | "
        line = next(ln for ln in overall.splitlines() if ln.startswith(start))
        assert line.split(" | ")[2] == f"{miou:.4f}", line
        line = next(ln for ln in per_class_table.splitlines() if ln.startswith(start))
        assert line.strip(" |").split(" | ")[2:] == [f"{v:.3f}" for v in scored], line


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
    report = (results / "report.md").read_text()
    check_scores(root, results, rows, report)
    assert "real-only" in report and "synthetic-only" in report
    assert "diversity_l1" in report
    assert "## Per-class IoU (mean over seeds)" in report
    assert "consistency_miou" in report  # the real-only model reached the metric stage
    for png in ("miou_vs_ratio.png", "sample_grid.png", "fidelity_diversity.png"):
        assert (results / png).stat().st_size > 1000
    # Every stage directory holds its resolved config.
    for done in results.glob("*/*/done.json"):
        assert (done.parent / "config.yaml").exists()
    # Each stage ran as a job of submitit's local executor (the default): one job folder
    # per stage, its id on the stage's line.
    stages = list(results.glob("*/*/done.json"))
    jobs = re.findall(r"^\[pipeline\] run  \S+ \[\d+/\d+\]: .* \(job (\d+)\)$", proc.stdout, re.M)
    assert len(jobs) == len(stages) == 5  # generator, synthesis, 2 segmentation, metrics
    assert all((results / ".submitit" / job).is_dir() for job in jobs)


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

    # one run per stage and one for the report, named by stage and parameters
    runs = [read_run(f) for f in offline_runs(root / "results" / "demo")]
    assert {r["name"]: r["job_type"] for r in runs} == {
        "gen λ0 s0": "train_generator",
        "synth λ0 s0": "synthesize",
        "seg r0 s0": "train_segmentation",
        "seg r1 λ0 s0": "train_segmentation",
        "synmetrics λ0": "evaluate_synthetic",
        "report": "report",
    }
    assert {r["group"] for r in runs} == {"demo"}
    named = {r["name"]: r for r in runs}
    gen_grids = [
        row["trainer/global_step"] for row in named["gen λ0 s0"]["history"] if "samples" in row
    ]
    assert gen_grids == [1, 2]  # after the first step and at the end (2 steps)
    assert named["synth λ0 s0"]["summary"]["synthesis/tiles"] == 2  # 1 train tile x 2 samples
    seg = named["seg r1 λ0 s0"]
    assert seg["config"]["synthetic_source"]["lambda_div"] == 0.0
    assert seg["summary"]["test/panels"]["count"] == 4  # the 4 chips of the test tile
    assert seg["summary"]["test/confusion_matrix_table"]["_type"] == "table-file"
    assert named["report"]["summary"]["report/summary"]["nrows"] == 2


def test_the_dry_run_of_a_finished_study_finds_every_stage_done(
    study: tuple[Path, subprocess.CompletedProcess],
) -> None:
    """The plan names the same stage directories as the run (the metric stages' with the
    real-only checkpoint the run used), and runs nothing."""
    root, first = study
    assert first.returncode == 0
    before = sorted(p.name for p in (root / "results" / "demo").rglob("*"))
    proc = run_pipeline(root, "pipeline.dry_run=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    waves = [line for line in proc.stdout.splitlines() if line.startswith("wave ")]
    assert [w.split(": ")[1].split(")")[0] for w in waves] == [
        "1 stages (1 done",
        "1 stages (1 done",
        "2 stages (2 done",
        "1 stages (1 done",
    ]
    assert sorted(p.name for p in (root / "results" / "demo").rglob("*")) == before


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


def test_report_with_a_class_that_has_nothing_to_score(tmp_path: Path) -> None:
    """A scored class absent from the test tiles and never predicted has IoU NaN, written as
    null: the report shows it as nan instead of failing (it raised TypeError before)."""
    from synthsat.metrics.segmentation import write_metrics
    from synthsat.report import summarise

    for ratio, lam, water in ((0.0, None, 0.5), (1.0, 0.0, 0.25)):
        stage = tmp_path / "segmentation" / f"r{ratio}"
        stage.mkdir(parents=True)
        params = {"ratio": ratio, "mode": "replace", "copies": 0, "lambda_div": lam, "seed": 0}
        (stage / "done.json").write_text(json.dumps({"kind": "segmentation", "params": params}))
        iou = {"no-data": float("nan"), "water": water, "land": float("nan")}
        write_metrics(
            stage / "metrics.json",
            {
                "miou": water,
                "iou": iou,
                "pixel_accuracy": 0.9,
                "classes": ["no-data", "water", "land"],
                "scored_classes": [1, 2],
            },
        )
    summarise(tmp_path)
    report = (tmp_path / "report.md").read_text()
    per_class = report.split("## Per-class IoU")[1]
    assert "| real-only | — | 0.500 | nan |" in per_class
    assert "| synthetic-only | lambda_div = 0 | 0.250 | nan |" in per_class
    assert "| real-only | — | 0.5000 | 1 |" in report.split("## Per-class IoU")[0]
    rows = list(csv.DictReader((tmp_path / "summary.csv").read_text().splitlines()))
    assert [(r["iou/water"], r["iou/land"]) for r in rows] == [("0.5", ""), ("0.25", "")]
