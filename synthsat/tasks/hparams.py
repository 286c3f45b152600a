"""Task settings as plain Python, and the generator's network config (old checkpoints too).

:func:`plain` turns the OmegaConf containers Hydra passes into dicts and lists, so that
a task's hyperparameters are saved (and checkpoints load) without OmegaConf types.
:func:`net_config` builds :class:`~synthsat.tasks.generator.GeneratorTask`'s ``net``
setting, folding in the flat network settings of checkpoints written before it existed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def plain(value: Any, deep: bool = False) -> Any:
    """``value`` with an OmegaConf container turned into Python dicts / lists (resolved).

    Args:
        value: any setting.
        deep: also go through Python dicts, lists and tuples (tuples become lists), so
            that OmegaConf containers nested in them are converted too; otherwise only a
            ``value`` that is itself an OmegaConf container is converted.
    """
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    if deep and isinstance(value, Mapping):
        return {k: plain(v, deep=True) for k, v in value.items()}
    if deep and isinstance(value, list | tuple):
        return [plain(v, deep=True) for v in value]
    return value


#: Settings of checkpoints written before the ``net`` config: the network's keys sat flat
#: among the task's (folded into ``net``), and the sample grid's (now the
#: :class:`~synthsat.callbacks.GeneratorSamples` callback's; ignored).
LEGACY_NET_KEYS = (
    "ngf",
    "start_size",
    "max_mult",
    "spade_hidden",
    "norm",
    "spectral",
    "output_scale",
    "start",
    "noise_dim",
    "noise_cell",
)
LEGACY_SAMPLE_KEYS = ("sample_every_n_steps", "sample_rows", "num_samples")
DEFAULT_NET = "synthsat.models.spade.SPADEGenerator"


def net_config(net: Mapping[str, Any] | None, legacy: Mapping[str, Any]) -> dict[str, Any]:
    """The generator network's config: ``net`` with the flat keys of old checkpoints
    (:data:`LEGACY_NET_KEYS`) folded in; ``_target_`` defaults to the SPADE generator.

    Raises:
        TypeError: ``legacy`` holds a key that is neither an old network key nor an old
            sample-grid key (a misspelt setting).
    """
    unknown = sorted(set(legacy) - set(LEGACY_NET_KEYS) - set(LEGACY_SAMPLE_KEYS))
    if unknown:
        raise TypeError(f"GeneratorTask got unexpected settings {unknown}")
    config = {"_target_": DEFAULT_NET, **dict(plain(net) or {})}
    config.update({k: plain(v) for k, v in legacy.items() if k in LEGACY_NET_KEYS})
    return config


#: The key under which checkpoints written before stored the generator's data metadata.
LEGACY_METADATA_KEY = "data"


def legacy_metadata(metadata: Mapping[str, Any] | None, legacy: dict[str, Any]) -> Any:
    """The generator's data metadata: ``metadata``, or, from a checkpoint written before,
    ``legacy``'s ``data`` (removed from ``legacy`` either way); None without either.

    Raises:
        TypeError: both are given, with different values.
    """
    old = legacy.pop(LEGACY_METADATA_KEY, None)
    if metadata is None:
        return old
    if old is not None and plain(old, deep=True) != plain(metadata, deep=True):
        raise TypeError("GeneratorTask got metadata and its old name data, with different values")
    return metadata


def checkpoint_metadata(hparams: Mapping[str, Any]) -> Any:
    """A checkpoint's data metadata, under ``metadata`` or the generator's old ``data``."""
    found = hparams.get("metadata")
    return found if found is not None else hparams.get(LEGACY_METADATA_KEY)
