"""A study whose only synthetic source is a control generator (classtexture): it is
synthesised without training, gets the replace and add runs of a lambda, and the report
pairs its runs with real-only by seed."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from test_pipeline import _list

from synthsat.study.grid import seg_label


def test_control_generator_study(tmp_path: Path) -> None:
    data = [
        f"data.source.root={tmp_path}/data/tiny",
        "data.source.tiles=3",
        "data.source.size=128",
        "data.num_workers=0",
    ]
    overrides = [
        "experiment=demo",
        f"paths.root={tmp_path}",
        f"hydra.run.dir={tmp_path}/outputs/pipeline",
        "pipeline.lambdas=[]",
        "pipeline.controls=[classtexture]",
        "pipeline.control_overrides=" + _list(["classtexture.patch_size=16"]),
        "pipeline.ratios=[0.0,1.0]",
        "pipeline.copies=[1]",
        "pipeline.add_ratio=0.0",
        "pipeline.seeds=[0,1]",
        "pipeline.logger=csv",
        "pipeline.synthetic_metrics=false",
        f"pipeline.data_overrides={_list(data)}",
        "pipeline.segmentation_overrides="
        + _list(
            [
                "segmentation=tiny",
                "data.patch_size=64",
                "data.scale=0.5",
                "trainer.max_steps=2",
                "data.patches_per_epoch=8",
                "data.eval_chip_size=64",
                "segmentation.scheduler=cosine",
            ]
        ),
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "synthsat.pipeline", *overrides],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = tmp_path / "results" / "demo"
    (synthesis,) = (results / "synthesis").glob("classtexture-*/tiles")
    manifest = json.loads((synthesis / "manifest.json").read_text())
    assert {r["generator"] for r in manifest["outputs"]} == {"classtexture"}
    assert not (results / "generator").exists()  # nothing was trained
    labels = sorted(
        json.loads(p.read_text())["label"] for p in results.glob("segmentation/*/done.json")
    )
    expected = [
        seg_label(r, m, k, None, s, g)
        for s in (0, 1)
        for r, m, k, g in [
            (0.0, "replace", 0, None),
            (1.0, "replace", 0, "classtexture"),
            (0.0, "add", 1, "classtexture"),
        ]
    ]
    assert labels == sorted(expected)
    # the add run trains on the real tiles and a synthetic copy of each
    add = next(results.glob("segmentation/r0-addx1-classtexture-seed0-*"))
    mix = json.loads((add / "metrics.json").read_text())["mix"]
    assert mix["mode"] == "add" and mix["ratio"] == 0 and mix["source"] == str(synthesis)
    with open(results / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["generator"] for r in rows) == ["classtexture"] * 4 + ["none"] * 2
    report = (results / "report.md").read_text()
    assert "classtexture" in report and "/2 |" in report  # improved k/2 over the 2 seeds
