"""No code runs from a checkpoint (issue 25, rows 1 and 9).

A checkpoint whose unpickling would run code (here: touch a marker file) is given to
every entry point that takes one; each is refused with one line naming the file and
``weights_only``, and the marker never appears. The project's own checkpoints still
load (here and in the tests of the jobs that write them).
"""

from __future__ import annotations

import io
import logging
import pathlib
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import TOY_METADATA, compose_toy, tiny_checkpoints
from hydra import initialize_config_dir

from synthsat.errors import CheckpointError, CheckpointMissing
from synthsat.tasks.checkpoints import (
    AtomicCheckpointIO,
    RandomStateCheckpoint,
    ResumableCheckpoint,
    _refused,
    _saved_device,
    check_resume,
    checkpoint_kind,
    load_task,
    random_states,
    read_checkpoint,
    set_random_states,
)

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
    from synthsat.jobs.train_segmentation import main

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
    from synthsat.study.plan import study_plan
    from synthsat.study.stages import StageFailed, run_stage

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


# -- the module's parts on hand-made checkpoints (no training) ---------------------------


def _fake(path: Path, hyper_parameters: dict[str, Any] | None, **extra: Any) -> Path:
    """A small ``torch.save`` file shaped like a Lightning checkpoint."""
    checkpoint: dict[str, Any] = {"state_dict": {"w": torch.ones(2)}, **extra}
    if hyper_parameters is not None:
        checkpoint["hyper_parameters"] = hyper_parameters
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize(
    ("hyper_parameters", "kind"),
    [
        ({"metadata": {}, "backbone": "unet"}, "segmentation"),
        ({"metadata": {}, "encoder_name": "resnet18"}, "segmentation"),
        ({"metadata": {}}, None),
        ({"backbone": "unet", "encoder_name": "resnet18"}, None),
        ({"data": {}, "z_dim": 8}, "generator"),
        ({"data": {}}, None),
        ({"z_dim": 8}, None),
        ({}, None),
        (None, None),
    ],
)
def test_checkpoint_kind(hyper_parameters: dict[str, Any] | None, kind: str | None) -> None:
    assert checkpoint_kind({"hyper_parameters": hyper_parameters}) == kind
    assert checkpoint_kind({}) is None


def test_read_checkpoint_messages(tmp_path: Path) -> None:
    seg = _fake(tmp_path / "seg.ckpt", {"metadata": {}, "backbone": "unet"})
    assert read_checkpoint(seg, "segmentation", "evaluate")["state_dict"]["w"].tolist() == [1, 1]
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(seg, "generator", "synthesize")
    assert str(err.value) == (
        f"ckpt={seg}: this is a segmentation checkpoint; synthesize needs a generator checkpoint"
    )
    other = _fake(tmp_path / "other.ckpt", {"lr": 0.1})
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(other, "generator", "synthesize", key="model")
    assert str(err.value) == (
        f"model={other}: this is not a synthsat checkpoint; synthesize needs a generator checkpoint"
    )
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.ones(1)}, plain)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(plain, "generator", "synthesize")
    assert str(err.value) == (
        f"ckpt={plain}: not a Lightning checkpoint; synthesize needs a generator checkpoint"
    )
    torch.save([1, 2], plain)
    with pytest.raises(CheckpointError, match="not a Lightning checkpoint"):
        read_checkpoint(plain, "generator", "synthesize")
    with pytest.raises(CheckpointMissing) as err:
        read_checkpoint(tmp_path / "none.ckpt", "generator", "synthesize")
    assert str(err.value) == (
        f"ckpt={tmp_path / 'none.ckpt'}: file does not exist; "
        "synthesize needs a generator checkpoint"
    )
    (tmp_path / "dir.ckpt").mkdir()  # not a file
    with pytest.raises(CheckpointMissing):
        read_checkpoint(tmp_path / "dir.ckpt", "generator", "synthesize")
    (tmp_path / "empty.ckpt").touch()
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(tmp_path / "empty.ckpt", "generator", "synthesize")
    assert str(err.value) == (
        f"ckpt={tmp_path / 'empty.ckpt'}: the file is empty (0 bytes); "
        "synthesize needs a generator checkpoint"
    )
    data = seg.read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(tmp_path / "cut.ckpt", "segmentation", "evaluate")
    assert str(err.value) == (
        f"ckpt={tmp_path / 'cut.ckpt'}: the file is corrupt or truncated (RuntimeError); "
        "evaluate needs a segmentation checkpoint"
    )
    # not a pickle at all: torch words it as a refusal ("Unsupported operand"), it is junk
    (tmp_path / "junk.ckpt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(tmp_path / "junk.ckpt", "segmentation", "evaluate")
    assert str(err.value) == (
        f"ckpt={tmp_path / 'junk.ckpt'}: the file is corrupt or truncated (UnpicklingError); "
        "evaluate needs a segmentation checkpoint"
    )
    # a garbled file of torch's legacy format: its loader fails an assert
    import pickle

    from torch.serialization import MAGIC_NUMBER, PROTOCOL_VERSION

    legacy = [MAGIC_NUMBER, PROTOCOL_VERSION, {}, {"a": 1}, ["k"]]
    (tmp_path / "legacy.ckpt").write_bytes(b"".join(pickle.dumps(o, protocol=2) for o in legacy))
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(tmp_path / "legacy.ckpt", "segmentation", "evaluate")
    assert str(err.value) == (
        f"ckpt={tmp_path / 'legacy.ckpt'}: the file is corrupt or truncated (AssertionError); "
        "evaluate needs a segmentation checkpoint"
    )


def test_an_unpickling_error_that_is_no_refusal_is_corruption(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pickle

    seg = _fake(tmp_path / "seg.ckpt", {"metadata": {}, "backbone": "unet"})

    def bad(*args: Any, **kwargs: Any) -> Any:
        raise pickle.UnpicklingError("invalid load key, 'x'.")

    monkeypatch.setattr(torch, "load", bad)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(seg, "segmentation", "evaluate")
    assert str(err.value) == (
        f"ckpt={seg}: the file is corrupt or truncated (UnpicklingError); "
        "evaluate needs a segmentation checkpoint"
    )
    assert isinstance(err.value.__cause__, pickle.UnpicklingError)
    for error in (EOFError("eof"), ValueError("v"), KeyError("k"), IndexError("i")):

        def fails(*args: Any, error: Exception = error, **kwargs: Any) -> Any:
            raise error

        monkeypatch.setattr(torch, "load", fails)
        with pytest.raises(CheckpointError) as err:
            read_checkpoint(seg, "segmentation", "evaluate")
        assert f"corrupt or truncated ({type(error).__name__})" in str(err.value)
        assert err.value.__cause__ is error


def test_checkpoints_are_read_on_the_cpu_with_weights_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seg = _fake(tmp_path / "seg.ckpt", {"metadata": {}, "backbone": "unet"})
    real = torch.load
    seen: list[dict[str, Any]] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    read_checkpoint(seg, "segmentation", "evaluate")
    assert seen == [{"map_location": "cpu", "weights_only": True}]


def test_read_checkpoint_expands_the_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    _fake(tmp_path / "g.ckpt", {"data": {}, "z_dim": 4})
    assert read_checkpoint("~/g.ckpt", "generator", "synthesize")["hyper_parameters"]["z_dim"] == 4


def test_what_weights_only_refused_in_a_few_words() -> None:
    assert _refused(RuntimeError("... Unsupported global: GLOBAL os.system was not ...")) == (
        "the global os.system"
    )
    text = "Weights only load failed. WeightsUnpickler error: Unsupported operand 82. More"
    assert _refused(RuntimeError(text)) == "Unsupported operand 82"
    assert _refused(RuntimeError("WeightsUnpickler error:  odd thing \nrest")) == "odd thing"
    assert _refused(RuntimeError("something else")) == (
        "objects other than tensors and plain values"
    )


def test_check_resume_checks_only_the_training_jobs(tmp_path: Path) -> None:
    gen = _fake(tmp_path / "g.ckpt", {"data": {}, "z_dim": 4})
    check_resume("train_generator", gen)
    check_resume("train_generator", str(gen))
    check_resume("train_generator", None)
    check_resume("train_generator", "")
    check_resume("synthesize", tmp_path / "none.ckpt")  # not a training job: not checked
    with pytest.raises(CheckpointError) as err:
        check_resume("train_segmentation", gen)
    assert str(err.value) == (
        f"ckpt_path={gen}: this is a generator checkpoint; "
        "train_segmentation needs a segmentation checkpoint"
    )
    with pytest.raises(CheckpointMissing, match="^ckpt_path=.*train_generator needs a generator"):
        check_resume("train_generator", tmp_path / "none.ckpt")


def test_atomic_checkpoint_io_saves_in_place_and_clears_dead_writers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from synthsat.locks import host_tag

    dead = tmp_path / f".last.pid4194301@{host_tag()}.abcd1234.ckpt.part"
    dead.write_bytes(b"half")
    other = tmp_path / ".thesis.part"  # not one of ours
    other.write_bytes(b"mine")
    io = AtomicCheckpointIO()
    with caplog.at_level(logging.INFO, logger="synthsat.tasks.checkpoints"):
        io.save_checkpoint({"step": 3, "w": torch.arange(3)}, tmp_path / "last.ckpt")
    assert f"removed {dead}, left by an interrupted run" in caplog.messages
    assert sorted(p.name for p in tmp_path.iterdir()) == [".thesis.part", "last.ckpt"]
    back = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert back["step"] == 3 and back["w"].tolist() == [0, 1, 2]
    io.save_checkpoint({"step": 4}, tmp_path / "new" / "last.ckpt")  # a folder not there yet
    assert torch.load(tmp_path / "new" / "last.ckpt", weights_only=True) == {"step": 4}
    loaded = io.load_checkpoint(tmp_path / "last.ckpt")
    assert loaded["step"] == 3 and loaded["w"].tolist() == [0, 1, 2]
    assert _saved_device("storage", "cuda:0") == "storage"


def test_atomic_checkpoint_io_leaves_remote_paths_to_lightning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    calls: list[tuple[Any, Any]] = []
    monkeypatch.setattr(
        TorchCheckpointIO, "save_checkpoint", lambda self, c, p, s=None: calls.append((p, s))
    )
    io = AtomicCheckpointIO()
    io.save_checkpoint({}, "s3://bucket/last.ckpt")
    io.save_checkpoint({}, tmp_path / "x.ckpt", storage_options={"a": 1})
    assert calls == [("s3://bucket/last.ckpt", None), (tmp_path / "x.ckpt", {"a": 1})]
    assert not (tmp_path / "x.ckpt").exists()


def test_atomic_checkpoint_io_always_loads_weights_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    seen: list[dict[str, Any]] = []

    def load(self: Any, path: Any, map_location: Any = None, weights_only: Any = None) -> dict:
        seen.append({"map_location": map_location, "weights_only": weights_only})
        return {}

    monkeypatch.setattr(TorchCheckpointIO, "load_checkpoint", load)
    AtomicCheckpointIO().load_checkpoint("a.ckpt", weights_only=False)
    AtomicCheckpointIO().load_checkpoint("a.ckpt", map_location="cpu")
    assert seen == [
        {"map_location": _saved_device, "weights_only": True},
        {"map_location": "cpu", "weights_only": True},
    ]


def test_random_states_round_trip() -> None:
    random.seed(1)
    np.random.seed(2)
    np.random.standard_normal()  # leaves a cached Gaussian in NumPy's legacy state
    torch.manual_seed(3)
    states = random_states()
    kind, keys, pos, has_gauss, cached = states["numpy"]
    assert (kind, type(keys), type(pos), has_gauss, type(cached)) == (
        "MT19937",
        torch.Tensor,
        int,
        1,
        float,
    )
    assert set(states) == {"python", "numpy", "torch"}  # no CUDA here
    first = (random.random(), np.random.standard_normal(), np.random.rand(), torch.rand(2))
    set_random_states(states)
    again = (random.random(), np.random.standard_normal(), np.random.rand(), torch.rand(2))
    assert first[:3] == again[:3] and torch.equal(first[3], again[3])
    # through a weights-only checkpoint: plain values and tensors
    buffer = io.BytesIO()
    torch.save(states, buffer)
    buffer.seek(0)
    set_random_states(torch.load(buffer, weights_only=True))
    assert random.random() == first[0] and np.random.standard_normal() == first[1]


def test_random_states_with_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """CUDA states are saved once CUDA is in use and restored onto as many devices."""
    saved = [torch.tensor([1], dtype=torch.uint8), torch.tensor([2], dtype=torch.uint8)]
    restored: list[Any] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: saved)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert "cuda" not in random_states()  # available but not in use
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    states = random_states()
    assert states["cuda"] is saved
    set_random_states(states)
    assert restored == [saved]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    set_random_states(states)  # saved from 2 devices, 1 here: left alone
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    set_random_states(states)
    assert restored == [saved]


def test_random_state_callback_applies_the_states_once_at_train_start() -> None:
    callback = RandomStateCheckpoint()
    random.seed(5)
    states = callback.state_dict()
    assert set(states) >= {"python", "numpy", "torch"}
    expected = random.random()
    callback.on_train_start(None, None)  # type: ignore[arg-type]  # nothing pending
    callback.load_state_dict(states)
    states.clear()  # the callback keeps its own copy
    random.seed(6)
    callback.on_train_start(None, None)  # type: ignore[arg-type]
    assert random.random() == expected
    random.seed(6)
    callback.on_train_start(None, None)  # type: ignore[arg-type]  # applied only once
    assert random.random() != expected


@pytest.mark.parametrize(
    ("save_last", "skip", "epoch_end", "last_saved", "saves"),
    [
        (True, False, False, 4, True),
        (None, False, False, 4, False),
        (True, True, False, 4, False),
        (True, False, True, 4, False),
        (True, False, False, 5, False),
    ],
)
def test_last_ckpt_follows_every_validation(
    monkeypatch: pytest.MonkeyPatch,
    save_last: bool | None,
    skip: bool,
    epoch_end: bool,
    last_saved: int,
    saves: bool,
) -> None:
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import ModelCheckpoint

    parent: list[Any] = []
    monkeypatch.setattr(ModelCheckpoint, "on_validation_end", lambda s, t, m: parent.append(t))
    ckpt = ResumableCheckpoint(save_last=save_last)
    trainer = SimpleNamespace(global_step=5)
    written: list[tuple[Any, Any]] = []
    monkeypatch.setattr(ckpt, "_should_skip_saving_checkpoint", lambda t: skip)
    monkeypatch.setattr(ckpt, "_should_save_on_train_epoch_end", lambda t: epoch_end)
    monkeypatch.setattr(ckpt, "_monitor_candidates", lambda t: {"step": t.global_step})
    monkeypatch.setattr(ckpt, "_save_last_checkpoint", lambda t, c: written.append((t, c)))
    ckpt._last_global_step_saved = last_saved
    ckpt.on_validation_end(trainer, None)  # type: ignore[arg-type]
    assert parent == [trainer]
    assert written == ([(trainer, {"step": 5})] if saves else [])
