"""Stages as submitit jobs (:mod:`synthsat.study.executors`): a wave on the local executor runs
each stage once, at most ``jobs`` at once, in order; a failure stops new stages and
waits for running ones; the debug executor runs stages in this process; a SLURM wave is
one job array with the ``slurm`` group's sbatch parameters (checked with a stand-in
``sbatch``, no cluster).

Stages here run stand-in job modules (scripts on the stage processes' PYTHONPATH).
"""

from __future__ import annotations

import json
import os
import pickle
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import submitit
from conftest import REPO, STAND_IN_HEAD, modules_on_path

from synthsat.errors import ConfigError
from synthsat.study.executors import (
    DetachedLocalExecutor,
    StageJob,
    make_executor,
    run_wave,
)
from synthsat.study.slurm import sbatch_lines, slurm_parameters
from synthsat.study.stages import Stage, StageFailed

TIMED = (
    STAND_IN_HEAD
    + """\
import os, time
args = dict(a.split("=", 1) for a in sys.argv[1:] if not a.startswith("hydra."))
start = time.time()
time.sleep(float(args.get("sleep", 0)))
(out / "times.json").write_text(f'[{start}, {time.time()}, {os.getpid()}, {os.getppid()}]')
print("threads", os.environ.get("SYNTHSAT_THREADS"))
sys.exit(int(args.get("exit", 0)))
"""
)


@pytest.fixture()
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    modules_on_path(tmp_path / "jobs", monkeypatch, {"timed_job": TIMED}, REPO)
    return "timed_job"


def timed(i: int, sleep: float = 0.0, exit: int = 0) -> Stage:
    return Stage(
        "segmentation", f"run{i}", "timed_job", [f"i={i}", f"sleep={sleep}", f"exit={exit}"]
    )


def test_a_local_wave_runs_each_stage_once_at_most_jobs_at_once(
    stand_in: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    stages = [timed(i, sleep=1.5) for i in range(4)]
    executor = make_executor("local", results / ".submitit")
    assert isinstance(executor, DetachedLocalExecutor)
    log: list[str] = []
    outs = run_wave(executor, stages, results, 2, log, {"SYNTHSAT_THREADS": "3"})
    assert outs == [stage.directory(results) for stage in stages]  # in stage order
    spans = [json.loads((out / "times.json").read_text()) for out in outs]
    # at most 2 at once: no moment is inside 3 runs, and some is inside 2
    edges = sorted(t for start, end, *_ in spans for t in (start, end))
    inside = [sum(s <= t < e for s, e, *_ in spans) for t in edges]
    assert max(inside) == 2
    assert all((out / "done.json").exists() for out in outs)
    assert all((out / "stage.log").read_text() == "threads 3\n" for out in outs)  # env set
    assert sorted(line.split(" in ")[0] for line in log) == [
        f"ran   segmentation/run{i}" for i in range(4)
    ]
    # the stage jobs ran under submitit's job processes, not the pipeline
    assert all(parent != os.getpid() for *_, _pid, parent in spans)
    said = [line for line in capsys.readouterr().out.splitlines() if "[pipeline] run" in line]
    assert len(said) == 4 and all(" (job " in line for line in said)

    # a rerun submits nothing: every stage is done
    again: list[str] = []
    assert run_wave(executor, stages, results, 2, again) == outs
    assert again == [f"skip  segmentation/run{i} (done)" for i in range(4)]


def test_a_failure_stops_new_stages_and_waits_for_running_ones(
    stand_in: str, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    stages = [timed(0, exit=3), timed(1, sleep=2.0), *(timed(i) for i in range(2, 5))]
    executor = make_executor("local", results / ".submitit")
    with pytest.raises(StageFailed) as failed:
        run_wave(executor, stages, results, 2, [])
    out0, out1 = (stage.directory(results) for stage in stages[:2])
    assert str(failed.value).startswith(
        f"stage segmentation/run0 failed (exit 3); log: {out0 / 'stage.log'}"
    )
    assert not (out0 / "done.json").exists()
    assert (out1 / "done.json").exists()  # the running stage finished, not abandoned
    for stage in stages[2:]:  # queued stages never started
        assert not stage.directory(results).exists()


def test_the_debug_executor_runs_stages_here_one_by_one(stand_in: str, tmp_path: Path) -> None:
    results = tmp_path / "results"
    executor = make_executor("debug", results / ".submitit")
    outs = run_wave(executor, [timed(0), timed(1)], results, 4, [])
    (s0, e0, _, parent0), (s1, *_, parent1) = (
        json.loads((out / "times.json").read_text()) for out in outs
    )
    assert parent0 == parent1 == os.getpid()  # the stage's job is this process's child
    assert s1 >= e0  # one after the other, whatever the jobs
    with pytest.raises(StageFailed, match=r"^stage segmentation/run2 failed \(exit 3\)"):
        run_wave(executor, [timed(2, exit=3)], results, 1, [])


def test_an_unknown_executor_or_no_slurm_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(
        ConfigError, match="pipeline.executor='lokal': choose one of local, slurm, debug"
    ):
        make_executor("lokal", Path("x"))
    monkeypatch.setenv("PATH", "")
    with pytest.raises(ConfigError, match="pipeline.executor=slurm needs SLURM"):
        make_executor("slurm", Path("x"), {})


SLURM = {
    "partition": "gpu",
    "account": None,
    "time": 30,
    "gpus_per_node": 1,
    "cpus_per_task": 4,
    "mem": "8GB",
    "array_parallelism": 2,
    "setup": ["module load cuda"],
    "additional_parameters": {},
    "stages": {"synthetic_metrics": {"time": 5, "gpus_per_node": 0}},
}

SBATCH = """\
#!/bin/sh
# stand-in sbatch: keeps the script it was given and answers as SLURM does
cp "$1" "{folder}/submitted.sh"
echo "$@" > "{folder}/args.txt"
echo "Submitted batch job 4242"
"""


def test_a_slurm_wave_goes_out_as_one_job_array(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(SBATCH.format(folder=tmp_path))
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit looks for it
    for tool in (sbatch, bin_dir / "srun"):
        tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    results = tmp_path / "results"
    stages = [timed(i) for i in range(3)]
    executor = make_executor("slurm", results / ".submitit", SLURM, "segmentation")
    assert isinstance(executor, submitit.SlurmExecutor)
    from synthsat.study.waves import _submit

    outs = [stage.directory(results) for stage in stages]
    flights = _submit(executor, stages, outs, [0, 1, 2], results, {"SYNTHSAT_THREADS": "4"}, None)
    assert [f.job.job_id for f in flights.values()] == ["4242_0", "4242_1", "4242_2"]
    script = (tmp_path / "submitted.sh").read_text()
    for line in [
        "#SBATCH --array=0-2%2",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=30",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=8GB",
        "#SBATCH --job-name=synthsat-segmentation",
        "module load cuda",
    ]:
        assert line in script.splitlines(), line
    assert f"-u -m submitit.core._submit {results / '.submitit'}" in script
    assert "account" not in script  # unset keys are left out
    # each array task unpickles its stage's job: the stage, the results, the env
    for i, flight in flights.items():
        with open(flight.job.paths.submitted_pickle, "rb") as f:
            job = pickle.load(f).function
        assert isinstance(job, StageJob)
        assert (job.stage, job.results, job.env) == (stages[i], results, {"SYNTHSAT_THREADS": "4"})
    # the synthetic-metric wave gets its own overrides of the group
    lines = sbatch_lines(SLURM, "synthetic_metrics", 6, results / ".submitit")
    assert "#SBATCH --time=5" in lines and "#SBATCH --array=0-5%2" in lines
    assert "#SBATCH --gpus-per-node=0" in lines
    assert slurm_parameters(SLURM)["setup"] == ["module load cuda"]


def test_the_study_plan_of_the_paper_preset_on_slurm(tmp_path: Path) -> None:
    """``pipeline.dry_run=true`` prints the plan and runs nothing (the data is not read)."""
    import subprocess

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "synthsat.pipeline",
            "experiment=paper",
            "pipeline.dry_run=true",
            "pipeline.executor=slurm",
            "slurm.partition=gpu",
            f"paths.root={tmp_path}",
            "pipeline.estimate.step_s.generator=0.5",
            # the paper's grid, cut to 2 lambdas, 2 ratios and a seed (all 237 stages:
            # tests/test_dry_run.py)
            "pipeline.lambdas=[0.0,2.0]",
            "pipeline.ratios=[0.0,1.0]",
            "pipeline.seeds=[0]",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout[proc.stdout.index("[dry run]") :].splitlines()
    results = tmp_path / "results" / "paper"
    assert out[0] == (
        f"[dry run] 13 jobs in 4 waves on the slurm executor, then the report; results in {results}"
    )
    waves = [line for line in out if line.startswith("wave ")]
    assert [w.split(":")[0] for w in waves] == [
        "wave 1 generator",
        "wave 2 synthesis",
        "wave 3 segmentation",
        "wave 4 synthetic_metrics",
    ]
    # real-only + 2 sources x (ratio 1 + synthetic-only with 2 and 3 copies)
    assert [int(w.split(": ")[1].split()[0]) for w in waves] == [2, 2, 7, 2]
    # 2 generators x 5000 steps x 0.5 s
    assert "  device time: 1.4 h (10000 steps x 0.5 s (pipeline.estimate, device not named))" in out
    assert "  #SBATCH --array=0-6%7" in out and "  #SBATCH --partition=gpu" in out
    assert out[-1].startswith("total: 13 jobs, over 1.4 device hours (not known: synthesis")
    assert not results.exists()  # nothing ran


def test_the_estimate_of_a_wave(tmp_path: Path) -> None:
    """Time budgets, step budgets (an epoch bound where there is no max_steps), stage
    times, and step times measured on a study's finished stages."""
    from synthsat.study.dry_run import Measured, estimate_wave, measured_times

    def stage(config: str, label: str = "a") -> Stage:
        return Stage("segmentation", label, "m", [], {}, config)

    budget = stage("trainer:\n  max_time: '00:01:30:00'\n")
    assert estimate_wave("generator", [budget, budget], {}, {}).seconds == 2 * 5400
    epochs = stage(
        "trainer: {max_steps: -1, max_epochs: 3}\ndata: {patches_per_epoch: 100, batch_size: 16}"
    )
    est = estimate_wave("segmentation", [epochs], {"step_s": {"segmentation": 0.5}}, {})
    assert est.seconds == 3 * 7 * 0.5 and est.how.startswith("at most 21 steps x 0.5 s")
    synthesis = Stage("synthesis", "l0", "m", [], {}, "out: x\n")
    assert (
        estimate_wave("synthesis", [synthesis] * 3, {"stage_s": {"synthesis": 60}}, {}).seconds
        == 180
    )
    assert estimate_wave("synthesis", [synthesis], {}, {}).seconds is None
    # measured: 100 s over a 50-step run and 300 s over a 150-step run -> 2 s per step
    for label, seconds, steps in [("r0", 100.0, 50), ("r1", 300.0, 150)]:
        run = tmp_path / "segmentation" / label
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text(f"trainer:\n  max_steps: {steps}\n")
        (run / "done.json").write_text(json.dumps({"kind": "segmentation", "seconds": seconds}))
    measured = measured_times(tmp_path)
    assert measured == {"segmentation": Measured(stages=2, stage_s=200.0, step_s=2.0)}
    steps = stage("trainer: {max_steps: 10}")
    est = estimate_wave("segmentation", [steps], {"step_s": {"segmentation": 9.0}}, measured)
    assert est.seconds == 20.0 and "measured: 2 finished segmentation stages here" in est.how


def test_a_graph_starts_each_stage_once_the_stages_it_needs_are_done(
    stand_in: str, tmp_path: Path
) -> None:
    """Stage 1 needs stage 0; stage 2 needs nothing. With 2 slots, stage 2 takes the
    second slot at once (it does not wait for 0 and 1, as a wave would), and stage 1
    starts only after stage 0 has finished."""
    results = tmp_path / "results"
    stages = [timed(0, sleep=1.0), timed(1), timed(2, sleep=1.0)]
    needs = {1: [stages[0].directory(results)]}
    executor = make_executor("local", results / ".submitit")
    outs = run_wave(executor, stages, results, 2, [], needs=needs)
    (s0, e0, *_), (s1, _e1, *_), (s2, _e2, *_) = (
        json.loads((out / "times.json").read_text()) for out in outs
    )
    assert s1 >= e0  # after what it needs
    assert s2 < e0  # beside stage 0, in the slot stage 1 could not take


def test_a_graph_whose_need_never_finishes_stops_with_the_missing_stage(
    stand_in: str, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    stages = [timed(0), timed(1)]
    missing = results / "generator" / "never"
    executor = make_executor("local", results / ".submitit")
    with pytest.raises(StageFailed, match="never finished.*never"):
        run_wave(executor, stages, results, 2, [], needs={1: [missing]})
    assert (stages[0].directory(results) / "done.json").exists()
    assert not stages[1].directory(results).exists()


class _ControllerDiesOnce(DetachedLocalExecutor):
    """Kills the job controller of its first submission before it starts the task."""

    killed = 0

    def _submit_command(self, command: str) -> object:
        job = super()._submit_command(command)
        if type(self).killed == 0:
            type(self).killed += 1
            job._process.kill()
            job._process.wait()
        return job


def test_a_job_that_died_before_its_stage_started_is_submitted_again(
    stand_in: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    executor = _ControllerDiesOnce(folder=results / ".submitit" / "%j")
    (out,) = run_wave(executor, [timed(0)], results, 2, [])
    assert (out / "done.json").exists() and _ControllerDiesOnce.killed == 1
    said = capsys.readouterr().out
    assert (
        "ended before its stage started, with no output; submitting it again (try 2 of 3)" in said
    )


@pytest.fixture()
def hydra_conf() -> Iterator[None]:
    """An initialised Hydra on this repository's conf/ (a plan composes its stages)."""
    from hydra import initialize_config_dir

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        yield


def _study(tmp_path: Path, experiment: str, data: str, *extra: str) -> tuple[Any, Any]:
    from hydra import compose

    from synthsat.study.plan import study_plan

    overrides = [
        f"experiment={experiment}",
        f"paths.root={tmp_path}",
        "pipeline.executor=slurm",
        "pipeline.logger=none",
        *extra,
    ]
    cfg = compose("pipeline", overrides=overrides)
    return cfg, study_plan(cfg, data)


def test_a_cpu_study_on_slurm_asks_for_cpus_and_uses_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hydra_conf: None
) -> None:
    """``experiment=dubai`` trains on CPU: every wave asks for CPUs and no GPU, and its
    stages' torch threads are the CPUs asked for; the dry run says so per wave."""
    from omegaconf import OmegaConf

    from synthsat.study.dry_run import describe_plan
    from synthsat.study.slurm import stage_device, wave_devices, wave_resources

    cfg, plan = _study(
        tmp_path, "dubai", "dubai", "pipeline.seeds=[0]", "pipeline.ratios=[0.0,1.0]"
    )
    waves = {**plan.waves, "synthetic_metrics": plan.metric_stages(None)}
    assert {stage_device(s) for s in plan.waves["generator"]} == {"cpu"}
    assert {stage_device(s) for s in plan.waves["synthesis"]} == {"auto"}  # trainer: default
    assert wave_devices(waves) == dict.fromkeys(waves, "cpu")
    for kind, stages in waves.items():
        resources = wave_resources(cfg.slurm, kind, "cpu")
        assert "gpus_per_node" not in resources.parameters
        assert resources.parameters["cpus_per_task"] == 8 == resources.threads
        assert resources.env() == {"SYNTHSAT_THREADS": "8"}
        # the threads each stage's job sets (num_threads: ${oc.env:SYNTHSAT_THREADS,1})
        monkeypatch.setenv("SYNTHSAT_THREADS", resources.env()["SYNTHSAT_THREADS"])
        assert {int(OmegaConf.create(s.config).num_threads) for s in stages} == {8}, kind
    monkeypatch.delenv("SYNTHSAT_THREADS")
    text = describe_plan(plan, "slurm", {}, cfg.slurm)
    assert "--gpus-per-node" not in text
    assert "  #SBATCH --cpus-per-task=8" in text.splitlines()
    resources = [line for line in text.splitlines() if line.startswith("  resources:")]
    assert resources == ["  resources: CPU: 8 CPUs per stage, 8 torch threads, no GPU"] * 4


def test_a_gpu_study_on_slurm_still_asks_for_a_gpu(tmp_path: Path, hydra_conf: None) -> None:
    """``experiment=paper``: training asks for a GPU; synthesis and the synthetic metrics
    (accelerator / device auto) follow the study onto GPUs; threads are the job's own."""
    from synthsat.study.dry_run import describe_plan
    from synthsat.study.slurm import wave_devices, wave_resources

    cfg, plan = _study(
        tmp_path,
        "paper",
        "chesapeake",
        "pipeline.lambdas=[0.0]",
        "pipeline.ratios=[0.0,1.0]",
        "pipeline.copies=[]",
        "pipeline.seeds=[0]",
    )
    waves = {**plan.waves, "synthetic_metrics": plan.metric_stages(None)}
    assert wave_devices(waves) == dict.fromkeys(waves, "gpu")
    resources = wave_resources(cfg.slurm, "segmentation", "gpu")
    assert (resources.parameters["gpus_per_node"], resources.parameters["cpus_per_task"]) == (1, 8)
    assert resources.env() == {}
    lines = describe_plan(plan, "slurm", {}, cfg.slurm).splitlines()
    assert "  #SBATCH --gpus-per-node=1" in lines  # every wave: among the common lines
    assert lines.count("  resources: GPU: 1 GPU per node, 8 CPUs per stage") == 4


def test_a_cpu_wave_goes_out_without_a_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(SBATCH.format(folder=tmp_path))
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for tool in (sbatch, bin_dir / "srun"):
        tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    results = tmp_path / "results"
    executor = make_executor("slurm", results / ".submitit", SLURM, "segmentation", "cpu")
    from synthsat.study.waves import _submit

    stages = [timed(0)]
    _submit(executor, stages, [stages[0].directory(results)], [0], results, {}, None)
    script = (tmp_path / "submitted.sh").read_text().splitlines()
    assert "#SBATCH --cpus-per-task=4" in script
    assert not [line for line in script if "gpus" in line]
    # a per-kind override still wins
    forced = {**SLURM, "stages": {"segmentation": {"gpus_per_node": 2}}}
    assert slurm_parameters(forced, "segmentation", "cpu")["gpus_per_node"] == 2
    with pytest.raises(ValueError, match="device 'tpu'"):
        slurm_parameters(SLURM, "segmentation", "tpu")
