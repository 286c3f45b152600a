"""The study's stages: thread sharing, stage keys, and the arms every source gets."""

from __future__ import annotations

import shutil
from pathlib import Path

from omegaconf import OmegaConf

from synthsat.plan import seg_label, segmentation_runs, source_name
from synthsat.stages import stage_threads


def test_threads_are_shared_among_jobs() -> None:
    assert stage_threads(4, 2) == 2
    assert stage_threads(1, 2) == 1
    assert stage_threads(4, 1) is None  # one job: it inherits the study's SYNTHSAT_THREADS


def test_stage_key_follows_the_composed_config(tmp_path: Path) -> None:
    """Editing a preset file changes the stage's key, so the stage reruns."""
    from hydra import initialize_config_dir

    from synthsat.stages import make_stage

    conf = tmp_path / "conf"
    shutil.copytree(Path(__file__).resolve().parents[1] / "conf", conf)

    def key() -> str:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            stage = make_stage("segmentation", "r0", "synthsat.train_segmentation", ["seed=0"], {})
        assert "encoder_name" in stage.config  # the preset's content, not just overrides
        return stage.key

    before = key()
    assert key() == before
    preset = conf / "segmentation" / "cpu.yaml"
    text = preset.read_text()
    assert "lr: 1.0e-3" in text
    preset.write_text(text.replace("lr: 1.0e-3", "lr: 2.0e-3"))
    assert key() != before


def test_stage_keys_survive_the_torchgeo_names() -> None:
    """The segmentation presets took torchgeo's argument names (backbone, weights, patience;
    model, class_weights, ignore_index added): stage keys are those computed with the old
    names, so finished studies keep their stages (keys pinned before the rename)."""
    from hydra import initialize_config_dir

    from synthsat.stages import make_stage

    conf = Path(__file__).resolve().parents[1] / "conf"
    pinned = {
        ("seed=0",): "155db305b5",
        ("segmentation=tiny", "seed=0"): "82257adb05",
        ("segmentation=paper", "seed=0"): "36d7d7998f",
        ("segmentation=tiny", "segmentation.scheduler=cosine", "seed=0"): "76b00dc4f1",
    }
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        for overrides, key in pinned.items():
            stage = make_stage(
                "segmentation", "r0", "synthsat.train_segmentation", [*overrides], {}
            )
            assert "backbone" not in stage.config and "model: unet" not in stage.config
            assert stage.key == key, overrides
        weighted = make_stage(
            "segmentation", "r0", "synthsat.train_segmentation",
            ["segmentation.class_weights=[1,2,3]", "seed=0"], {},
        )  # fmt: skip
    assert "class_weights" in weighted.config  # a setting in use is part of the key


def test_study_arms_pair_every_source_with_the_same_seeds() -> None:
    p = OmegaConf.create(
        {
            "lambdas": [0.0, 2.0],
            "controls": ["classtexture"],
            "ratios": [0.0, 0.5],
            "copies": [1],
            "add_ratio": 0.0,
            "seeds": [3, 4],
        }
    )
    runs = segmentation_runs(p)
    labels = [seg_label(**r) for r in runs]
    per_seed = [
        "r0-replace-seed{s}",
        "r0.5-replace-lambda0-seed{s}",
        "r0-addx1-lambda0-seed{s}",
        "r0.5-replace-lambda2-seed{s}",
        "r0-addx1-lambda2-seed{s}",
        "r0.5-replace-classtexture-seed{s}",
        "r0-addx1-classtexture-seed{s}",
    ]
    assert labels == [x.format(s=s) for s in (3, 4) for x in per_seed]
    control = runs[5]
    assert control == {
        "ratio": 0.5,
        "mode": "replace",
        "copies": 0,
        "lambda_div": None,
        "generator": "classtexture",
        "seed": 3,
    }
    assert runs[0]["lambda_div"] is None and runs[0]["generator"] is None
    assert (
        source_name(2.0, None) == "lambda2" and source_name(None, "classtexture") == "classtexture"
    )
