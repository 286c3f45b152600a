"""Every command of README.md's ``bash`` blocks is covered (issue 14).

:data:`COMMANDS` lists each one with the test that runs it on the toy world with tiny
overrides, or, for a command too long for CI, why. A README command added or changed
without an entry here fails :func:`test_the_readme_commands_are_the_known_ones`. Every
``python -m synthsat.<job>`` command, run here or not, has its config composed as written
(each value of a sweep, each end of an Optuna search interval), and each ``make`` target's
recipe is checked and its job command composed: an override that no longer exists, or a
value the config schemas refuse (:mod:`synthsat.schemas`), fails here without running
anything (compose only: about 0.5 s a command).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from omegaconf import OmegaConf

from synthsat import config_dir

REPO = Path(__file__).resolve().parents[1]


class Coverage(NamedTuple):
    """How a README command is tested: ``test`` runs it (a test id), or ``reason`` says why
    it is not run in CI (its config is composed here either way)."""

    test: str | None = None
    reason: str | None = None


#: The README's commands (shell words joined by single spaces, comments dropped).
COMMANDS: dict[str, Coverage] = {
    "make demo": Coverage(
        reason="the whole demo study: 7.8 min on 2 idle cores; its config and every stage's "
        "are composed (tests/test_configs.py::test_every_pipeline_stage_composes), the "
        "pipeline runs end to end in "
        "tests/test_pipeline.py::test_pipeline_runs_every_stage_and_reports"
    ),
    "make test": Coverage(reason="the test suite itself (CI runs it)"),
    "make mutate": Coverage(reason="mutation testing, about an hour on 2 cores"),
    "python -m synthsat.train_segmentation data=rasters data.source.root=mydata data.bands=4 "
    "data.classes=[background,water,trees,built] "
    "data.source.label_map={15:0,11:1,41:2,21:3}": Coverage(
        test="tests/test_own_rasters.py::test_train_segmentation_on_own_rasters"
    ),
    "python -m synthsat.train_generator data=toyworld generator=cpu "
    "trainer.max_steps=2000": Coverage(
        test="tests/test_generator_task.py::test_entry_point_checkpoints_samples_and_resume"
    ),
    "python -m synthsat.train_generator data=toyworld generator=cpu data.scale=0.25": Coverage(
        test="tests/test_scale_synthesis.py::test_generator_trains_on_the_scaled_cache"
    ),
    "python -m synthsat.synthesize ckpt=.../last.ckpt data=toyworld out=synthetic/l6 "
    "samples=3 style=auto seed=0": Coverage(
        test="tests/test_synthesis_command.py::test_command_synthesises_georeferenced_tiles"
    ),
    "python -m synthsat.synthesize method=classtexture data=dubai out=synthetic/texture "
    "samples=3 seed=0": Coverage(
        test="tests/test_classtexture.py::test_command_with_class_textures"
    ),
    "python -m synthsat.synthesize method=classcolour data=dubai out=synthetic/colour "
    "seed=0": Coverage(test="tests/test_classcolour.py::test_command_with_class_colours"),
    "python -m synthsat.train_segmentation data=dubai segmentation=cpu mix.ratio=0.5 "
    "mix.mode=replace mix.source=synthetic/l6 seed=1": Coverage(
        test="tests/test_segmentation_train.py::test_short_training_beats_majority_class"
    ),
    "python -m synthsat.evaluate ckpt=.../best.ckpt data=dubai": Coverage(
        test="tests/test_segmentation_train.py::test_short_training_beats_majority_class"
    ),
    "python -m synthsat.evaluate_synthetic data=toyworld synthetic=synthetic/l6 "
    "seg_ckpt=...": Coverage(
        test="tests/test_metrics_synthetic.py::test_command_writes_metrics_json"
    ),
    "python -m synthsat.train_segmentation -m mix.ratio=0,0.25,0.5,0.75,1 seed=0,1,2 "
    "mix.source=synthetic/l0,synthetic/l6": Coverage(
        test="tests/test_segmentation_train.py::test_hydra_multirun_sweeps_a_stage"
    ),
    "python -m synthsat.train_segmentation -m data=dubai mix.ratio=0,0.5,1 "
    "mix.lambda_div=0,2 seed=0,1 mix.source=results/dubai/synthesis": Coverage(
        test="tests/test_mix_lambda.py::test_multirun_sweeps_lambdas_by_the_synthesis_root"
    ),
    "python -m synthsat.train_segmentation -m hparams_search=segmentation_optuna data=dubai "
    "mix.source=synthetic/l6 hydra.sweeper.n_trials=20": Coverage(
        test="tests/test_optuna_sweep.py::test_optuna_search_maximises_the_validation_miou"
    ),
    "python -m synthsat.pipeline experiment=paper pipeline.executor=slurm slurm.partition=gpu "
    "pipeline.dry_run=true": Coverage(
        test="tests/test_executors.py::test_the_study_plan_of_the_paper_preset_on_slurm"
    ),
    "python -m synthsat.pipeline experiment=dubai "
    'pipeline.data_overrides=["data.source.root=/mnt/data/dubai"] '
    "pipeline.dry_run=true": Coverage(
        test="tests/test_readme_commands.py::test_the_readme_list_override_is_quoted_for_hydra"
    ),
    "python -m synthsat.pipeline experiment=paper pipeline.executor=slurm "
    "slurm.partition=gpu": Coverage(
        reason="needs a SLURM cluster, GPUs and the Chesapeake data; its plan is printed by "
        "the dry run above, a wave's job array is submitted to a stand-in sbatch in "
        "tests/test_executors.py::test_a_slurm_wave_goes_out_as_one_job_array"
    ),
    "python -m synthsat.train_segmentation -m hydra/launcher=slurm "
    "hydra.launcher.partition=gpu trainer=gpu mix.ratio=0,0.1,0.2,0.3,0.4,0.5 seed=0,1,2 "
    "mix.source=...": Coverage(
        reason="needs a SLURM cluster and GPUs; composed here with its launcher "
        "(hydra-submitit-launcher) and every sweep value"
    ),
}


def readme_commands(text: str) -> list[str]:
    """The commands of the ```` ```bash ```` blocks of a README: lines continued with ``\\``
    joined, comments dropped, shell words (quotes removed) joined by single spaces."""
    commands: list[str] = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        words: list[str] = []
        for line in block.splitlines():
            continued = line.rstrip().endswith("\\")
            words += shlex.split(line.rstrip().removesuffix("\\"), comments=True)
            if not continued and words:
                commands.append(" ".join(words))
                words = []
    return commands


def test_the_readme_commands_are_the_known_ones() -> None:
    found = readme_commands((REPO / "README.md").read_text())
    assert set(found) == set(COMMANDS), (
        "README.md's commands changed: add each new one to COMMANDS with the test that runs "
        "it (or why it cannot run in CI), and drop the ones that are gone"
    )


def test_the_command_parser() -> None:
    text = "x\n```bash\n# note\nmake a   # why\npython -m p k=1 \\\n    'l=[a,b]'  # c\n```\n"
    assert readme_commands(text) == ["make a", "python -m p k=1 l=[a,b]"]


@pytest.mark.parametrize("command", sorted(c for c, how in COMMANDS.items() if how.test))
def test_the_test_that_runs_it_exists(command: str) -> None:
    path, name = COMMANDS[command].test.split("::")  # type: ignore[union-attr]
    assert f"\ndef {name}(" in (REPO / path).read_text(), COMMANDS[command].test


def test_each_command_not_run_says_why() -> None:
    for command, how in COMMANDS.items():
        assert (how.test is None) != (how.reason is None), command


# -- compose each command's config as written ------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def _hydra() -> Iterator[None]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir(), version_base="1.3"):
        yield


def _values(sweep: Any) -> list[Any]:
    """The points of a sweep to compose: each value of a list, the ends of an interval."""
    if isinstance(sweep, ChoiceSweep):
        return list(sweep.list)
    if isinstance(sweep, RangeSweep):
        return list(range(int(sweep.start), int(sweep.stop), int(sweep.step)))
    if isinstance(sweep, IntervalSweep):
        return [sweep.start, sweep.end]
    return [sweep]


def _variants(overrides: list[str]) -> list[list[str]]:
    """The overrides with every sweep set to each of its values in turn (the others to
    their first): each value is composed once, not every combination."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    firsts = [o.input_line if not o.is_sweep_override() else None for o in parsed]
    points = [(i, o.key_or_group, _values(o.value())) for i, o in enumerate(parsed)]
    base = [f or f"{key}={values[0]}" for f, (_, key, values) in zip(firsts, points)]
    variants = [base]
    for i, key, values in points:
        if firsts[i] is None:
            variants += [[*base[:i], f"{key}={v}", *base[i + 1 :]] for v in values[1:]]
    return variants


def _compose_job(job: str, overrides: list[str], root: Path) -> Any:
    cfg = compose(job, overrides=[*overrides, f"paths.root={root}"], return_hydra_config=True)
    OmegaConf.to_container(cfg, resolve=False)
    return cfg


@pytest.mark.parametrize("command", sorted(c for c in COMMANDS if c.startswith("python -m")))
def test_the_command_composes(command: str, tmp_path: Path) -> None:
    words = command.split()
    job = words[2].removeprefix("synthsat.")
    overrides = [w for w in words[3:] if w != "-m"]
    composed = 0
    for variant in _variants(overrides):
        cfg = _compose_job(job, variant, tmp_path)
        composed += 1
        params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
        for key, space in params.items():  # an Optuna search space: its ends compose too
            for value in _values(OverridesParser.create().parse_override(f"{key}={space}").value()):
                _compose_job(job, [*variant, f"{key}={value}"], tmp_path)
                composed += 1
    assert composed >= 1
    if "hparams_search=segmentation_optuna" in command:
        assert cfg.hydra.sweeper.direction == "maximize"
        assert set(cfg.hydra.sweeper.params) == {"segmentation.lr", "mix.ratio"}
    if "hydra/launcher=slurm" in command:
        assert "submitit" in cfg.hydra.launcher._target_
    if "pipeline.executor=slurm" in command:
        assert (cfg.pipeline.executor, cfg.slurm.partition) == ("slurm", "gpu")


def test_sweep_variants() -> None:
    assert _variants(["a=1", "b=2,3", "c=x,y,z"]) == [
        ["a=1", "b=2", "c=x"],
        ["a=1", "b=3", "c=x"],
        ["a=1", "b=2", "c=y"],
        ["a=1", "b=2", "c=z"],
    ]


def _recipe(target: str) -> list[str]:
    """The recipe lines of a Makefile target."""
    lines = (REPO / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


@pytest.mark.parametrize("command", sorted(c for c in COMMANDS if c.startswith("make ")))
def test_the_make_target_runs_what_the_readme_says(command: str, tmp_path: Path) -> None:
    target = command.split()[1]
    recipe = _recipe(target)
    if target == "demo":
        assert recipe == ["$(PY) -m synthsat.pipeline experiment=demo"]
        cfg = _compose_job("pipeline", ["experiment=demo"], tmp_path)
        assert cfg.experiment_name == "demo"
    elif target == "test":
        assert recipe == ["$(PY) -m pytest tests"]
    else:
        assert target == "mutate"
        assert any("mutmut run" in line for line in recipe)
        assert "[tool.mutmut]" in (REPO / "pyproject.toml").read_text()


def test_the_readme_list_override_is_quoted_for_hydra(tmp_path: Path) -> None:
    """The README's list override (issue 28): its quoting composes the pipeline with the
    element as written, and that element composes as a stage's override; the unquoted
    form is the Hydra error the README names."""
    from hydra.errors import OverrideParseException

    (command,) = [
        c
        for c in readme_commands((REPO / "README.md").read_text())
        if "pipeline.data_overrides=" in c
    ]
    cfg = _compose_job("pipeline", command.split()[3:], tmp_path)
    assert list(cfg.pipeline.data_overrides) == ["data.source.root=/mnt/data/dubai"]
    assert cfg.pipeline.dry_run is True
    stage = _compose_job("train_generator", ["data=dubai", *cfg.pipeline.data_overrides], tmp_path)
    assert stage.data.source.root == "/mnt/data/dubai"
    unquoted = "pipeline.data_overrides=[data.source.root=/mnt/data/dubai]"
    with pytest.raises(OverrideParseException, match="no viable alternative at input"):
        _compose_job("pipeline", [unquoted], tmp_path)


# -- README facts ----------------------------------------------------------------------------
#: Markdown files the README names without a path: written per study (``results/<NAME>/``)
#: or found in each study's folder (``experiments/<study>/``).
GENERIC_MD = {"report.md", "RESULTS.md"}


def test_the_readme_names_its_documents_by_their_paths() -> None:
    """Every ``*.md`` the README names is a file of the repository at that path (a bare
    ``GENERATOR.md`` was ``experiments/dubai/GENERATOR.md``), except the generic names."""
    readme = (REPO / "README.md").read_text()
    refs = set(re.findall(r"[\w<>./-]+\.md\b", readme))
    assert "experiments/dubai/GENERATOR.md" in refs
    for ref in sorted(refs):
        if "<" in ref:  # a pattern, e.g. results/<NAME>/report.md
            continue
        assert (REPO / ref).is_file() or ("/" not in ref and ref in GENERIC_MD), ref


def test_the_readme_states_no_test_count() -> None:
    """A hard count of tests goes stale with the next test (690 said, 698 there)."""
    assert not re.search(r"\b\d+ tests\b", (REPO / "README.md").read_text())


def test_the_readme_shell_completion_command_installs_completion(tmp_path: Path) -> None:
    """The README's ``eval "$(synthsat-<job> -sc install=bash)"``, run by bash, registers
    Hydra's completion for that console script, which then lists the data configs."""
    import os
    import subprocess
    import sys

    readme = (REPO / "README.md").read_text()
    (snippet,) = re.findall(r'`(eval "\$\((synthsat-[\w-]+) -sc install=bash\)")`', readme)
    command, script = snippet
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    shell = subprocess.run(
        ["bash", "-c", f"{command}\ncomplete -p {script}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert shell.returncode == 0, shell.stderr[-2000:]
    assert shell.stdout.strip().endswith(f"-F hydra_bash_completion {script}")
    line = f"{script} data="
    query = subprocess.run(
        [script, "-sc", "query=bash"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        env=dict(env, COMP_LINE=line, COMP_POINT=str(len(line))),
    )  # fmt: skip
    assert query.returncode == 0, query.stderr[-2000:]
    assert {"data=dubai", "data=toyworld"} <= set(query.stdout.split())
