"""No code runs from a checkpoint (issue 25, rows 1 and 9).

A checkpoint whose unpickling would run code (here: touch a marker file) is given to
every entry point that takes one; each is refused with one line naming the file and
``weights_only``, and the marker never appears. The project's own checkpoints still
load (here and in the tests of the jobs that write them).
"""

from __future__ import annotations

import pathlib
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TOY_METADATA, compose_toy, tiny_checkpoints
from hydra import initialize_config_dir

from synthsat.errors import CheckpointError
from synthsat.tasks.checkpoints import AtomicCheckpointIO, load_task, read_checkpoint

CONF = Path(__file__).resolve().parents[1] / "conf"
METADATA = TOY_METADATA


class Payload:
    """Unpickled, it touches ``marker``: stdlib only, so any process can unpickle it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny generator and a tiny segmentation checkpoint for the toy world."""
    return tiny_checkpoints(tmp_path_factory.mktemp("own"))


def poisoned(own: Path, path: Path, marker: Path) -> Path:
    """``own`` (a valid checkpoint) with a payload in its hyperparameters, saved as ``path``."""
    checkpoint = torch.load(own, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["note"] = Payload(marker)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def test_the_payload_is_real(own: dict[str, Path], tmp_path: Path) -> None:
    """Control: loaded as before (``weights_only=False``), the file runs its payload."""
    marker = tmp_path / "marker"
    evil = poisoned(own["generator"], tmp_path / "evil.ckpt", marker)
    torch.load(evil, weights_only=False)
    assert marker.exists()


#: job -> (the setting that takes the checkpoint, its kind, other settings the job needs).
ENTRY_POINTS: dict[str, tuple[str, str, list[str]]] = {
    "synthesize": ("ckpt", "generator", ["logger=none", "chip_size=32"]),
    "evaluate": ("ckpt", "segmentation", []),
    "evaluate_synthetic": ("seg_ckpt", "segmentation", ["logger=none", "synthetic=nowhere"]),
    "train_segmentation": ("ckpt_path", "segmentation", ["logger=none"]),
    "train_generator": ("ckpt_path", "generator", ["logger=none", "generator=cpu"]),
}


@pytest.mark.parametrize("job", sorted(ENTRY_POINTS))
def test_a_checkpoint_that_runs_code_is_refused_by_every_job(
    job: str,
    own: dict[str, Path],
    toy_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key, kind, extra = ENTRY_POINTS[job]
    marker = tmp_path / "marker"
    evil = poisoned(own[kind], tmp_path / "evil.ckpt", marker)
    cfg = compose_toy(job, toy_root, tmp_path, f"{key}={evil}", *extra)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    module = __import__(f"synthsat.{job}", fromlist=["main"])
    with pytest.raises(SystemExit) as exit_info:
        module.main.__wrapped__(cfg)  # the entry point under @hydra.main
    assert exit_info.value.code == 2
    assert not marker.exists()
    error = capsys.readouterr().err.strip().splitlines()[-2]
    assert error.startswith(f"error: {key}={evil}: refused: it holds the global ")
    assert "weights_only=True" in error


def test_own_checkpoints_load_with_weights_only(own: dict[str, Path]) -> None:
    for kind, path in own.items():
        assert read_checkpoint(path, kind, "test")["hyper_parameters"]
        assert load_task(path, kind, "test").hparams
    loaded = AtomicCheckpointIO().load_checkpoint(own["generator"])
    assert loaded["state_dict"]


def test_lightning_loads_with_weights_only_whatever_it_is_asked(
    own: dict[str, Path], tmp_path: Path
) -> None:
    """Resume and ``trainer.test(ckpt_path=...)`` read through the trainer's checkpoint IO."""
    marker = tmp_path / "marker"
    evil = poisoned(own["generator"], tmp_path / "evil.ckpt", marker)
    with pytest.raises(Exception, match="Weights only load failed"):
        AtomicCheckpointIO().load_checkpoint(evil, weights_only=False)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("empty", r"the file is empty \(0 bytes\)"),
        ("truncated", "the file is corrupt or truncated"),
        ("generator", "this is a generator checkpoint"),
        ("missing", "file does not exist"),
    ],
)
def test_a_bad_resume_checkpoint_is_one_line_before_the_data(
    case: str,
    message: str,
    own: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``train_segmentation ckpt_path=`` an empty, cut, wrong-kind or missing file: one
    line and exit 2, before any data is read (the data folder here is not a toy world)."""
    from synthsat.train_segmentation import main

    user = tmp_path / "mydata"  # reading data here would be a DataError
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    ckpt = tmp_path / f"{case}.ckpt"
    if case == "empty":
        ckpt.touch()
    elif case == "truncated":
        data = own["segmentation"].read_bytes()
        ckpt.write_bytes(data[: len(data) // 2])
    elif case == "generator":
        ckpt.write_bytes(own["generator"].read_bytes())
    cfg = compose_toy("train_segmentation", user, tmp_path, "logger=none", f"ckpt_path={ckpt}")
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main.__wrapped__(cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "(HYDRA_FULL_ERROR=1 shows the traceback)"
    assert err[-2].startswith(f"error: ckpt_path={ckpt}: ")
    assert message.replace("\\", "") in err[-2]
    assert err[-2].endswith("train_segmentation needs a segmentation checkpoint")
    assert not (tmp_path / "run").exists()


def test_errors_name_what_weights_only_refused(own: dict[str, Path], tmp_path: Path) -> None:
    evil = poisoned(own["segmentation"], tmp_path / "evil.ckpt", tmp_path / "marker")
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(evil, "segmentation", "evaluate")
    assert str(info.value) == (
        f"ckpt={evil}: refused: it holds the global getattr, which loading with "
        "weights_only=True does not allow (it could run code); evaluate needs a "
        "segmentation checkpoint"
    )
    assert not (tmp_path / "marker").exists()


def test_the_pipeline_stages_refuse_it_too(
    own: dict[str, Path], toy_root: Path, tmp_path: Path
) -> None:
    """The study's synthesis and metric stages run their real jobs on poisoned checkpoints
    (the generator stage's ``last.ckpt``, the real-only run's): each fails naming the file
    and ``weights_only``, and the marker never appears. (A training stage resumes with
    ``ckpt_path``: refused as in the test above.)"""
    from synthsat.plan import study_plan
    from synthsat.stages import StageFailed, run_stage

    data = [f"data.source.root={toy_root}", "data.source.tiles=4", "data.source.size=128"]
    cfg = compose_toy(
        "pipeline", toy_root, tmp_path,
        "pipeline.lambdas=[0.0]", "pipeline.ratios=[0.0]", "pipeline.logger=none",
        "pipeline.data_overrides=[" + ",".join(f'"{o}"' for o in data) + "]",
    )  # fmt: skip
    marker = tmp_path / "marker"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        plan = study_plan(cfg, "toyworld")
        seg_ckpt = poisoned(own["segmentation"], tmp_path / "seg" / "evil.ckpt", marker)
        (metrics,) = plan.metric_stages(str(seg_ckpt))
    (generator,) = plan.waves["generator"]
    (synthesis,) = plan.waves["synthesis"]
    results = plan.results
    last = generator.directory(results) / "checkpoints" / "last.ckpt"
    poisoned(own["generator"], last, marker)
    for stage, ckpt in [(synthesis, last), (metrics, seg_ckpt)]:
        with pytest.raises(StageFailed) as failed:
            run_stage(stage, results, [])
        assert "(exit 2)" in str(failed.value).splitlines()[0]
        assert f"={ckpt}: refused: it holds the global getattr" in str(failed.value)
        assert not marker.exists()
