"""W&B tracking: one offline run per job (multirun included), named and tagged by its
stage and parameters, holding the whole job config; read back from the run files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import (
    REPO,
    compose_job,
    tiny_generator_overrides,
    toy_data_overrides,
    toy_synthesize_overrides,
)
from PIL import Image
from test_mix_lambda import GAN2, _tile_folder
from wandb_offline import logged_images, offline_runs, read_run

from synthsat.data.toyworld import CLASSES
from synthsat.figures import palette, tile_preview, to_uint8
from synthsat.tracking import (
    finish_tracking,
    log_images,
    run_label,
    wandb_mode,
    wandb_settings,
)


def test_wandb_mode_offline_by_default_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert [wandb_mode(v) for v in (True, None, False)] == ["offline", "offline", "online"]
    monkeypatch.setenv("WANDB_MODE", "online")
    assert wandb_mode(True) == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode(False) == "disabled"


def test_float_images_become_uint8_scaled_to_255() -> None:
    """[0, 1] floats scale to 0..255 (rounded, clipped); uint8 passes through unchanged."""
    floats = np.array([[[0.0, 0.5, 1.0], [1.2, -0.1, 0.2]]], np.float32)
    np.testing.assert_array_equal(to_uint8(floats), [[[0, 128, 255], [255, 0, 51]]])
    assert to_uint8(floats).dtype == np.uint8
    ints = np.array([[[7, 8, 9]]], np.uint8)
    assert to_uint8(ints) is ints


class _ImageLogger:
    """A logger with ``log_image`` that renders what it gets as W&B would."""

    def __init__(self) -> None:
        self.logged: dict[str, list[Any]] = {}

    def log_image(self, key: str, images: list[Any], **kwargs: Any) -> None:
        import wandb

        self.logged[key] = [np.asarray(wandb.Image(i).image) for i in images]
        self.kwargs = kwargs


def test_logged_float_images_keep_their_pixels(tmp_path: Path) -> None:
    """A [0, 1] float image reaches W&B as the same picture in 0..255 (wandb alone casts
    floats to uint8 without scaling: every pixel 0), a PNG path as its own pixels, and a
    logger without ``log_image`` gets nothing."""
    from PIL import Image

    grey = np.full((4, 6, 3), 0.5, np.float32)
    grey[0, 0] = (1.0, 0.0, 0.25)
    png = tmp_path / "grid.png"
    Image.fromarray(np.full((2, 2, 3), 200, np.uint8)).save(png)
    logger = _ImageLogger()
    log_images(logger, "test/panels", [grey, str(png)], caption=["a", "b"], step=3)
    panel, grid = logger.logged["test/panels"]
    assert panel.dtype == np.uint8 and panel.shape == (4, 6, 3)
    assert panel[0, 0].tolist() == [255, 0, 64] and (panel[1:] == 128).all()
    assert (grid == 200).all()
    assert logger.kwargs == {"caption": ["a", "b"], "step": 3}
    log_images(object(), "test/panels", [grey])  # no log_image: nothing to do, no error


def test_run_label_names_the_stage_and_its_parameters() -> None:
    assert run_label("seg", {"ratio": 0.5, "lambda_div": 2.0, "seed": 1}) == (
        "seg r0.5 λ2 s1",
        ["seg", "ratio=0.5", "lambda_div=2", "seed=1"],
    )
    assert run_label("seg", {"ratio": 0.0, "lambda_div": None, "seed": 0}) == (
        "seg r0 s0",
        ["seg", "ratio=0", "seed=0"],
    )
    assert run_label("seg", {"ratio": 1.0, "generator": "classtexture", "seed": 2})[0] == (
        "seg r1 classtexture s2"
    )
    assert run_label("gen", {"lambda_div": 0.5, "seed": 0})[0] == "gen λ0.5 s0"


def test_offline_false_goes_online_and_names_come_from_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``logger.wandb.offline=false`` reaches wandb.init as mode online (Lightning's own
    offline flag stays False: it would set WANDB_MODE for the rest of the process); a
    name set in the config wins over the run's."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = compose_job(
        "train_segmentation",
        [
            f"paths.root={tmp_path}",
            f"paths.output_dir={tmp_path / 'run'}",
            "logger=wandb",
            "logger.wandb.offline=false",
            "logger.wandb.tags=[mine]",
            "mix.ratio=0.5",
        ],
    )
    run = {"name": "seg r0.5 s0", "tags": ["seg"], "config": {"lambda_div": None}}
    settings = wandb_settings(cfg, cfg.logger.wandb, run)
    assert (settings["offline"], settings["mode"]) == (False, "online")
    assert (settings["name"], settings["tags"]) == ("seg r0.5 s0", ["mine", "seg"])
    assert settings["job_type"] == "train_segmentation"
    assert settings["config"]["mix"]["ratio"] == 0.5 and settings["config"]["lambda_div"] is None
    assert settings["config"]["paths"]["output_dir"] == str(tmp_path / "run")
    cfg.logger.wandb.name = "mine"
    assert wandb_settings(cfg, cfg.logger.wandb, run)["name"] == "mine"
    assert "WANDB_MODE" not in os.environ


def test_segmentation_multirun_logs_one_named_run_per_job(toy_root: Path, tmp_path: Path) -> None:
    """``-m mix.ratio=0,1`` in one process: two offline runs (the default, without
    WANDB_MODE), each with its name, tags, group, job type, the whole job config with the
    source's lambda_div, the test mIoU, the confusion matrix and prediction panels."""
    synthesis = tmp_path / "study" / "synthesis"
    record = {"checkpoint": "/x/last.ckpt", "chip_size": 32, "overlap": 16, "lambda_div": 2.0}
    _tile_folder(toy_root, tmp_path / "study" / GAN2, record, 200)
    sweep = tmp_path / "sweep"
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "synthsat.train_segmentation",
            "-m",
            "mix.ratio=0,1",
            "mix.lambda_div=2",
            f"mix.source={synthesis}",
            "seed=1",
            "logger=wandb",
            "experiment_name=toy",
            f"hydra.sweep.dir={sweep}",
            f"paths.root={tmp_path}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            *toy_data_overrides(toy_root),
            "segmentation=tiny",
            "trainer.max_steps=2",
            "data.patch_size=64",
            "data.patches_per_epoch=240",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = offline_runs(sweep)
    assert [r.parents[1].name for r in runs] == ["0", "1"]  # one run in each job's folder
    for job, ratio in enumerate((0, 1)):
        run = read_run(runs[job])
        saved = json.loads((sweep / str(job) / "metrics.json").read_text())
        assert run["name"] == f"seg r{ratio} λ2 s1"
        assert run["tags"] == ["seg", f"ratio={ratio}", "lambda_div=2", "seed=1"]
        assert (run["group"], run["job_type"]) == ("toy", "train_segmentation")
        config = run["config"]
        assert config["mix"] == {
            "ratio": ratio,
            "mode": "replace",
            "source": str(synthesis),
            "lambda_div": 2,
            "copies": 1,
            "layouts": None,  # training layouts (mix.layouts: a folder of new layouts)
        }
        assert config["seed"] == 1 and config["experiment_name"] == "toy"
        assert config["data"]["source"]["root"] == str(toy_root)
        assert config["segmentation"]["backbone"] == saved["encoder"]
        assert config["lambda_div"] == 2.0
        assert config["synthetic_source"] == {
            "generator": "gan",
            "lambda_div": 2.0,
            "checkpoint": "/x/last.ckpt",
        }
        summary = run["summary"]
        assert summary["test/miou"] == pytest.approx(saved["miou"], abs=1e-6)
        assert summary["test/confusion_matrix_table"]["_type"] == "table-file"
        assert summary["test/confusion_matrix_table"]["nrows"] == sum(
            1 for row in saved["confusion_matrix"] for n in row if n
        )
        panels = summary["test/panels"]
        assert (panels["_type"], panels["count"]) == ("images/separated", 1)  # 1 test chip
        (panel,) = logged_images(runs[job], panels)  # image | gap | truth | gap | prediction
        assert panel.shape == (128, 3 * 128 + 4, 3)
        assert (panel[:, 128:130] == 255).all() and (panel[:, 258:260] == 255).all()
        colours = {tuple(c) for c in to_uint8(palette(len(CLASSES), 0)).tolist()}
        truth = {tuple(c) for c in panel[:, 130:258].reshape(-1, 3).tolist()}
        assert truth <= colours and len(truth) >= 2  # the toy classes in their colours
        assert len(np.unique(panel[:, :128])) > 16  # a stretched image, not a black one
        assert (
            config["_wandb"]["visualize"]["test/confusion_matrix"]["panel_config"]["panelDefId"]
            == "wandb/confusion_matrix/v1"
        )


# a 2-batch epoch is shorter than Lightning's logging interval; the test reads the grids
@pytest.mark.filterwarnings("ignore:The number of training batches .* is smaller than the logging")
def test_generator_run_logs_sample_grids_at_start_intervals_and_end(
    toy_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3 steps, a grid every 2: grids at steps 1 (start), 2 and 3 (end), in the run
    folder and as W&B images of the run ``gen λ0 s0``."""
    from synthsat.jobs.train_generator import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = [
        o for o in tiny_generator_overrides(toy_root, tmp_path, "gen") if o != "logger=none"
    ]
    cfg = compose_job(
        "train_generator",
        [
            *overrides,
            "generator.nef=4",
            "generator.num_D=1",
            "logger=wandb",
            "trainer.max_steps=3",
            "callbacks.samples.every_n_steps=2",
            "callbacks.samples.rows=2",
            "callbacks.samples.samples=1",
        ],
    )
    try:
        train(cfg)
    finally:
        finish_tracking()
    grids = sorted(p.name for p in (tmp_path / "gen" / "samples").glob("*.png"))
    assert grids == ["step_000001.png", "step_000002.png", "step_000003.png"]
    (folder,) = offline_runs(tmp_path / "gen")
    run = read_run(folder)
    assert run["name"] == "gen λ0 s0" and run["tags"] == ["gen", "lambda_div=0", "seed=0"]
    assert (run["group"], run["job_type"]) == ("default", "train_generator")
    assert run["config"]["generator"]["lambda_div"] == 0 and run["config"]["seed"] == 0
    steps = [row["trainer/global_step"] for row in run["history"] if "samples" in row]
    assert steps == [1, 2, 3]
    assert run["summary"]["samples"]["_type"] == "images/separated"
    (logged,) = logged_images(folder, run["summary"]["samples"])  # the last grid, as drawn
    drawn = np.asarray(Image.open(tmp_path / "gen" / "samples" / "step_000003.png").convert("RGB"))
    np.testing.assert_array_equal(logged, drawn)
    assert drawn.max() > 0


def test_synthesis_run_logs_throughput_and_previews(
    toy_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A classtexture synthesis of the 2 training masks (128 px, 1 sample each): the run
    ``synth classtexture s3`` logs 2 tiles, 0.032768 Mpx, its seconds and rate, and 2
    previews."""
    from synthsat.jobs.synthesize import run as synthesize

    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "run" / "tiles"
    cfg = compose_job(
        "synthesize",
        [
            *toy_synthesize_overrides(toy_root, tmp_path),
            "logger=wandb",
            "experiment_name=toy",
            "method=classtexture",
            f"out={out}",
            "seed=3",
            "classtexture.patch_size=32",
        ],
    )
    try:
        result = synthesize(cfg)
    finally:
        finish_tracking()
    (folder,) = offline_runs(tmp_path / "run")
    run = read_run(folder)
    assert run["name"] == "synth classtexture s3"
    assert run["tags"] == ["synth", "generator=classtexture", "seed=3"]
    assert (run["group"], run["job_type"]) == ("toy", "synthesize")
    assert run["config"]["method"] == "classtexture" and run["config"]["samples"] == 1
    assert run["config"]["synthetic_source"]["generator"] == "classtexture"
    summary = run["summary"]
    assert summary["synthesis/tiles"] == 2 and summary["synthesis/skipped"] == 0
    assert summary["synthesis/mpx"] == pytest.approx(2 * 128 * 128 / 1e6)
    assert summary["synthesis/seconds"] == pytest.approx(result["seconds"])
    assert summary["synthesis/mpx_per_s"] == pytest.approx(0.032768 / result["seconds"])
    previews = summary["synthesis/previews"]
    assert (previews["_type"], previews["count"]) == ("images/separated", 2)
    tiles = sorted(out.glob("*.tif"))
    for image, tile in zip(logged_images(folder, previews), tiles, strict=True):
        expected = to_uint8(tile_preview(tile, [0, 1, 2]))  # the tile, stretched, in 0..255
        np.testing.assert_array_equal(image, expected)
        assert expected.max() == 255 and expected.min() == 0


def test_report_logs_the_summary_table_to_a_report_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pipeline's report step: summary.csv as a table of a ``report`` run in
    ``<results>/report/wandb``, numbers as numbers, empty cells as None."""
    from omegaconf import OmegaConf

    from synthsat.jobs.pipeline import _cell, track_report

    monkeypatch.setenv("WANDB_MODE", "offline")
    results = tmp_path / "results" / "toy"
    results.mkdir(parents=True)
    (results / "summary.csv").write_text(
        "lambda_div,generator,ratio,seed,miou\n,none,0.0,0,0.41\n2.0,gan,0.5,0,0.43\n"
    )
    assert [_cell(c) for c in ("", "gan", "0.5")] == [None, "gan", 0.5]
    settings = {"wandb": {"project": "synthsat-test", "offline": True}}
    cfg = OmegaConf.create(
        {"experiment_name": "toy", "pipeline": {"logger": "wandb"}, "report_logger": settings}
    )
    track_report(cfg, results)
    (folder,) = offline_runs(results / "report")
    run = read_run(folder)
    assert (run["name"], run["tags"], run["group"], run["job_type"]) == (
        "report",
        ["report"],
        "toy",
        "report",
    )
    assert run["config"]["pipeline"] == {"logger": "wandb"}
    assert run["project"] == "synthsat-test"  # the composed report_logger's, not a file's
    composed = compose_job("pipeline", ["experiment=demo", "report_logger.wandb.project=p"])
    assert (composed.report_logger.wandb.project, composed.report_logger.wandb.offline) == (
        "p",
        True,
    )
    table = run["summary"]["report/summary"]
    assert (table["_type"], table["nrows"], table["ncols"]) == ("table-file", 2, 5)
    (saved,) = (folder / "files").glob("media/table/report/summary_*.table.json")
    assert json.loads(saved.read_text())["data"] == [
        [None, "none", 0.0, 0.0, 0.41],
        [2.0, "gan", 0.5, 0.0, 0.43],
    ]
    track_report(
        OmegaConf.create({"experiment_name": "toy", "pipeline": {"logger": "csv"}}), results
    )
    assert len(offline_runs(results / "report")) == 1  # csv: no W&B run
