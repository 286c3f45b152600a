"""Stage machinery of the study: a stage is one Hydra job run as its own process.

A stage's directory is named after its parameters and a hash of its composed config
(the job's config files with the stage's overrides applied, before interpolation); a
``done.json`` there marks it finished, so a rerun skips it; while its job runs, a
``stage.lock`` there keeps a second run from starting it again; a training stage
interrupted before ``done.json`` resumes from its ``checkpoints/last.ckpt``.
The config is composed by :mod:`synthsat.study.compose`; :mod:`synthsat.study.plan`
composes the study's stages; :mod:`synthsat.study.executors` runs each as a submitit job
calling :func:`run_stage`; a :class:`~synthsat.study.progress.Progress` numbers them
``[k/N]`` and estimates the time left.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from synthsat.atomic import write_text
from synthsat.locks import FileLock
from synthsat.study import processes

# composed configs (re-exported: the names were this module's before the split)
from synthsat.study.compose import (  # noqa: F401
    RENAMED_KEYS,
    UNSET_KEYS,
    _composed,
    compose_cache,
    composed_config,
    legacy_config,
)
from synthsat.study.progress import Progress, say


@dataclass
class Stage:
    """One job of the study: a module run with Hydra overrides in its own directory."""

    kind: str
    label: str
    module: str
    overrides: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    config: str = ""
    #: :attr:`config` as stage keys wrote it before commit a3b8a58 (:func:`legacy_config`;
    #: empty: the same), so stages finished then are still found (:meth:`directory`)
    legacy_config: str = ""
    #: the composed config that :attr:`config` dumps, where :func:`make_stage` made it
    #: (not pickled: a stage's job does not need it)
    composed: Any = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "composed": None}

    def composed_cfg(self) -> DictConfig:
        """The stage's composed config, uninterpolated (:attr:`config` read back where
        the stage does not hold it)."""
        if self.composed is None:
            self.composed = OmegaConf.create(self.config or "{}")
        return self.composed

    @property
    def key(self) -> str:
        """Hash of what determines the stage's outputs: module, overrides and config, as
        they are (absolute paths included; the folder's name is :meth:`key_in`'s)."""
        return _hash(self.module, self.overrides, self.config)

    def key_in(self, results: Path) -> str:
        """:attr:`key` with the study's ``results`` folder written as
        :data:`RESULTS_TOKEN` wherever the overrides and config name it (an upstream
        stage's checkpoint or tiles): a study keys its stages alike wherever its results
        lie, so finished stages copied to another checkout or machine are skipped there."""
        root = str(results)
        overrides = [o.replace(root, RESULTS_TOKEN) for o in self.overrides]
        return _hash(self.module, overrides, self.config.replace(root, RESULTS_TOKEN))

    def legacy_keys(self) -> list[str]:
        """The keys earlier studies named this stage's folder by: :attr:`key` (absolute
        paths in it) and, where it differs, the same over :attr:`legacy_config`."""
        keys = [self.key]
        if self.legacy_config and self.legacy_config != self.config:
            keys.append(_hash(self.module, self.overrides, self.legacy_config))
        return keys

    def directory(self, results: Path) -> Path:
        """Where the stage writes: ``<results>/<kind>/<label>-<key>`` with the key of
        :meth:`key_in`. A stage finished under one of its :meth:`legacy_keys` (a study
        run before keys left the results folder out) is found there instead and so
        skipped; one begun there but never finished starts again under the new name."""
        out = results / self.kind / f"{self.label}-{self.key_in(results)}"
        if (out / "done.json").exists():
            return out
        for key in self.legacy_keys():
            old = results / self.kind / f"{self.label}-{key}"
            if (old / "done.json").exists():
                return old
        return out


def _hash(module: str, overrides: list[str], config: str) -> str:
    """The first 10 hex digits of the SHA-1 of a stage's module, overrides and config."""
    blob = json.dumps([module, overrides, config], sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


#: How a stage's folder name writes the study's results folder (:meth:`Stage.key_in`).
RESULTS_TOKEN = "${results}"


def make_stage(
    kind: str, label: str, module: str, overrides: list[str], params: dict[str, Any]
) -> Stage:
    """A stage whose key covers its composed config (so preset edits rerun it), with the
    config's :func:`legacy_config` for the folders of stages finished before."""
    config, cfg = _composed(module, overrides)
    return Stage(kind, label, module, overrides, params, config, legacy_config(config), cfg)


#: The job modules that resume from ``ckpt_path``, and where their last checkpoint is.
RESUMABLE = frozenset({"synthsat.train_generator", "synthsat.train_segmentation"})
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"

#: A stage's lock file, in its directory, while its job runs.
LOCK_NAME = "stage.lock"


def resume_checkpoint(module: str, out: Path) -> Path | None:
    """The ``last.ckpt`` an interrupted training stage in ``out`` resumes from (None: the
    stage is done, not a training job, or has none)."""
    ckpt = out / LAST_CHECKPOINT
    if module in RESUMABLE and not (out / "done.json").exists() and ckpt.is_file():
        return ckpt
    return None


def stage_command(stage: Stage, out: Path) -> list[str]:
    """The stage's job command, run in ``out``: ``ckpt_path=<last.ckpt>`` added when it
    resumes (:func:`resume_checkpoint`) — not one of its overrides, so not in its key."""
    cmd = [sys.executable, "-m", stage.module, *stage.overrides, f"hydra.run.dir={out}"]
    ckpt = resume_checkpoint(stage.module, out)
    return cmd if ckpt is None else [*cmd, f"ckpt_path={ckpt}"]


class StageFailed(RuntimeError):
    """A stage's job exited with an error."""


def run_stage(
    stage: Stage,
    results: Path,
    log: list[str],
    env: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> Path:
    """Run ``stage`` unless it is already done; return its directory.

    The job runs in its own session (stopped with the pipeline, see
    :mod:`synthsat.study.processes`) under the stage's lock (:data:`LOCK_NAME`, see
    :mod:`synthsat.locks`), which names the job's process while it runs.

    Args:
        stage: the job to run.
        results: the study's results directory.
        log: receives one line per stage (ran / skipped).
        env: environment of the job's process (default: this process's).
        progress: numbers the printed lines ``[k/N]`` and adds the ETA (None: neither).

    Raises:
        LockHeld: another live process runs this stage (e.g. a job left running by a
            ``kill -9`` of an earlier pipeline): the study stops, naming its pid and host.
        StageFailed: the job exited with an error.
    """
    out = stage.directory(results)
    done = out / "done.json"
    name = f"{stage.kind}/{stage.label}"
    if done.exists():
        log.append(f"skip  {name} (done)")
        tag = f" {progress.skip(stage.kind)}" if progress is not None else ""
        say(f"[pipeline] skip {name}{tag}: done in {out}")
        return out
    out.mkdir(parents=True, exist_ok=True)
    with FileLock(out / LOCK_NAME, f"stage {name}", notify=say) as lock:
        if done.exists():  # finished by the run that held the lock until just now
            return run_stage(stage, results, log, env, progress)
        return _run_job(stage, out, log, env, lock, progress)


def _run_job(
    stage: Stage,
    out: Path,
    log: list[str],
    env: dict[str, str] | None,
    lock: FileLock,
    progress: Progress | None,
) -> Path:
    """Run the stage's job in ``out`` (holding its ``lock``) and mark it done."""
    done = out / "done.json"
    name = f"{stage.kind}/{stage.label}"
    cmd = stage_command(stage, out)
    if (ckpt := resume_checkpoint(stage.module, out)) is not None:
        say(f"[pipeline] resume {name} from {ckpt}")
    tag = f" {progress.start()}" if progress is not None else ""
    say(f"[pipeline] run  {name}{tag}: {' '.join(cmd[1:])}")
    start, began = time.perf_counter(), time.time()
    with open(out / "stage.log", "w") as logfile:
        proc = processes.start(cmd, logfile, env, on_start=lock.hand_to)
        returncode = processes.wait(proc)
    seconds = time.perf_counter() - start
    problem = unfinished(stage, out, returncode, began)
    if problem is not None:
        tail = (out / "stage.log").read_text().splitlines()[-25:]
        raise StageFailed(f"stage {name} {problem}; log: {out / 'stage.log'}\n" + "\n".join(tail))
    record = {
        "kind": stage.kind,
        "label": stage.label,
        "module": stage.module,
        "overrides": stage.overrides,
        "params": stage.params,
        "seconds": seconds,
    }
    write_text(done, json.dumps(record, indent=2))
    log.append(f"ran   {name} in {seconds:.0f} s")
    tag = f" {progress.finish(stage.kind, seconds)}" if progress is not None else ""
    say(f"[pipeline] done {name} in {seconds:.0f} s{tag}")
    return out


#: Exit statuses of a job stopped by a signal (SIGINT, SIGTERM, SIGKILL), as a shell
#: or :mod:`subprocess` reports them.
INTERRUPTED = frozenset({130, 143, 137, -2, -15, -9})


def unfinished(stage: Stage, out: Path, returncode: int, began: float) -> str | None:
    """Why the stage's job, which exited with ``returncode``, did not finish (None: it did).

    A job stopped by a signal was interrupted; a training job (:data:`RESUMABLE`) that
    exited 0 without writing its ``metrics.json`` since ``began`` (epoch seconds) did not
    reach its end either. Neither is recorded done: a rerun resumes it.
    """
    resumes = " (a rerun resumes it from its last.ckpt)" if stage.module in RESUMABLE else ""
    if returncode in INTERRUPTED:
        return f"was interrupted (exit {returncode}) before it finished: not done{resumes}"
    if returncode != 0:
        return f"failed (exit {returncode})"
    metrics = out / "metrics.json"
    if stage.module in RESUMABLE and not (
        metrics.is_file() and metrics.stat().st_mtime >= began - 1.0
    ):
        return f"ended without writing {metrics.name}: not done{resumes}"
    return None


def stage_threads(num_threads: int, jobs: int) -> int | None:
    """``SYNTHSAT_THREADS`` of each stage when ``jobs`` run side by side on one machine:
    the study's threads shared among them (None for one job: it inherits the study's)."""
    if jobs <= 1:
        return None
    return max(1, int(num_threads or os.cpu_count() or 1) // jobs)


def record_timing(results: Path, wall_s: float, log: list[str]) -> dict[str, Any]:
    """Add this pipeline run to ``timing.json`` and return its content.

    ``total_s`` sums the wall time of every pipeline run that reached the report (a
    resumed study took several); ``stages`` sums each kind's job time from the stages'
    own ``done.json`` records, whichever run did them.
    """
    path = results / "timing.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    runs = list(old.get("runs", []))
    if not runs and "total_s" in old:  # written before runs were recorded one by one
        runs.append({"wall_s": old["total_s"]})
    runs.append(
        {
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "wall_s": wall_s,
            "ran": sum(line.startswith("ran") for line in log),
            "skipped": sum(line.startswith("skip") for line in log),
            "log": log,
        }
    )
    stages: dict[str, float] = {}
    for done in sorted(results.glob("*/*/done.json")):
        record = json.loads(done.read_text())
        stages[record["kind"]] = stages.get(record["kind"], 0.0) + float(record["seconds"])
    timing = {"total_s": sum(r["wall_s"] for r in runs), "stages": stages, "runs": runs}
    write_text(path, json.dumps(timing, indent=2))
    return timing
