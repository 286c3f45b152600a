"""synthsat: mask-conditional synthetic satellite imagery."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

__version__ = "0.1.0"


def launch_dir() -> str:
    """The directory a job was launched from: Hydra's ``runtime.cwd``, else the process's.

    ``conf/paths/default.yaml`` roots the default locations here through the
    ``${synthsat.cwd:}`` resolver. Hydra's own ``${hydra:runtime.cwd}`` cannot be used
    there: a multirun resolves ``hydra.sweep.dir`` (which lies under ``paths.root``)
    before any job has set the Hydra config, so every sweep stopped with "HydraConfig
    was not set". Inside a job both give the same folder (``hydra.job.chdir=false``).
    """
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.cwd)
    return os.getcwd()


# Registered on import: every entry point imports synthsat before Hydra composes a config.
if not OmegaConf.has_resolver("synthsat.cwd"):
    OmegaConf.register_new_resolver("synthsat.cwd", launch_dir)

# The config schemas (ConfigStore group ``schema``), also before any config is composed.
from synthsat import schemas as _schemas  # noqa: E402

_schemas.register()


def config_dir() -> str:
    """The absolute path of the Hydra config folder, in a checkout and in a wheel.

    ``conf/`` lives at the top of the repository; a wheel ships it as the package data
    folder ``synthsat/conf`` (``package-dir`` in ``pyproject.toml``). Every job passes
    this absolute path as its ``config_path``, so ``python -m synthsat.<job>`` and the
    ``synthsat-*`` console scripts find their configs from any working directory (a
    relative ``config_path`` is resolved against the calling module's package for
    console scripts, and ``pkg://`` cannot reach a folder outside the package).

    Raises:
        FileNotFoundError: neither layout holds the configs.
    """
    package = Path(__file__).resolve().parent
    for candidate in (package / "conf", package.parent / "conf"):
        if (candidate / "train_segmentation.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"synthsat's Hydra configs are in neither {package / 'conf'} (installed wheel) nor "
        f"{package.parent / 'conf'} (repository checkout)"
    )
