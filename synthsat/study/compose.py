"""A stage's composed config, the part of its key that follows the job's config files.

:func:`composed_config` composes a job's config (``conf/<job>.yaml`` with the stage's
overrides, before interpolation) and dumps it as YAML, with the keys added or renamed
since studies were run written as they were then (:data:`UNSET_KEYS`,
:data:`RENAMED_KEYS`), so finished stages keep their keys; :func:`legacy_config` writes
it as stage keys were written before commit a3b8a58. :func:`compose_cache` composes each
distinct head of a study's overrides once (the dry run in seconds).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import yaml
from hydra import compose
from omegaconf import DictConfig, OmegaConf

_ABSENT = object()


#: Keys added to a job's config after studies were run, left out of a stage's composed
#: config (so of its key) while they hold this value: the stages of a study that does not
#: use them keep their keys (and their finished runs), e.g. ``mix.layouts``.
UNSET_KEYS: dict[str, Any] = {
    "mix.layouts": None,
    "segmentation.model": "unet",
    "segmentation.class_weights": None,
    "segmentation.ignore_index": None,
    "generator.lambda_texture": 0.0,
}


#: Keys renamed after studies were run (new name -> the name stage keys were computed
#: with): a stage's key is computed with the old name in its place, so finished stages keep
#: their keys, e.g. the segmentation presets' torchgeo names (``backbone`` was ``encoder_name``).
RENAMED_KEYS: dict[str, str] = {
    "segmentation.backbone": "encoder_name",
    "segmentation.weights": "encoder_weights",
    "segmentation.patience": "lr_patience",
}


#: How job configs differed before commit a3b8a58 (2026-12-07), the form the stages of
#: studies run then were keyed in (:func:`legacy_config`): ``paths.shared_dir`` did not
#: follow ``SYNTHSAT_SHARED``, the traceback switch was named ``debug`` (77e2069) and
#: ``synthesize`` had no ``scale`` (05f9c2c). None of them changes a job's outputs.
LEGACY_VALUES: dict[str, tuple[Any, Any]] = {
    "paths.shared_dir": (
        "${oc.env:SYNTHSAT_SHARED,${paths.root}/../shared/data}",
        "${paths.root}/../shared/data",
    ),
}


LEGACY_RENAMED: dict[str, str] = {"traceback": "debug"}


LEGACY_UNSET: dict[str, Any] = {"scale": None}


#: The compose cache of :func:`compose_cache` while one is open: composed configs by
#: (config name, overrides), parsed overrides, and whether a name is a config group.
_CACHE: dict[str, dict[Any, Any]] | None = None


@contextmanager
def compose_cache() -> Iterator[None]:
    """While open, :func:`composed_config` composes each distinct head of overrides once:
    a study's stages of a kind differ only in plain value overrides at the end (seed,
    mix settings), which are applied to a copy of the head's config as Hydra applies
    them (after the defaults, in order). The configs are those of a full compose, so
    stage keys do not change; the cache is dropped on closing (a config file edited
    later is read again)."""
    global _CACHE
    outer = _CACHE
    _CACHE = {"configs": {}, "parsed": {}, "groups": {}} if outer is None else outer
    try:
        yield
    finally:
        _CACHE = outer


def _parsed(overrides: list[str], cache: dict[str, dict[Any, Any]]) -> list[Any]:
    """Hydra's parse of each of ``overrides`` (its ``Override``), once per string."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = cache["parsed"]
    new = [o for o in dict.fromkeys(overrides) if o not in parsed]
    if new:
        parsed.update(zip(new, OverridesParser.create().parse_overrides(overrides=new)))
    return [parsed[o] for o in overrides]


def _value_tail(overrides: list[Any], groups: dict[str, bool]) -> int:
    """Where the plain value overrides at the end of the parsed ``overrides`` start (an
    index; ``len(overrides)`` without any): overrides of keys that are not config groups,
    without a package, not of ``hydra``, not sweeps and not of dicts (as Hydra tells
    config overrides from group choices)."""
    from hydra.core.global_hydra import GlobalHydra

    repo = GlobalHydra.instance().config_loader().repository  # type: ignore[attr-defined]
    start = len(overrides)
    for override in reversed(overrides):
        key = override.key_or_group
        if key not in groups:
            groups[key] = repo.group_exists(key)
        if (
            groups[key]
            or override.is_sweep_override()
            or override.is_hydra_override()
            or override.package is not None
            or isinstance(override.value(), dict)
        ):
            break
        start -= 1
    return start


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    """Hydra's compose of ``config_name`` with ``overrides``, through the open
    :func:`compose_cache` (a copy of the cached config of the overrides' head with the
    plain value overrides of their tail applied, by Hydra's own function), else plain."""
    if _CACHE is None:
        return compose(config_name=config_name, overrides=overrides)
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    parsed = _parsed(overrides, _CACHE)
    cut = _value_tail(parsed, _CACHE["groups"])
    head = (config_name, tuple(overrides[:cut]))
    if head not in _CACHE["configs"]:
        _CACHE["configs"][head] = compose(config_name=config_name, overrides=list(head[1]))
    cfg = copy.deepcopy(_CACHE["configs"][head])
    ConfigLoaderImpl._apply_overrides_to_config(parsed[cut:], cfg)
    return cfg


def composed_config(module: str, overrides: list[str]) -> str:
    """The job's config (``conf/<job>.yaml`` with ``overrides``), uninterpolated, as YAML,
    without the :data:`UNSET_KEYS` that hold their unset value and with the
    :data:`RENAMED_KEYS` under their old names (in place).

    Needs an initialised Hydra (inside the pipeline's ``@hydra.main``); the job's config
    file is named after the module's last part (``synthsat.train_generator``).
    """
    return _composed(module, overrides)[0]


def _composed(module: str, overrides: list[str]) -> tuple[str, DictConfig]:
    """:func:`composed_config`, and the config it dumps (:data:`UNSET_KEYS` left in,
    :data:`RENAMED_KEYS` under their new names)."""
    cfg = _compose(module.rsplit(".", 1)[-1], overrides)
    # OmegaConf.to_yaml's own steps, with the unset keys taken out of the plain copy and
    # the renamed keys put back under their old names
    plain = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    for key, value in UNSET_KEYS.items():
        if OmegaConf.select(cfg, key, default=_ABSENT, throw_on_resolution_failure=False) != value:
            continue
        *parents, last = key.split(".")
        node: Any = plain
        for part in parents:
            node = node[part]
        del node[last]
    for key in RENAMED_KEYS:
        found = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_resolution_failure=False)
        if found is _ABSENT:
            continue
        *parents, last = key.split(".")
        node = plain
        for part in parents[:-1]:
            node = node[part]
        parent = node[parents[-1]] if parents else node
        renamed_node = {RENAMED_KEYS[key] if k == last else k: v for k, v in parent.items()}
        if parents:
            node[parents[-1]] = renamed_node
        else:
            plain = renamed_node
    return _dump(plain), cfg


def _dump(plain: Any) -> str:
    """``OmegaConf.to_yaml``'s dump of a plain copy of a config."""
    from omegaconf._utils import get_omega_conf_dumper

    return yaml.dump(
        plain,
        default_flow_style=False,
        allow_unicode=True,
        sort_keys=False,
        Dumper=get_omega_conf_dumper(),
    )


def legacy_config(config: str) -> str:
    """A stage's :attr:`~Stage.config` as it was written before commit a3b8a58: the
    :data:`LEGACY_VALUES` at their old values, :data:`LEGACY_RENAMED` keys under their
    old names (in place), :data:`LEGACY_UNSET` keys at their unset value left out."""
    plain = yaml.safe_load(config) or {}
    for key, (new, old) in LEGACY_VALUES.items():
        *parents, last = key.split(".")
        node = plain
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(last, _ABSENT) == new:
            node[last] = old
    for key, value in LEGACY_UNSET.items():
        if plain.get(key, _ABSENT) == value:
            del plain[key]
    plain = {LEGACY_RENAMED.get(k, k): v for k, v in plain.items()}
    return _dump(plain)
