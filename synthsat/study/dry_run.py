"""The dry run of a study (``pipeline.dry_run=true``): its plan, with device hours.

:func:`describe_plan` prints the stages of each wave of a :class:`~synthsat.study.plan.StudyPlan`
(and how many are done), the job count, the resources and ``#SBATCH`` lines of each wave's
job array (``pipeline.executor=slurm``: CPU waves ask for no GPU) and the device time of
each wave (:func:`estimate_wave`): step or time budgets from the stages' composed configs,
times per step measured on the study's finished stages (:func:`measured_times`) or given
in ``pipeline.estimate``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from synthsat.study.compose import compose_cache
from synthsat.study.plan import (
    PENDING_CHECKPOINT,
    WAVES,
    StudyPlan,
    real_only_checkpoint,
)
from synthsat.study.stages import Stage

#: The benchmark that measures a kind's step (or stage) time.
BENCHMARKS = {
    "generator": "benchmarks/generator_step.py",
    "segmentation": "benchmarks/segmentation_step.py",
    "synthesis": "benchmarks/synthesis.py",
}


def _select(stage: Stage, key: str) -> Any:
    """A value of a stage's composed config (None where unset or not resolvable)."""
    cfg = stage.composed_cfg()
    try:
        return OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
    except Exception:  # noqa: BLE001 - an interpolation that needs a running Hydra job
        return None


def stage_steps(stage: Stage) -> tuple[int | None, bool]:
    """A training stage's step budget: ``(steps, bound)``.

    ``trainer.max_steps`` where set (> 0), else ``trainer.max_epochs`` times the batches of
    an epoch (``data.patches_per_epoch / data.batch_size``): then ``bound`` is True, as
    early stopping may end it sooner. ``(None, False)`` for a job without a trainer.
    """
    if _select(stage, "trainer") is None:
        return None, False
    steps = _select(stage, "trainer.max_steps")
    if isinstance(steps, int) and steps > 0:
        return steps, False
    epochs = _select(stage, "trainer.max_epochs")
    patches, batch = _select(stage, "data.patches_per_epoch"), _select(stage, "data.batch_size")
    if all(isinstance(v, int) and v > 0 for v in (epochs, patches, batch)):
        return epochs * -(-patches // batch), True
    return None, False


@dataclass
class Measured:
    """Job times of one kind of stage finished in a study's results.

    Attributes:
        stages: how many were measured.
        stage_s: mean seconds per stage.
        step_s: seconds per training step (total seconds over total ``trainer.max_steps``
            of the runs, from their ``.hydra/config.yaml``), None without steps.
    """

    stages: int
    stage_s: float
    step_s: float | None


def measured_times(results: Path) -> dict[str, Measured]:
    """:class:`Measured` job times of each kind of stage finished in ``results``."""
    seen: dict[str, list[float]] = {}
    for done in sorted(results.glob("*/*/done.json")):
        record = json.loads(done.read_text())
        config = done.parent / ".hydra" / "config.yaml"
        steps = None
        if config.exists():
            steps = OmegaConf.select(OmegaConf.load(config), "trainer.max_steps", default=None)
        seconds = float(record["seconds"])
        n, total_s, stepped_s, total_steps = seen.setdefault(record["kind"], [0, 0.0, 0.0, 0])
        ok = isinstance(steps, int) and steps > 0
        seen[record["kind"]] = [
            n + 1,
            total_s + seconds,
            stepped_s + (seconds if ok else 0.0),
            total_steps + (steps if ok else 0),
        ]
    return {
        kind: Measured(int(n), total_s / n, stepped_s / steps if steps else None)
        for kind, (n, total_s, stepped_s, steps) in seen.items()
    }


def _max_time_s(stage: Stage) -> float | None:
    """A training stage's ``trainer.max_time`` (``DD:HH:MM:SS``) in seconds, None if unset."""
    value = _select(stage, "trainer.max_time")
    if not isinstance(value, str) or value.count(":") != 3:
        return None
    days, hours, minutes, seconds = (int(x) for x in value.split(":"))
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


@dataclass
class WaveEstimate:
    """A wave's device time: ``seconds`` (None: no step time known), how it was got."""

    seconds: float | None
    how: str


def estimate_wave(
    kind: str,
    stages: Sequence[Stage],
    estimate: Mapping[str, Any],
    measured: Mapping[str, Measured],
) -> WaveEstimate:
    """The device time of a wave's ``stages``: steps x seconds per step for training
    stages (a time budget where ``trainer.max_time`` is set), seconds per stage for the
    others. Seconds per step come from ``measured`` (this study's finished stages) or
    ``estimate.step_s.<kind>``; seconds per stage from ``measured`` or
    ``estimate.stage_s.<kind>``."""
    step_s = (estimate.get("step_s") or {}).get(kind)
    stage_s = (estimate.get("stage_s") or {}).get(kind)
    source = f"pipeline.estimate, {estimate.get('device') or 'device not named'}"
    if kind in measured:
        m = measured[kind]
        step_s = m.step_s if m.step_s is not None else step_s
        stage_s = m.stage_s
        source = f"measured: {m.stages} finished {kind} stage{'s' * (m.stages != 1)} here"
    budgets = [_max_time_s(stage) for stage in stages]
    if stages and all(b is not None for b in budgets):
        total = float(sum(b for b in budgets if b is not None))
        return WaveEstimate(total, f"trainer.max_time {total / len(stages) / 60:.0f} min each")
    steps = [stage_steps(stage) for stage in stages]
    if stages and all(s is not None for s, _ in steps):
        n_steps = sum(s for s, _ in steps if s is not None)
        bound = "at most " if any(b for _, b in steps) else ""
        if step_s is None:
            return WaveEstimate(
                None,
                f"{bound}{n_steps} steps; no step time: set pipeline.estimate.step_s.{kind}, "
                f"measured with {BENCHMARKS.get(kind, 'benchmarks/')} on the target device",
            )
        return WaveEstimate(
            n_steps * float(step_s), f"{bound}{n_steps} steps x {float(step_s):.3g} s ({source})"
        )
    if stage_s is None:
        how = f"no time per stage: set pipeline.estimate.stage_s.{kind}"
        if kind in BENCHMARKS:
            how += f", measured with {BENCHMARKS[kind]} on the target device"
        return WaveEstimate(None, how)
    return WaveEstimate(
        len(stages) * float(stage_s), f"{len(stages)} x {float(stage_s):g} s ({source})"
    )


def _planned_checkpoint(plan: StudyPlan) -> str:
    """The real-only checkpoint the synthetic-metric stages will score with: the finished
    real-only run's, else a placeholder (those stages' keys are then not final)."""
    outs = [stage.directory(plan.results) for stage in plan.waves.get("segmentation", [])]
    try:
        return real_only_checkpoint(plan.runs, outs) or PENDING_CHECKPOINT
    except FileNotFoundError:  # the real-only run has not finished
        return PENDING_CHECKPOINT


def describe_plan(
    plan: StudyPlan,
    executor: str,
    estimate: Mapping[str, Any],
    slurm: Mapping[str, Any] | None = None,
) -> str:
    """``pipeline.dry_run=true``'s printout: the stages per wave, the job count, the
    ``#SBATCH`` lines of each wave's job array (``executor`` ``slurm``) and the device
    hours (:func:`estimate_wave`)."""
    from synthsat.study.slurm import sbatch_lines, wave_devices, wave_resources

    counts = plan.counts()
    measured = measured_times(plan.results)
    lines = [
        f"[dry run] {sum(counts.values())} jobs in {len(counts)} waves on the {executor} "
        f"executor, then the report; results in {plan.results}"
    ]
    hours: float = 0.0
    unknown: list[str] = []
    waves = [kind for kind in WAVES if kind in counts]
    with compose_cache():
        staged = {
            kind: plan.waves[kind] or plan.metric_stages(_planned_checkpoint(plan))
            for kind in waves
        }
    devices = wave_devices(staged) if executor == "slurm" else {}
    sbatch = {
        kind: sbatch_lines(
            slurm or {}, kind, counts[kind], plan.results / ".submitit", devices[kind]
        )
        for kind in devices
    }
    common = [
        line for line in next(iter(sbatch.values()), []) if all(line in v for v in sbatch.values())
    ]
    if common:
        lines.append("sbatch, every wave (one job array each):")
        lines += [f"  {line}" for line in common]
    for k, kind in enumerate(waves):
        stages = staged[kind]
        done = sum((stage.directory(plan.results) / "done.json").exists() for stage in stages)
        labels = [stage.label for stage in stages]
        shown = ", ".join(labels[:4]) + (
            f", ... ({len(labels) - 4} more)" if len(labels) > 4 else ""
        )
        lines.append(f"wave {k + 1} {kind}: {len(stages)} stages ({done} done): {shown}")
        est = estimate_wave(kind, stages, estimate, measured)
        if est.seconds is None:
            unknown.append(kind)
            lines.append(f"  device time: not known ({est.how})")
        else:
            hours += est.seconds / 3600
            lines.append(f"  device time: {est.seconds / 3600:.1f} h ({est.how})")
        if kind in devices:
            resources = wave_resources(slurm or {}, kind, devices[kind])
            lines.append(f"  resources: {resources.describe()}")
        lines += [f"  {line}" for line in sbatch.get(kind, []) if line not in common]
    total = f"{hours:.1f} device hours"
    if unknown and hours == 0:
        total = "device hours not known (no time for any wave)"
    elif unknown:
        total = f"over {total} (not known: {', '.join(unknown)})"
    lines.append(f"total: {sum(counts.values())} jobs, {total}")
    return "\n".join(lines)
