"""synthsat: mask-conditional synthetic satellite imagery."""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"


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
