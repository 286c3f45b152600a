"""Every config composes: each preset of each group with each job that uses the group, each
experiment with each job, and each pipeline stage's overrides as the pipeline passes them;
the models, data modules, callbacks, trainers and loggers they describe instantiate
(models on the meta device: no memory, no time)."""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TOY_METADATA
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from hydra.initialize import get_gh_backup, restore_gh_from_backup
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from synthsat import config_dir

CONF = Path(config_dir())
JOBS = (
    "train_generator",
    "train_segmentation",
    "synthesize",
    "evaluate",
    "evaluate_synthetic",
    "pipeline",
)
#: Config groups of the jobs (``hydra`` and ``paths`` have a single option each; ``layouts``
#: holds the layouts job's per-method blocks, each loaded under its own key, not a choice:
#: tests/test_layouts_job.py composes them).
GROUPS = tuple(
    sorted(
        d.name for d in CONF.iterdir() if d.is_dir() and d.name not in ("hydra", "paths", "layouts")
    )
)
#: Data metadata as a datamodule's ``metadata()`` gives it (the toy world's classes).
METADATA: dict[str, Any] = {
    **TOY_METADATA,
    "classes": ["no-data", "water", "tree", "low", "barren", "impervious", "road"],
    "band_names": ["red", "green", "blue", "nir"],
    "scale": 1.0,
}


def presets(group: str) -> list[str]:
    """The options of config group ``group``: its YAML files but ``base.yaml``, the shared
    part the options extend."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if p.stem != "base")


@pytest.fixture(scope="module", autouse=True)
def _hydra() -> Iterator[None]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        yield


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("root")


def _compose(job: str, root: Path, *overrides: str) -> DictConfig:
    return compose(
        job,
        overrides=[f"paths.root={root}", f"paths.output_dir={root / 'run'}", *overrides],
    )


def _groups(job: str, root: Path) -> dict[str, Any]:
    cfg = compose(job, overrides=[f"paths.root={root}"], return_hydra_config=True)
    return {k: v for k, v in cfg.hydra.runtime.choices.items() if "/" not in k}


def _resolve(cfg: DictConfig) -> dict[str, Any]:
    """The config with every interpolation resolved (``???`` values left missing)."""
    out = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert isinstance(out, dict)
    return out


# -- composition --------------------------------------------------------------------------
def _cases() -> list[tuple[str, str, str]]:
    cases = []
    with initialize_config_dir(str(CONF), version_base="1.3"):
        for job in JOBS:
            groups = compose(job, return_hydra_config=True).hydra.runtime.choices
            cases += [(job, g, p) for g in GROUPS if g in groups for p in presets(g)]
    GlobalHydra.instance().clear()
    return cases


CASES = _cases()


def test_every_group_is_used_by_a_job() -> None:
    assert {g for _, g, _ in CASES} == set(GROUPS)
    assert {"generator", "segmentation", "trainer", "data", "experiment"} <= set(GROUPS)


@pytest.mark.parametrize(("job", "group", "preset"), CASES, ids=lambda x: str(x))
def test_every_preset_composes_with_every_job(
    job: str, group: str, preset: str, root: Path
) -> None:
    cfg = _compose(job, root, f"{group}={preset}")
    resolved = _resolve(cfg)
    assert resolved["task_name"] == job
    assert str(resolved["paths"]["root"]) == str(root)
    if group in ("generator", "segmentation", "data", "trainer"):
        assert get_class(resolved[group]["_target_"])  # the target exists


@pytest.mark.parametrize("job", JOBS)
@pytest.mark.parametrize("experiment", presets("experiment"))
def test_every_experiment_composes_with_every_job(job: str, experiment: str, root: Path) -> None:
    prefix = "" if "experiment" in _groups(job, root) else "+"
    cfg = _compose(job, root, f"{prefix}experiment={experiment}")
    assert cfg.experiment_name == experiment
    _resolve(cfg)


def _stage_overrides(pipeline: DictConfig, data: str) -> dict[str, list[str]]:
    """Each stage job's overrides as :mod:`synthsat.jobs.pipeline` passes them."""
    common = [f"data={data}", *pipeline.data_overrides]
    stages = {
        "train_generator": [*pipeline.generator_overrides, "generator.lambda_div=2.0"],
        "synthesize": [*pipeline.synthesize_overrides, "ckpt=x.ckpt", "samples=1"],
        "train_segmentation": [*pipeline.segmentation_overrides, "mix.ratio=0.5"],
        "evaluate_synthetic": [*pipeline.synthetic_metric_overrides, "synthetic=x"],
    }
    if pipeline.get("controls"):
        stages["synthesize_control"] = [*pipeline.control_overrides, "method=classtexture"]
    return {job: [*common, *extra, "logger=none"] for job, extra in stages.items()}


@pytest.mark.parametrize("experiment", [None, *presets("experiment")])
def test_every_pipeline_stage_composes(experiment: str | None, root: Path) -> None:
    """The stage overrides of each study (and of the pipeline's defaults) name keys that
    exist: a moved key would only fail when the study reaches that stage."""
    cfg = _compose("pipeline", root, *([f"experiment={experiment}"] if experiment else []))
    data = str(_data_choice(experiment))
    for job, overrides in _stage_overrides(cfg.pipeline, data).items():
        if job == "synthesize_control":
            job = "synthesize"
        if job == "synthesize":
            overrides = [o for o in overrides if not o.startswith("logger=")]
        stage = _compose(job, root, *overrides)
        _resolve(stage)
        if job == "train_generator":
            task = _meta(lambda s=stage: instantiate(s.generator, data=METADATA, _convert_="all"))
            assert task.hparams.lambda_div == 2.0
            assert int(stage.data.patch_size) == task.hparams.patch_size
        if job == "train_segmentation":
            _meta(lambda s=stage: instantiate(s.segmentation, metadata=METADATA, _convert_="all"))


def _data_choice(experiment: str | None) -> str:
    if experiment is None:
        return "toyworld"
    defaults = OmegaConf.load(CONF / "experiment" / f"{experiment}.yaml").get("defaults", [])
    for entry in defaults:
        if isinstance(entry, DictConfig) and "override /data" in entry:
            return str(entry["override /data"])
    for entry in defaults:  # an experiment built on another (e.g. dubai_folds_test4)
        if isinstance(entry, str) and (CONF / "experiment" / f"{entry}.yaml").is_file():
            base = _data_choice(entry)
            if base != "toyworld":
                return base
    return "toyworld"


# -- instantiation ------------------------------------------------------------------------
def _meta(build: Any) -> Any:
    """Build on the meta device: shapes and settings without memory or initialisation."""
    with torch.device("meta"):
        return build()


@pytest.mark.parametrize("preset", presets("generator"))
def test_generator_presets_instantiate(preset: str, root: Path) -> None:
    cfg = _compose("train_generator", root, f"generator={preset}")
    task = _meta(lambda: instantiate(cfg.generator, data=METADATA, _convert_="all"))
    assert task.hparams.patch_size == cfg.generator.patch_size == cfg.data.patch_size
    assert task.generator.out_channels == 4 and task.generator.num_classes == 7
    assert (task.encoder is not None) == (preset in ("paper", "spade_cpu"))


@pytest.mark.parametrize("preset", presets("segmentation"))
def test_segmentation_presets_instantiate(preset: str, root: Path) -> None:
    cfg = _compose("train_segmentation", root, f"segmentation={preset}")
    task = _meta(lambda: instantiate(cfg.segmentation, metadata=METADATA, _convert_="all"))
    assert task.hparams.backbone == cfg.segmentation.backbone


@pytest.mark.parametrize("preset", presets("data"))
def test_data_presets_instantiate(preset: str, root: Path) -> None:
    required = {
        "rasters": [f"data.source.root={root / 'rasters'}", "data.classes=[a,b]", "data.bands=3"]
    }
    cfg = _compose("train_segmentation", root, f"data={preset}", *required.get(preset, []))
    dm = instantiate(cfg.data)
    assert dm.patch_size == cfg.data.patch_size
    assert dm.classes == list(cfg.data.classes)


@pytest.mark.parametrize("preset", presets("data"))
def test_data_presets_state_only_what_differs(preset: str, root: Path) -> None:
    """Each data config extends ``data/base.yaml`` and restates none of its values."""
    own = OmegaConf.load(CONF / "data" / f"{preset}.yaml")
    base = OmegaConf.load(CONF / "data" / "base.yaml")
    assert list(own.defaults) == ["base", "_self_"]
    restated = [k for k in own if k in base and k != "source" and own[k] == base[k]]
    assert restated == []
    composed = _compose("train_segmentation", root, f"data={preset}").data
    assert set(base) <= set(composed)


@pytest.mark.parametrize("preset", presets("trainer"))
def test_trainer_presets(preset: str, root: Path) -> None:
    cfg = _compose("train_segmentation", root, f"trainer={preset}")
    if cfg.trainer.accelerator in ("cpu", "auto"):
        trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
        assert trainer.max_steps == cfg.trainer.max_steps
    else:  # gpu / ddp: the settings only, on machines without a GPU
        assert get_class(cfg.trainer._target_)
        assert cfg.trainer.accelerator == "gpu"


@pytest.mark.parametrize("preset", presets("logger"))
def test_logger_presets(preset: str, root: Path) -> None:
    from synthsat.tracking import build_loggers

    cfg = _compose("train_segmentation", root, f"logger={preset}")
    if preset == "wandb":
        assert get_class(cfg.logger.wandb._target_) and cfg.logger.wandb.offline
        return
    loggers = build_loggers(cfg)
    assert len(loggers) == len(cfg.logger)


@pytest.mark.parametrize("job", ["train_generator", "train_segmentation"])
def test_job_callbacks_instantiate(job: str, root: Path) -> None:
    from synthsat.jobs.runtime import build_callbacks

    cfg = _compose(job, root)
    callbacks = build_callbacks(cfg)
    names = {type(c).__name__ for c in callbacks}
    assert "ResumableCheckpoint" in names  # Lightning's ModelCheckpoint, last.ckpt each validation
    assert "RandomStateCheckpoint" in names  # resumed runs continue the same draws


# -- overrides the README, Makefile, experiments and tests use ----------------------------
@pytest.mark.parametrize(
    ("job", "overrides", "expected"),
    [
        (
            "train_generator",
            ["generator=cpu", "generator.lambda_div=2"],
            {"generator.lambda_div": 2},
        ),
        ("train_generator", ["generator.patch_size=32"], {"data.patch_size": 32}),
        ("train_generator", ["generator=paper"], {"data.patch_size": 256}),
        ("train_generator", ["generator.z_dim=8"], {"generator.z_dim": 8}),
        ("train_generator", ["trainer.max_steps=7"], {"trainer.max_steps": 7}),
        ("train_segmentation", ["segmentation=tiny"], {"segmentation.encoder_depth": 3}),
        (
            "train_segmentation",
            ["segmentation.scheduler=cosine"],
            {"segmentation.scheduler": "cosine"},
        ),
        ("train_segmentation", ["data.scale=0.5"], {"data.scale": 0.5}),
        ("train_generator", ["data.scale=0.25"], {"data.scale": 0.25}),
        ("synthesize", ["scale=0.25"], {"scale": 0.25}),
        ("synthesize", [], {"scale": None}),
        ("train_segmentation", ["data.patch_size=128"], {"data.patch_size": 128}),
        ("train_segmentation", ["trainer.max_steps=30"], {"trainer.max_steps": 30}),
        (
            "train_segmentation",
            [],
            {"trainer.max_steps": 520, "callbacks.early_stopping.patience": 20},
        ),
        ("train_segmentation", ["data=dubai"], {"data.ignore_index": 255, "data.bands": 3}),
    ],
)
def test_documented_overrides(
    job: str, overrides: list[str], expected: dict[str, Any], root: Path
) -> None:
    cfg = _compose(job, root, *overrides)
    for key, value in expected.items():
        assert OmegaConf.select(cfg, key) == value, key


# -- schemas: bad values fail as the config is composed, naming the key --------------------
@pytest.mark.parametrize(
    ("job", "override", "key", "rule"),
    [
        ("train_segmentation", "mix.mode=replce", "mix.mode", "is not one of: replace, add"),
        ("train_segmentation", "mix.ratio=abc", "mix.ratio", "could not be converted to Float"),
        ("train_segmentation", "mix.ratio=1.5", "mix.ratio", "is not a number in [0, 1]"),
        ("train_segmentation", "mix.ratio=-0.1", "mix.ratio", "is not a number in [0, 1]"),
        ("train_segmentation", "mix.copies=0", "mix.copies", "is not a whole number >= 1"),
        ("train_segmentation", "mix.lambda_div=-1", "mix.lambda_div", "is not a number >= 0"),
        ("train_segmentation", "segmentation.loss=dice", "segmentation.loss", "ce, jaccard"),
        ("train_segmentation", "segmentation.lr=0", "segmentation.lr", "is not a number > 0"),
        ("train_segmentation", "test_ckpt=worst", "test_ckpt", "is not one of: best, last"),
        ("train_generator", "generator.lambda_div=-1", "generator.lambda_div", ">= 0"),
        ("train_generator", "generator.discriminator=unet", "generator.discriminator", "patch"),
        ("train_generator", "generator.net.norm=group", "generator.net.norm", "batch, instance"),
        ("train_generator", "generator.ema_decay=1.5", "generator.ema_decay", "in [0, 1]"),
        ("train_generator", "generator.patch_size=32.5", "generator.patch_size", ">= 1"),
        ("train_generator", "generator.use_vae=maybe", "generator.use_vae", "not a valid bool"),
        ("train_generator", "generator.tau=-1", "generator.tau", "is not a number >= 0"),
        ("synthesize", "method=gan", "method", "is not one of: generator, classtexture"),
        ("synthesize", "style=encodr", "style", "is not one of: random, encoder, auto"),
        ("synthesize", "samples=0", "samples", "is not a whole number >= 1"),
        ("synthesize", "chip_size=abc", "chip_size", "is not a whole number >= 1"),
        ("synthesize", "overlap=-1", "overlap", "is not a whole number >= 0"),
        ("synthesize", "scale=0", "scale", "is not a number in (0, 1]"),
        ("synthesize", "classtexture.purity=0", "classtexture.purity", "not a number in (0, 1]"),
        # issue 25: no training job trains 0 steps; sizes, scale and seeds in range
        ("train_generator", "trainer.max_steps=0", "trainer.max_steps", ">= 1 (or -1: no limit)"),
        ("train_segmentation", "trainer.max_steps=0", "trainer.max_steps", ">= 1 (or -1"),
        ("train_segmentation", "trainer.max_steps=-2", "trainer.max_steps", ">= 1 (or -1"),
        ("train_segmentation", "trainer.max_epochs=0", "trainer.max_epochs", ">= 1 (or -1"),
        ("train_segmentation", "data.batch_size=0", "data.batch_size", "not a whole number >= 1"),
        ("train_generator", "data.batch_size=0", "data.batch_size", "not a whole number >= 1"),
        ("evaluate", "data.eval_batch_size=0", "data.eval_batch_size", "whole number >= 1"),
        ("train_segmentation", "data.scale=0", "data.scale", "is not a number in (0, 1]"),
        ("synthesize", "data.scale=1.5", "data.scale", "is not a number in (0, 1]"),
        ("train_segmentation", "data.num_workers=-1", "data.num_workers", "whole number >= 0"),
        ("train_generator", "data.patch_size=0", "data.patch_size", "whole number >= 1"),
        ("train_segmentation", "seed=-1", "seed", "is not a whole number >= 0"),
        ("train_generator", "seed=-1", "seed", "is not a whole number >= 0"),
        ("synthesize", "seed=-1", "seed", "is not a whole number >= 0"),
        ("evaluate", "seed=-1", "seed", "is not a whole number >= 0"),
        ("evaluate_synthetic", "seed=-1", "seed", "is not a whole number >= 0"),
        ("pipeline", "seed=-1", "seed", "is not a whole number >= 0"),
    ],
)
def test_bad_values_fail_at_compose_naming_the_key(
    job: str, override: str, key: str, rule: str, root: Path
) -> None:
    """A typo or a value out of range stops Hydra's compose (before the job runs any code of
    its own, so before any data is read), with the override, the key and the rule."""
    with pytest.raises(ConfigCompositionException, match=f"override {re.escape(override)}$") as err:
        _compose(job, root, override)
    cause = str(err.value.__cause__)
    assert f"{rule}" in cause.splitlines()[0]
    assert f"full_key: {key}\n" in cause


def test_a_bad_value_from_an_experiment_fails_too(root: Path, tmp_path: Path) -> None:
    """Values merged after the job's YAML (an experiment's, here a user's) are checked too."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\nmix:\n  mode: ad\n")
    searchpath = f"hydra.searchpath=[file://{tmp_path}]"
    with pytest.raises(ConfigCompositionException) as err:
        _compose("train_segmentation", root, searchpath, "experiment=mine")
    assert "In 'experiment/mine'" in str(err.value)
    assert "'ad' is not one of: replace, add\n    full_key: mix.mode\n" in str(err.value)


def test_schema_values_stay_plain_and_edges_pass(root: Path) -> None:
    cfg = _compose("train_segmentation", root, "mix.ratio=1", "mix.mode=add", "mix.lambda_div=2")
    mix = OmegaConf.to_container(cfg.mix)
    assert mix == {
        "ratio": 1.0, "mode": "add", "source": None, "lambda_div": 2.0, "copies": 1,
        "layouts": None,
    }  # fmt: skip
    assert type(mix["ratio"]) is float and type(mix["mode"]) is str  # no enums reach the job
    assert _compose("train_segmentation", root, "mix.ratio=0").mix.ratio == 0.0
    assert _compose("train_segmentation", root).segmentation.decoder_channels is None
    cfg = _compose("synthesize", root, "chip_size=64", "overlap=0", "classtexture.purity=1")
    assert (cfg.chip_size, cfg.overlap, cfg.classtexture.purity, cfg.tiles) == (64, 0, 1.0, None)
    cfg = _compose("train_generator", root, "generator.tau=0.5", "+generator_note=mine")
    assert (cfg.generator.tau, cfg.generator_note) == (0.5, "mine")  # the top stays open
    budget = ["trainer.max_epochs=200", "trainer.max_steps=-1"]  # experiment=paper's
    cfg = _compose("train_segmentation", root, *budget, "seed=null", "data.scale=1")
    assert (cfg.trainer.max_steps, cfg.trainer.max_epochs) == (-1, 200)  # -1: no step limit
    assert (cfg.seed, cfg.data.scale, type(cfg.data.scale)) == (None, 1.0, float)
    cfg = _compose("train_generator", root, "trainer.max_steps=1", "trainer.max_epochs=null")
    assert (cfg.trainer.max_steps, cfg.trainer.max_epochs, cfg.trainer.accelerator) == (
        1,
        None,
        "cpu",
    )


def test_schema_choices_are_the_codes() -> None:
    """The schemas' choices (kept in a torch-free module) are those the code accepts."""
    from synthsat import schemas
    from synthsat.data import mixing
    from synthsat.jobs import synthesize
    from synthsat.models import spade
    from synthsat.synthesis import gan_synthesizer
    from synthsat.tasks import adversaries
    from synthsat.tasks import segmentation_setup as segmentation

    assert mixing.MODES is schemas.MIX_MODES  # imported from the schemas: one list
    assert adversaries.KINDS is schemas.DISCRIMINATORS
    assert spade.START_MODES is schemas.START_MODES
    assert synthesize.METHODS is schemas.METHODS
    assert schemas.LOSSES == segmentation.LOSSES
    assert schemas.SCHEDULERS == segmentation.SCHEDULERS
    assert schemas.MODELS == segmentation.MODELS
    assert schemas.STYLES == gan_synthesizer.STYLES
    assert schemas.STYLE_SCOPES == gan_synthesizer.STYLE_SCOPES
    for norm in schemas.NORMS:
        spade._param_free_norm(norm, 4)
    with pytest.raises(ValueError, match="unknown normalisation"):
        spade._param_free_norm("group", 4)


@pytest.mark.parametrize(
    ("group", "schema"), [("generator", "GeneratorSchema"), ("segmentation", "SegmentationSchema")]
)
def test_every_preset_fills_its_schema(group: str, schema: str, root: Path) -> None:
    """Each preset sets every key of its schema, in the schema's order, so the schema adds
    nothing and moves nothing (stage hashes stay those of the YAML alone)."""
    from synthsat import schemas

    names = [f.name for f in dataclasses.fields(getattr(schemas, schema))]
    job = "train_generator" if group == "generator" else "train_segmentation"
    for preset in presets(group):
        node = _compose(job, root, f"{group}={preset}")[group]
        own = OmegaConf.load(CONF / group / f"{preset}.yaml")
        if "defaults" not in own:  # a preset extending another states only what differs
            assert [k for k in own] == names, preset
        assert list(node) == names and OmegaConf.missing_keys(node) == set(), preset


def test_schemas_do_not_change_the_composed_configs(root: Path, tmp_path: Path) -> None:
    """The jobs' configs composed with and without their schema entries are the same YAML:
    a pipeline stage's directory hashes it, so adding a schema reruns no stage."""
    plain = tmp_path / "conf"
    shutil.copytree(CONF, plain)
    for job in JOBS:
        text = (plain / f"{job}.yaml").read_text()
        stripped = "".join(line for line in text.splitlines(True) if "- schema/" not in line)
        assert stripped != text
        (plain / f"{job}.yaml").write_text(stripped)
    cases = [("train_generator", [f"generator={p}"]) for p in presets("generator")] + [
        ("train_segmentation", [f"segmentation={p}", "mix.ratio=0.5"])
        for p in presets("segmentation")
    ]
    cases += [("synthesize", ["method=classtexture"]), ("train_segmentation", ["experiment=dubai"])]
    cases += [("train_segmentation", ["experiment=paper"]), ("synthesize", ["data=dubai"])]
    cases += [(job, []) for job in ("evaluate", "evaluate_synthetic", "pipeline")]
    cases += [("pipeline", ["experiment=demo"]), ("train_generator", ["data=chesapeake"])]
    typed = [OmegaConf.to_yaml(_compose(job, root, *overrides)) for job, overrides in cases]
    backup = get_gh_backup()  # the module's Hydra (conf/), back after the plain configs
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(plain), version_base="1.3"):
            untyped = [OmegaConf.to_yaml(_compose(job, root, *o)) for job, o in cases]
    finally:
        restore_gh_from_backup(backup)
    assert untyped == typed


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("mix.lambda_div=-1", "mix.lambda_div=-1: must be a number >= 0"),
        ("mix.mode=replce", "mix.mode=replce: must be one of: replace, add"),
        ("mix.copies=0", "mix.copies=0: must be a whole number >= 1"),
        ("mix.ratio=1.5", "mix.ratio=1.5: must be a number in [0, 1]"),
        ("generator.ema_decay=2", "generator.ema_decay=2: must be a number in [0, 1]"),
        ("generator.net.norm=group", "generator.net.norm=group: must be one of: batch, instance"),
        ("segmentation.loss=dice", "segmentation.loss=dice: must be one of: ce, jaccard, focal"),
        (
            "trainer.max_steps=0",
            "trainer.max_steps=0: must be a whole number >= 1 (or -1: no limit)",
        ),
        ("data.scale=0", "data.scale=0: must be a number in (0, 1]"),
        ("samples=0", "samples=0: must be a whole number >= 1"),
        ("overlap=-1", "overlap=-1: must be a whole number >= 0"),
    ],
)
def test_a_config_made_without_the_schemas_is_held_to_their_rules(
    override: str, message: str
) -> None:
    """validate_config applies the schemas' own rules to a config that never went through
    Hydra's compose (the same words as the compose error, after 'must be')."""
    from synthsat.errors import ConfigError
    from synthsat.jobs.runtime import validate_config

    with pytest.raises(ConfigError) as err:
        validate_config(OmegaConf.from_dotlist([override]))
    assert str(err.value) == message


def test_validate_config_has_no_rules_of_its_own_for_schema_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One owner: narrow the schema's rule and validate_config follows it."""
    from synthsat import schemas
    from synthsat.config_nodes import number
    from synthsat.errors import ConfigError
    from synthsat.jobs.runtime import validate_config

    plain = OmegaConf.create({"mix": {"ratio": 0.75, "mode": "replace"}})
    validate_config(plain)

    @dataclasses.dataclass
    class HalfMix(schemas.MixSchema):
        ratio: float = number(0.0, 0.5)

    monkeypatch.setitem(schemas.PACKAGED, "mix", HalfMix)
    with pytest.raises(ConfigError, match=r"^mix\.ratio=0\.75: must be a number in \[0, 0\.5\]$"):
        validate_config(plain)
