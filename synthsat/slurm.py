"""SLURM parameters of the study's job arrays: the ``slurm`` config group
(``conf/slurm/``) as submitit's :class:`~submitit.SlurmExecutor` takes them, and the
``#SBATCH`` lines it writes for a wave (shown by the dry run)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: sbatch parameters of the ``slurm`` config group, as submitit's SlurmExecutor names them.
SLURM_KEYS = (
    "partition",
    "account",
    "qos",
    "time",
    "nodes",
    "ntasks_per_node",
    "gpus_per_node",
    "cpus_per_task",
    "mem",
    "constraint",
    "array_parallelism",
    "setup",
    "additional_parameters",
)


def slurm_parameters(slurm: Mapping[str, Any], kind: str | None = None) -> dict[str, Any]:
    """submitit's SlurmExecutor parameters from the ``slurm`` config group: its keys of
    :data:`SLURM_KEYS` that are set, with the overrides of ``slurm.stages.<kind>``."""
    merged = {k: slurm[k] for k in SLURM_KEYS if slurm.get(k) is not None}
    if kind is not None:
        merged.update(dict((slurm.get("stages") or {}).get(kind) or {}))
    if "setup" in merged:
        merged["setup"] = [str(line) for line in merged["setup"]]
    if "additional_parameters" in merged:
        merged["additional_parameters"] = dict(merged["additional_parameters"])
    return merged


def sbatch_lines(slurm: Mapping[str, Any], kind: str, count: int, folder: Path) -> list[str]:
    """The ``#SBATCH`` lines of a wave of ``count`` stages of ``kind`` (one job array),
    as submitit writes them for ``pipeline.executor=slurm`` (job files in ``folder``)."""
    from submitit.slurm.slurm import _make_sbatch_string

    text = _make_sbatch_string(
        command="<stage job>",
        folder=str(folder / "%j"),
        job_name=f"synthsat-{kind}",
        map_count=count,
        **slurm_parameters(slurm, kind),
    )
    return [line for line in text.splitlines() if line.startswith("#SBATCH")]
