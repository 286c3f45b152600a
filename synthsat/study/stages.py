"""Stage machinery of the study: a stage is one Hydra job run as its own process.

A stage's directory is named after its parameters and a hash of its composed config
(the job's config files with the stage's overrides applied, before interpolation); a
``done.json`` there marks it finished, so a rerun skips it; while its job runs, a
``stage.lock`` there keeps a second run from starting it again; a training stage
interrupted before ``done.json`` resumes from its ``checkpoints/last.ckpt``.
:mod:`synthsat.study.plan` composes the study's stages; :mod:`synthsat.study.executors` runs each as
a submitit job calling :func:`run_stage`; a :class:`Progress` numbers them ``[k/N]``
and estimates the time left (:func:`eta_seconds`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra import compose
from omegaconf import DictConfig, OmegaConf

from synthsat.atomic import write_text
from synthsat.locks import FileLock
from synthsat.study import processes


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


_ABSENT = object()

#: How a stage's folder name writes the study's results folder (:meth:`Stage.key_in`).
RESULTS_TOKEN = "${results}"

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


_SAY_LOCK = threading.Lock()


def say(message: str) -> None:
    """Print one whole line, also when stages run side by side in threads."""
    with _SAY_LOCK:
        sys.stdout.write(message + "\n")
        sys.stdout.flush()


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 20 s`` or ``2 h 05 min`` (rounded to whole seconds / minutes)."""
    s = round(max(0.0, seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    m = round(s / 60)
    return f"{m // 60} h {m % 60:02d} min"


def eta_seconds(
    totals: Mapping[str, int],
    finished: Mapping[str, int],
    seconds: Mapping[str, Sequence[float]],
    jobs: int,
) -> tuple[float, dict[str, int]]:
    """Estimated time until every stage is finished, from the durations of finished ones.

    For each kind of stage: the mean duration of the stages of that kind that ran to
    completion in this pipeline run (skipped stages took no time and do not count),
    times the stages of that kind not finished yet (running ones count whole), divided
    by the jobs that can run them side by side (``min(jobs, left)``); the kinds' times
    are added (the study runs its kinds one phase after another). A kind with stages
    left but none timed yet has no estimate: it is returned apart, as its count of
    stages left, and not in the seconds.

    Args:
        totals: stages of the pipeline run per kind (skipped ones included).
        finished: stages finished (run or skipped) so far per kind.
        seconds: durations of the stages run to completion so far, per kind.
        jobs: stages run side by side (``pipeline.jobs``).

    Returns:
        ``(seconds, untimed)``: the estimate, and ``{kind: stages left}`` of the kinds
        without one.
    """
    eta = 0.0
    untimed: dict[str, int] = {}
    for kind, total in totals.items():
        left = total - finished.get(kind, 0)
        if left <= 0:
            continue
        done = seconds.get(kind) or []
        if not done:
            untimed[kind] = left
            continue
        eta += sum(done) / len(done) * left / min(max(1, jobs), left)
    return eta, untimed


class Progress:
    """Numbers a pipeline run's stages ``[k/N]`` and estimates the time left; thread-safe.

    ``N`` is every stage of the run (skipped ones included). A ``run`` or ``skip`` line
    shows ``k`` = stages started so far (a skipped stage counts as started and
    finished), a ``done`` line ``k`` = stages finished so far, followed by the ETA of
    :func:`eta_seconds`.

    Args:
        totals: stages of the pipeline run per kind.
        jobs: stages run side by side.
    """

    def __init__(self, totals: Mapping[str, int], jobs: int = 1) -> None:
        self.totals = dict(totals)
        self.total = sum(self.totals.values())
        self.jobs = max(1, int(jobs))
        self.started = 0
        self.finished: dict[str, int] = {}
        self.seconds: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def tag(self, k: int) -> str:
        """``[k/N]``."""
        return f"[{k}/{self.total}]"

    def start(self) -> str:
        """Count a stage that starts running; its tag."""
        with self._lock:
            self.started += 1
            return self.tag(self.started)

    def skip(self, kind: str) -> str:
        """Count a stage skipped as done (started and finished at once); its tag."""
        with self._lock:
            self.started += 1
            self.finished[kind] = self.finished.get(kind, 0) + 1
            return self.tag(self.started)

    def finish(self, kind: str, seconds: float) -> str:
        """Count a stage that ran for ``seconds``; its tag and the ETA, e.g.
        ``[3/8]; ETA 2 min 30 s (5 stages left)``."""
        with self._lock:
            self.finished[kind] = self.finished.get(kind, 0) + 1
            self.seconds.setdefault(kind, []).append(float(seconds))
            eta, untimed = eta_seconds(self.totals, self.finished, self.seconds, self.jobs)
            done = sum(self.finished.values())
        left = self.total - done
        # stages of a kind not timed yet add an unknown time: the ETA is a lower bound
        if not untimed:
            estimate = format_duration(eta)
        else:
            estimate = f"over {format_duration(eta)}" if eta > 0 else "not known yet"
        line = f"{self.tag(done)}; ETA {estimate} ({left} stage{'s' * (left != 1)} left"
        if untimed:
            line += "; not timed yet: " + ", ".join(f"{n} {k}" for k, n in untimed.items())
        return line + ")"


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
