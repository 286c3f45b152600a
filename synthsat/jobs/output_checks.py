"""Outputs never inside inputs: a job's output folders checked against its data folders
before anything is written (:func:`check_outputs`)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from synthsat.errors import ConfigError
from synthsat.study.grid import with_data_overrides


def _paths(cfg: DictConfig, keys: tuple[str, ...]) -> list[tuple[str, Path]]:
    found = []
    for key in keys:
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if value not in (None, "") and isinstance(value, str | Path):
            found.append((key, Path(value).expanduser().resolve()))
    return found


#: Config keys of folders a job reads its data from, and of folders it writes to.
INPUT_KEYS = ("data.source.root", "mix.source", "synthetic")
OUTPUT_KEYS = ("paths.output_dir", "out", "pipeline.results_dir")


#: Output keys of folders a job cleans up and lists as a whole (synthesis's ``out``:
#: its abandoned temporary files removed, its manifest rebuilt from what is there),
#: which must not hold the data either.
WHOLE_FOLDER_KEYS = ("out",)


def check_outputs(cfg: DictConfig) -> None:
    """Refuse an output folder that is, or is inside, an input data folder, and an
    ``out`` that holds one (``out=/``, or a parent of the data folder).

    Outputs there would be read back as data by the next run (and may overwrite it).

    Raises:
        ConfigError: naming both keys and folders.
    """
    inputs = _paths(cfg, INPUT_KEYS)
    if OmegaConf.select(cfg, "pipeline.data_overrides", default=None):
        inputs += _paths(with_data_overrides(cfg), ("data.source.root",))
    for out_key, out in _paths(cfg, OUTPUT_KEYS):
        for in_key, folder in inputs:
            if out == folder or folder in out.parents:
                raise ConfigError(
                    f"{out_key}={out} is inside the input data folder {in_key}={folder}; "
                    "outputs there would mix with the data (and be read back as data by "
                    "the next run). Choose an output folder outside it"
                )
            if out_key in WHOLE_FOLDER_KEYS and out in folder.parents:
                raise ConfigError(
                    f"{out_key}={out} holds the input data folder {in_key}={folder}; "
                    "outputs there would mix with the data (and the job tidies its "
                    "output folder). Choose an output folder outside it"
                )
