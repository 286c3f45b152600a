"""SLURM parameters of the study's job arrays: the ``slurm`` config group
(``conf/slurm/``) as submitit's :class:`~submitit.SlurmExecutor` takes them, and the
``#SBATCH`` lines it writes for a wave (shown by the dry run).

A wave's resources follow the device its stages run on (:func:`wave_devices`): a GPU wave
asks for the group's GPUs and CPUs; a CPU wave asks for its CPUs and no GPU, and its
stages' torch threads (``SYNTHSAT_THREADS``) use every CPU asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from synthsat.study.stages import Stage

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


#: Devices of a stage (:func:`stage_device`) and of a wave (:func:`wave_devices`).
DEVICES = ("cpu", "gpu")


def stage_device(stage: Stage) -> str:
    """The device a stage's job asks for in its composed config: ``cpu``, ``gpu`` or
    ``auto`` (whatever the machine has).

    A job with a trainer (training, synthesis) by ``trainer.accelerator`` (``cpu``;
    ``gpu`` / ``cuda``; anything else: ``auto``), ``evaluate_synthetic`` by ``device``
    (``cpu``, ``cuda``, ``auto``).
    """
    from omegaconf import OmegaConf

    cfg = stage.composed_cfg()
    key = "trainer.accelerator" if OmegaConf.select(cfg, "trainer") is not None else "device"
    try:
        value = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
    except Exception:  # noqa: BLE001 - an interpolation that needs a running Hydra job
        value = None
    value = str(value).lower() if value is not None else "auto"
    if value == "cpu":
        return "cpu"
    return "gpu" if value in ("gpu", "cuda") else "auto"


def wave_devices(waves: Mapping[str, Sequence[Stage]]) -> dict[str, str]:
    """The device of each wave (``cpu`` or ``gpu``), from its stages' :func:`stage_device`:
    ``gpu`` where a stage asks for a GPU; a stage on ``auto`` follows the study (a GPU
    where any stage of any wave asks for one, else CPUs: e.g. ``experiment=dubai``'s
    synthesis runs beside CPU training); ``cpu`` otherwise."""
    devices = {kind: {stage_device(s) for s in stages} for kind, stages in waves.items()}
    gpu_study = any("gpu" in found for found in devices.values())
    return {
        kind: "gpu" if "gpu" in found or ("auto" in found and gpu_study) else "cpu"
        for kind, found in devices.items()
    }


def slurm_parameters(
    slurm: Mapping[str, Any], kind: str | None = None, device: str = "gpu"
) -> dict[str, Any]:
    """submitit's SlurmExecutor parameters from the ``slurm`` config group: its keys of
    :data:`SLURM_KEYS` that are set (a ``cpu`` wave without ``gpus_per_node``), with the
    overrides of ``slurm.stages.<kind>``."""
    if device not in DEVICES:
        raise ValueError(f"device {device!r}: expected one of {DEVICES}")
    merged = {k: slurm[k] for k in SLURM_KEYS if slurm.get(k) is not None}
    if device == "cpu":
        merged.pop("gpus_per_node", None)
    if kind is not None:
        merged.update(dict((slurm.get("stages") or {}).get(kind) or {}))
    if "setup" in merged:
        merged["setup"] = [str(line) for line in merged["setup"]]
    if "additional_parameters" in merged:
        merged["additional_parameters"] = dict(merged["additional_parameters"])
    return merged


@dataclass(frozen=True)
class WaveResources:
    """What a wave's job array asks SLURM for, and the threads its stages use.

    Attributes:
        device: ``cpu`` or ``gpu`` (:func:`wave_devices`).
        parameters: submitit's SlurmExecutor parameters (:func:`slurm_parameters`).
        threads: ``SYNTHSAT_THREADS`` of its stages: a CPU wave's ``cpus_per_task`` (None:
            the job's own, e.g. a GPU wave's).
    """

    device: str
    parameters: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None

    def env(self) -> dict[str, str]:
        """Variables of the wave's stages (``SYNTHSAT_THREADS`` of a CPU wave)."""
        return {} if self.threads is None else {"SYNTHSAT_THREADS": str(self.threads)}

    def describe(self) -> str:
        """One line for the dry run, e.g. ``CPU: 8 CPUs per stage, 8 torch threads, no GPU``."""
        cpus = self.parameters.get("cpus_per_task")
        cpu_text = f"{cpus} CPUs per stage" if cpus is not None else "SLURM's default CPUs"
        if self.device == "cpu" and not self.parameters.get("gpus_per_node"):
            threads = f"{self.threads} torch threads" if self.threads else "1 torch thread"
            return f"CPU: {cpu_text}, {threads}, no GPU"
        gpus = self.parameters.get("gpus_per_node") or 0
        return f"{self.device.upper()}: {gpus} GPU{'s' * (gpus != 1)} per node, {cpu_text}"


def wave_resources(slurm: Mapping[str, Any], kind: str, device: str) -> WaveResources:
    """The :class:`WaveResources` of a ``kind`` wave on ``device`` (``cpu`` or ``gpu``)."""
    parameters = slurm_parameters(slurm, kind, device)
    cpus = parameters.get("cpus_per_task")
    threads = int(cpus) if device == "cpu" and cpus is not None else None
    return WaveResources(device, parameters, threads)


def sbatch_lines(
    slurm: Mapping[str, Any], kind: str, count: int, folder: Path, device: str = "gpu"
) -> list[str]:
    """The ``#SBATCH`` lines of a wave of ``count`` stages of ``kind`` (one job array) on
    ``device``, as submitit writes them for ``pipeline.executor=slurm`` (job files in
    ``folder``)."""
    from submitit.slurm.slurm import _make_sbatch_string

    text = _make_sbatch_string(
        command="<stage job>",
        folder=str(folder / "%j"),
        job_name=f"synthsat-{kind}",
        map_count=count,
        **slurm_parameters(slurm, kind, device),
    )
    return [line for line in text.splitlines() if line.startswith("#SBATCH")]
