"""``mix.lambda_div`` picks the synthetic tile folder by its manifest; ``main`` returns
the objective."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import (
    compose_job,
    segmentation_multirun,
    tiny_generator_overrides,
    tiny_segmentation_overrides,
    toy_run_overrides,
)
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from synthsat.data import DataError, ToyWorldSource
from synthsat.data.mixing import resolve_mix
from synthsat.data.synthetic_tiles import (
    PROVENANCE_TAG,
    manifest_folders,
    manifest_lambda,
    tile_folder,
    write_manifest,
)
from synthsat.errors import ConfigError
from synthsat.jobs.runtime import validate_config
from synthsat.jobs.user_errors import user_errors

#: The folders of a study's synthesis stage, as the pipeline names them.
GAN0 = "synthesis/lambda0-aaaa/tiles"
GAN2 = "synthesis/lambda2-bbbb/tiles"
CONTROL = "synthesis/classtexture-cccc/tiles"


def _tile_folder(toy_root: Path, out: Path, record: dict, value: int) -> Path:
    """Constant synthetic tiles (``value``) for the toy world's training masks, each
    tagged with ``record``, and the manifest the project writes from the tags."""
    out.mkdir(parents=True)
    for pair in ToyWorldSource(toy_root, tiles=4, size=128).pairs("train"):
        with rasterio.open(pair.mask) as src:
            profile = src.profile
        profile.update(count=4, dtype="uint8", nodata=None)
        with rasterio.open(out / f"{pair.name}_s0.tif", "w", **profile) as dst:
            dst.write(np.full((4, profile["height"], profile["width"]), value, np.uint8))
            dst.update_tags(**{PROVENANCE_TAG: json.dumps({**record, "seed": 0})})
    write_manifest(out)
    return out


@pytest.fixture
def study(toy_root: Path, tmp_path: Path) -> Path:
    """``results/toy``: GAN tiles at lambda 0 and 2 and classtexture control tiles, as
    the pipeline lays them out (``.hydra`` folders beside, as Hydra writes them)."""
    root = tmp_path / "results" / "toy"
    gan = {"checkpoint": "/x/last.ckpt", "chip_size": 32, "overlap": 16}
    _tile_folder(toy_root, root / GAN0, {**gan, "lambda_div": 0.0}, 50)
    _tile_folder(toy_root, root / GAN2, {**gan, "lambda_div": 2.0}, 200)
    control = {"generator": "classtexture", "checkpoint": None, "lambda_div": None}
    _tile_folder(toy_root, root / CONTROL, control, 100)
    for stage in (GAN0, GAN2, CONTROL):
        (root / stage).parent.joinpath(".hydra").mkdir()
    return root


def test_lambda_picks_its_folder_below_the_root(study: Path) -> None:
    synthesis = study / "synthesis"
    assert tile_folder(synthesis, 0) == study / GAN0
    assert tile_folder(synthesis, 2.0) == study / GAN2
    assert tile_folder(study, 2) == study / GAN2  # a few levels down
    assert tile_folder(study.parent, 0) == study / GAN0  # results/: 4 levels above tiles/
    with pytest.raises(DataError, match=r"within 4 levels .* found no manifest.json$"):
        tile_folder(study.parent.parent, 0)  # 5 levels: out of reach
    # without a lambda, the source is the tile folder as given
    assert tile_folder(synthesis) == synthesis
    assert manifest_folders(synthesis) == [study / CONTROL, study / GAN0, study / GAN2]
    assert [manifest_lambda(f) for f in manifest_folders(synthesis)] == [None, 0.0, 2.0]


def test_a_tile_folder_given_directly_must_agree(study: Path) -> None:
    assert tile_folder(study / GAN2, 2) == study / GAN2
    with pytest.raises(DataError) as err:
        tile_folder(study / GAN0, 2)
    assert str(err.value) == (
        f"mix.source {study / GAN0}: its manifest.json records lambda_div 0, not mix.lambda_div=2"
    )
    with pytest.raises(DataError) as err:
        tile_folder(study / CONTROL, 0)  # the control records no lambda: never matched
    assert str(err.value) == (
        f"mix.source {study / CONTROL}: its manifest.json records classtexture (no "
        "lambda_div), not mix.lambda_div=0"
    )
    bare = study / "bare"
    bare.mkdir()
    shutil.copy(next((study / GAN2).glob("*.tif")), bare)  # tiles, but no manifest
    with pytest.raises(DataError, match=r"no manifest.json records the lambda_div of its"):
        tile_folder(bare, 2)


def test_no_match_lists_the_lambdas_found_and_where(study: Path) -> None:
    with pytest.raises(DataError) as err:
        tile_folder(study / "synthesis", 6)
    assert str(err.value) == (
        f"mix.source {study / 'synthesis'}: no synthetic tile folder within 4 levels records "
        "lambda_div 6 in its manifest.json; found "
        "classtexture (no lambda_div) in classtexture-cccc/tiles; "
        "lambda_div 0 in lambda0-aaaa/tiles; lambda_div 2 in lambda2-bbbb/tiles"
    )
    # lambda 0 does not match the control's null lambda (None is not 0)
    shutil.rmtree(study / GAN0)
    with pytest.raises(DataError, match=r"records lambda_div 0 in its manifest.json; found "):
        tile_folder(study / "synthesis", 0)
    empty = study / "empty"
    (empty / "a").mkdir(parents=True)
    with pytest.raises(DataError, match=r"lambda_div 0 in its manifest.json; found no manifest"):
        tile_folder(empty, 0)
    with pytest.raises(DataError, match="synthetic image directory does not exist"):
        tile_folder(study / "missing", 0)


def test_two_studies_under_the_root_are_ambiguous(study: Path, toy_root: Path) -> None:
    other = study.parent / "other"
    _tile_folder(toy_root, other / "synthesis/lambda2-dddd/tiles", {"lambda_div": 2.0}, 9)
    assert tile_folder(study.parent, 0) == study / GAN0  # only one study has lambda 0
    with pytest.raises(DataError) as err:
        tile_folder(study.parent, 2)
    assert str(err.value) == (
        f"mix.source {study.parent}: 2 synthetic tile folders record lambda_div 2: "
        "other/synthesis/lambda2-dddd/tiles, toy/synthesis/lambda2-bbbb/tiles; set "
        "mix.source to one of them (or to a folder holding only one)"
    )


def test_resolve_mix_replaces_the_root_by_the_folder(study: Path) -> None:
    mix = {"ratio": 0.5, "mode": "replace", "source": str(study / "synthesis"), "copies": 1}
    assert resolve_mix({**mix, "lambda_div": 2}) == {
        **mix,
        "lambda_div": 2,
        "source": str((study / GAN2).resolve()),
    }
    direct = {**mix, "source": f"{study / GAN0}/", "lambda_div": 0}
    assert resolve_mix(direct) == direct  # a tile folder given: kept as written
    assert resolve_mix({**mix, "lambda_div": None}) == {**mix, "lambda_div": None}
    with pytest.raises(DataError, match=r"^mix.lambda_div=2 needs mix.source: a synthetic"):
        resolve_mix({**mix, "source": None, "lambda_div": 2})


def _data(toy_root: Path, tmp_path: Path, run: str) -> list[str]:
    return [*toy_run_overrides(toy_root, tmp_path, run), "data.eval_chip_size=128"]


def _compose(toy_root: Path, tmp_path: Path, *overrides: str, name: str = "train_segmentation"):
    """A tiny ``train_segmentation`` run on the toy world into ``tmp_path / "run"``."""
    tiny = tiny_segmentation_overrides(toy_root, tmp_path, "run")
    return compose_job(name, [*tiny, "seed=0", *overrides])


def test_config_rejects_a_negative_lambda(toy_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigCompositionException) as err:  # the schema, as it is composed
        _compose(toy_root, tmp_path, "mix.lambda_div=-1")
    assert "full_key: mix.lambda_div" in str(err.value.__cause__)
    plain = OmegaConf.create({"mix": {"lambda_div": -1}})  # a config without the schema
    with pytest.raises(ConfigError, match=r"^mix\.lambda_div=-1: must be a number >= 0$"):
        validate_config(plain)


def test_user_errors_passes_the_return_value_through(tmp_path: Path) -> None:
    cfg = _compose(Path("unused"), tmp_path)
    assert user_errors(lambda c: 0.25)(cfg) == 0.25
    assert user_errors(lambda c: None)(cfg) is None


# two training steps stop the run before its first validation: val/miou does not exist yet
@pytest.mark.filterwarnings("ignore:.*could not find the monitored key:UserWarning")
def test_train_segmentation_main_uses_the_lambda_folder_and_returns_the_miou(
    study: Path, toy_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """End to end through Hydra's config: ``mix.lambda_div=2 mix.source=<synthesis>``
    trains on the lambda-2 tiles (all patches synthetic), records that folder, and
    ``main`` returns the validation mIoU of the tested checkpoint that metrics.json
    holds (the objective of a sweep: never the test score)."""
    from synthsat.jobs.train_segmentation import main

    cfg = _compose(
        toy_root,
        tmp_path,
        "trainer.max_steps=2",
        "trainer.val_check_interval=1",
        "trainer.check_val_every_n_epoch=null",
        "mix.ratio=1",
        "mix.lambda_div=2",
        f"mix.source={study / 'synthesis'}",
    )
    miou = main(cfg)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["mix"] == {
        "ratio": 1,
        "mode": "replace",
        "source": str((study / GAN2).resolve()),
        "copies": 1,
        "lambda_div": 2,
        "layouts": None,  # the training tiles' own masks (mix.layouts: new layouts)
    }
    assert saved["synthetic_source"] == {
        "generator": "gan",
        "lambda_div": 2.0,
        "checkpoint": "/x/last.ckpt",
    }
    objective = miou
    assert isinstance(objective, float) and objective == saved["scored_val_miou"]
    miou = saved["miou"]
    assert f"test mIoU {miou:.4f}" in capsys.readouterr().out

    # evaluate's main returns the mIoU it scores (the same test tile, the same weights)
    from synthsat.jobs.evaluate import main as evaluate_main

    ecfg = compose_job(
        "evaluate",
        [*_data(toy_root, tmp_path, "eval"), f"ckpt={saved['checkpoint']}"],
    )
    assert evaluate_main(ecfg) == pytest.approx(miou)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["miou"] == evaluate_main(
        ecfg
    )


def test_a_lambda_without_its_folder_stops_main_with_one_line(
    study: Path, toy_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from synthsat.jobs.train_segmentation import main

    cfg = _compose(
        toy_root, tmp_path, "mix.ratio=1", "mix.lambda_div=6", f"mix.source={study / 'synthesis'}"
    )
    with pytest.raises(SystemExit) as stop:
        main(cfg)
    assert stop.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"error: mix.source {study / 'synthesis'}: no synthetic tile folder")
    assert err[0].endswith("lambda_div 0 in lambda0-aaaa/tiles; lambda_div 2 in lambda2-bbbb/tiles")
    assert err[1:] == ["(HYDRA_FULL_ERROR=1 shows the traceback)"]
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_train_generator_main_returns_the_best_monitored_score(
    toy_root: Path, tmp_path: Path
) -> None:
    from synthsat.jobs.train_generator import main

    cfg = compose_job(
        "train_generator",
        [
            *tiny_generator_overrides(toy_root, tmp_path, "gen"),
            f"paths.cache_dir={tmp_path / 'cache'}",
            "callbacks.samples.every_n_steps=0",
            "trainer.max_steps=2",
        ],
    )
    score = main(cfg)
    saved = json.loads((tmp_path / "gen" / "metrics.json").read_text())
    assert saved["monitor"] == "val/score"
    assert isinstance(score, float) and score == saved["score"]


def test_multirun_sweeps_lambdas_by_the_synthesis_root(
    study: Path, toy_root: Path, tmp_path: Path
) -> None:
    """``-m mix.lambda_div=0,2 mix.source=<study>/synthesis`` as a user types it: one job
    per lambda, each trained on (and recording) its own tile folder."""

    work = tmp_path / "work"
    work.mkdir()
    sweep, runs = segmentation_multirun(
        work, toy_root, "mix.ratio=1", "mix.lambda_div=0,2", f"mix.source={study / 'synthesis'}"
    )
    saved = [json.loads(r.read_text()) for r in runs]
    assert [(m["mix"]["lambda_div"], m["mix"]["source"]) for m in saved] == [
        (0, str((study / GAN0).resolve())),
        (2, str((study / GAN2).resolve())),
    ]
    assert [m["synthetic_source"]["lambda_div"] for m in saved] == [0.0, 2.0]
