"""Structured-config schemas: bad values fail when Hydra composes the config, naming the key.

The jobs' YAML files stay the source of every value; the schemas here only give the keys
types, ranges and choices. Each is a dataclass registered in Hydra's ConfigStore (group
``schema``, see :func:`register`) and merged into its package right after the job's own
YAML (``- schema/mix@mix`` after ``_self_`` in ``conf/train_segmentation.yaml``). Every
field defaults to ``???``: merged after the YAML, a schema keeps the YAML's values and key
order and swaps each value's node for a typed one, so the composed config (and with it a
pipeline stage's hash, :mod:`synthsat.study.stages`) is unchanged, while any later value (an
experiment, a command-line override, a pipeline stage's override) is checked as it is
merged::

    $ python -m synthsat.train_segmentation mix.mode=replce
    Error merging override mix.mode=replce
    Value 'replce' is not one of: replace, add
        full_key: mix.mode

That happens before the job's module runs any code of its own, so before any data is read
(:func:`synthsat.jobs.runtime.validate_config` still checks what depends on several keys).

Schemas: ``mix`` (train_segmentation), ``generator`` and its ``net`` (train_generator),
``segmentation`` (train_segmentation), ``synthesize`` (the job's top-level keys and
``classtexture``; open: other top-level keys are untouched), ``layouts`` (the layouts
job's top-level keys), ``train_segmentation``
(its top-level ``seed`` and ``test_ckpt``), ``run`` (the other jobs' ``seed``),
``trainer`` (the training jobs' step and epoch budgets: never 0) and ``data`` (batch
sizes, patch and chip sizes, ``scale``; every job that reads data). ``_target_`` keys
are plain strings, so ``hydra.utils.instantiate`` works as before.

Ranges and choices are checked by OmegaConf value nodes of :mod:`synthsat.config_nodes`
(:class:`NumberNode`, :class:`WholeNode`, :class:`ChoiceNode`) that keep values plain
(floats, ints, strings: no enums reach models, checkpoints or ``metrics.json``). This
module imports no torch: it is registered when :mod:`synthsat` is imported, before any job
composes a config.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf, ValidationError

# the value nodes (re-exported: they were this module's before the split)
from synthsat.config_nodes import (  # noqa: F401
    ChoiceNode,
    NumberNode,
    WholeNode,
    choice,
    number,
    whole,
)

# The choices the code accepts (imported there from torch-heavy modules; tests check that
# these equal synthsat.tasks.adversaries.KINDS, synthsat.models.spade.START_MODES, ...).
MIX_MODES = ("replace", "add")
DISCRIMINATORS = ("patch", "oasis")
NORMS = ("batch", "instance")
START_MODES = ("fc", "cond")
MODELS = ("unet",)
LOSSES = ("ce", "jaccard", "focal")
SCHEDULERS = ("plateau", "cosine")
METHODS = ("generator", "classtexture", "classcolour")
STYLES = ("random", "encoder", "auto")
STYLE_SCOPES = ("tile", "chip")
TEST_CKPTS = ("best", "last")
LAYOUT_METHODS = ("recombine", "learned")


# -- the schemas ---------------------------------------------------------------------------
#: Keys that hold a list or null are left untyped (``Any``): OmegaConf merges a schema's
#: missing list over a null value (it keeps other values), which would turn the YAML's
#: ``null`` into ``???``.
LIST_OR_NULL = (
    "segmentation.decoder_channels",
    "segmentation.class_weights",
    "synthesize: tiles",
)


@dataclass
class MixSchema:
    """``mix``: real / synthetic mixing of training patches (:mod:`synthsat.data.mixing`)."""

    ratio: float = number(0.0, 1.0)
    mode: str = choice(*MIX_MODES)
    source: str | None = MISSING
    lambda_div: float | None = number(0.0, optional=True)
    copies: int = whole(1)
    layouts: str | None = MISSING


@dataclass
class GeneratorNetSchema:
    """``generator.net``: :class:`synthsat.models.spade.SPADEGenerator` settings."""

    _target_: str = MISSING
    ngf: int = whole(1)
    start_size: int = whole(1)
    max_mult: int = whole(1)
    spade_hidden: int = whole(1)
    norm: str = choice(*NORMS)
    spectral: bool = MISSING
    output_scale: float = number(0.0, open_low=True)
    start: str = choice(*START_MODES)
    noise_dim: int = whole(0)
    noise_cell: int = whole(1)


@dataclass
class GeneratorSchema:
    """``generator``: :class:`synthsat.tasks.generator.GeneratorTask` settings (every
    ``conf/generator/*.yaml`` preset)."""

    _target_: str = MISSING
    _recursive_: bool = MISSING
    patch_size: int = whole(1)
    z_dim: int = whole(0)
    net: GeneratorNetSchema = field(default_factory=GeneratorNetSchema)
    discriminator: str = choice(*DISCRIMINATORS)
    use_vae: bool = MISSING
    nef: int = whole(1)
    ndf: int = whole(1)
    num_D: int = whole(1)
    n_layers: int = whole(1)
    lambda_gan: float = number(0.0)
    lambda_feat: float = number(0.0)
    lambda_labelmix: float = number(0.0)
    lambda_kld: float = number(0.0)
    lambda_vgg: float = number(0.0)
    lambda_stats: float = number(0.0)
    lambda_texture: float = number(0.0)
    lambda_div: float = number(0.0)
    tau: float | None = number(0.0, optional=True)
    lr_g: float = number(0.0, open_low=True)
    lr_d: float = number(0.0, open_low=True)
    betas: list[float] = MISSING
    d_steps_per_g: int = whole(1)
    ema: bool = MISSING
    ema_decay: float = number(0.0, 1.0)


@dataclass
class SegmentationSchema:
    """``segmentation``: :class:`synthsat.tasks.segmentation.SegmentationTask` settings
    (every ``conf/segmentation/*.yaml`` preset): torchgeo's ``SemanticSegmentationTask``
    arguments, then this project's."""

    _target_: str = MISSING
    model: str = choice(*MODELS)
    backbone: str = MISSING
    weights: Any = MISSING  # null, true, or a variant / file / torchgeo weight name
    encoder_depth: int = whole(1)
    decoder_channels: Any = MISSING  # a list of ints or null (see LIST_OR_NULL)
    loss: str = choice(*LOSSES)
    class_weights: Any = MISSING  # a list of floats or null (see LIST_OR_NULL)
    ignore_index: int | None = MISSING  # null: the data's
    lr: float = number(0.0, open_low=True)
    weight_decay: float = number(0.0)
    patience: int = whole(0)
    lr_factor: float = number(0.0, 1.0, open_low=True)
    min_lr: float = number(0.0)
    monitor: str = MISSING
    scheduler: str = choice(*SCHEDULERS)
    warmup_steps: int = whole(0)
    channels_last: bool = MISSING


@dataclass
class TrainSegmentationSchema:
    """Top-level keys of ``conf/train_segmentation.yaml`` (open: the others are untouched)."""

    seed: int | None = whole(0, optional=True)
    test_ckpt: str = choice(*TEST_CKPTS)


@dataclass
class RunSchema:
    """Top-level keys every other job shares (open: the others are untouched)."""

    seed: int | None = whole(0, optional=True)


@dataclass
class TrainerSchema:
    """``trainer``: the training budget (open: Lightning's other settings are untouched).
    0 steps or epochs would score an untrained model; -1 is Lightning's "no limit" (the
    other budget, or early stopping, ends the run)."""

    max_epochs: int | None = whole(1, optional=True, unlimited=True)
    max_steps: int = whole(1, unlimited=True)


@dataclass
class DataSchema:
    """``data``: the data module's sizes and scale, shared by every data preset (open: the
    source and the rest are untouched)."""

    patch_size: int = whole(1)
    batch_size: int = whole(1)
    eval_batch_size: int = whole(1)
    num_workers: int = whole(0)
    patches_per_epoch: int = whole(1)
    eval_chip_size: int = whole(1)
    scale: float = number(0.0, 1.0, open_low=True)


@dataclass
class ClassTextureSchema:
    """``classtexture``: the control synthesiser (:mod:`synthsat.synthesis.classtexture`)."""

    patch_size: int = whole(1)
    purity: float = number(0.0, 1.0, open_low=True)
    fallback_purity: float = number(0.0, 1.0, open_low=True)
    per_class: int = whole(1)
    texture_splits: list[str] = MISSING


@dataclass
class SynthesizeSchema:
    """Top-level keys of ``conf/synthesize.yaml`` (open: the others are untouched)."""

    seed: int | None = whole(0, optional=True)
    method: str = choice(*METHODS)
    ckpt: str | None = MISSING
    out: str = MISSING
    splits: list[str] = MISSING
    tiles: Any = MISSING  # a list of tile names or null (see LIST_OR_NULL)
    samples: int = whole(1)
    style: str = choice(*STYLES)
    style_scope: str = choice(*STYLE_SCOPES)
    chip_size: int | None = whole(1, optional=True)
    scale: float | None = number(0.0, 1.0, open_low=True, optional=True)
    overlap: int | None = whole(0, optional=True)
    batch_size: int = whole(1)
    channels_last: bool = MISSING
    autocast: bool = MISSING
    dtype: str | None = MISSING
    block_size: int = whole(1)
    compress: str = MISSING
    cog: bool = MISSING
    previews: int = whole(0)
    classtexture: ClassTextureSchema = field(default_factory=ClassTextureSchema)


@dataclass
class LayoutsSchema:
    """Top-level keys of ``conf/layouts.yaml`` (open: the others are untouched)."""

    seed: int | None = whole(0, optional=True)
    method: str = choice(*LAYOUT_METHODS)
    n: int = whole(1)
    out: str = MISSING
    splits: list[str] = MISSING
    size: Any = MISSING  # null, N or [H, W] (checked by the job)
    prefix: str = MISSING


def open_schema(schema: type) -> DictConfig:
    """``schema``'s typed fields in an untyped (open) config: merged at the top of a job's
    config, it types these keys and leaves the job's other keys (groups, ``hydra``, an
    experiment's) as they are."""
    typed = OmegaConf.structured(schema)
    return OmegaConf.create({f.name: typed._get_node(f.name) for f in fields(schema)})


#: ConfigStore entries of group ``schema``: name -> node (a dataclass, or an open config).
SCHEMAS: dict[str, Callable[[], Any]] = {
    "mix": lambda: MixSchema,
    "generator": lambda: GeneratorSchema,
    "segmentation": lambda: SegmentationSchema,
    "synthesize": lambda: open_schema(SynthesizeSchema),
    "layouts": lambda: open_schema(LayoutsSchema),
    "train_segmentation": lambda: open_schema(TrainSegmentationSchema),
    "run": lambda: open_schema(RunSchema),
    "trainer": lambda: open_schema(TrainerSchema),
    "data": lambda: open_schema(DataSchema),
}


def register() -> None:
    """Store the schemas in Hydra's ConfigStore as ``schema/<name>`` (idempotent)."""
    store = ConfigStore.instance()
    for name, node in SCHEMAS.items():
        store.store(group="schema", name=name, node=node())


# -- the same rules for a config composed without the schemas ------------------------------
#: The schemas of the config packages they type, for :func:`schema_violation`.
PACKAGED: dict[str, type] = {
    "mix": MixSchema,
    "generator": GeneratorSchema,
    "segmentation": SegmentationSchema,
    "trainer": TrainerSchema,
    "data": DataSchema,
}
#: Top-level keys whose rule a schema of a job's top level holds (top-level schemas are
#: per job, and their keys' names are not unique across jobs: only these are checked).
TOP_LEVEL: dict[str, type] = {
    "samples": SynthesizeSchema,
    "chip_size": SynthesizeSchema,
    "overlap": SynthesizeSchema,
}


@functools.cache
def _typed(schema: type) -> DictConfig:
    """``schema`` as a typed config (its value nodes carry the rules; only read)."""
    return OmegaConf.structured(schema)


def _refused(schema: type, name: str, value: Any) -> str | None:
    """The rule of ``schema``'s field ``name`` that ``value`` breaks, in words (e.g. ``must
    be a number >= 0``); None where it keeps the rule or the field has none."""
    node = _typed(schema)._get_node(name)
    if not isinstance(node, NumberNode | WholeNode | ChoiceNode):
        return None
    try:
        node.validate_and_convert(value)
    except ValidationError as err:
        return "must be " + str(err).split(" is not ", 1)[-1].split("\n", 1)[0]
    return None


def _section_violation(schema: type, values: Any, prefix: str) -> tuple[str, Any, str] | None:
    """The first value of ``values`` (one package of a config) that ``schema`` refuses."""
    for f in fields(schema):
        value = OmegaConf.select(values, f.name, default=None, throw_on_missing=False)
        if value is None:
            continue
        key = f"{prefix}.{f.name}"
        nested = f.default_factory  # a nested schema (e.g. the generator's net)
        if is_dataclass(nested) and isinstance(value, DictConfig):
            found = _section_violation(nested, value, key)  # type: ignore[arg-type]
        else:
            rule = _refused(schema, f.name, value)
            found = (key, value, rule) if rule else None
        if found:
            return found
    return None


def schema_violation(cfg: Any) -> tuple[str, Any, str] | None:
    """The first setting of ``cfg`` that its schema refuses, as (key, value, rule), or None.

    Hydra checks a composed config against the schemas as it merges (see the module); this
    applies the same rules, from the same fields, to a config made without them (e.g. with
    ``OmegaConf.create``), for :func:`synthsat.jobs.runtime.validate_config`.
    """
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    for package, schema in PACKAGED.items():
        section = OmegaConf.select(cfg, package, default=None, throw_on_missing=False)
        if isinstance(section, DictConfig):
            found = _section_violation(schema, section, package)
            if found:
                return found
    for key, schema in TOP_LEVEL.items():
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        rule = None if value is None else _refused(schema, key, value)
        if rule:
            return key, value, rule
    return None
