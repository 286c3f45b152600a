"""Checkpoints: atomic saving and loading with one-line errors.

* :class:`AtomicCheckpointIO` — a Lightning ``CheckpointIO`` that writes a checkpoint
  to a temporary file in the checkpoint's own directory, fsyncs it and renames it into
  place, so a full disk or a killed process never leaves a truncated ``last.ckpt``.
* :class:`RandomStateCheckpoint` — a callback that keeps the random number generators'
  states in checkpoints and restores them on resume, so a run resumed from a checkpoint
  draws what the uninterrupted run would have drawn.
* :class:`ResumableCheckpoint` — Lightning's ``ModelCheckpoint`` with ``last.ckpt``
  refreshed after every validation (the jobs' ``ModelCheckpoint`` is upgraded to it by
  :func:`synthsat.jobs.runtime.build_callbacks`), so an interrupted run resumes from its last
  validation, not from its last *best* one.
* :func:`load_task` — loads a task checkpoint, turning a missing, empty, corrupt or
  wrong-kind file into a :class:`~synthsat.errors.CheckpointError` of one line
  (``ckpt=<path>: this is a segmentation checkpoint; synthesize needs a generator
  checkpoint``); :func:`check_resume` does the same for a training job's ``ckpt_path``.

Every checkpoint is read with ``torch.load(..., weights_only=True)`` (here, in
:func:`load_task` and, through :class:`AtomicCheckpointIO`, in Lightning's resume and
test): unpickling a checkpoint never runs code. synthsat's own checkpoints hold only
tensors and plain values (lists, dicts, numbers, strings), which that allows; a file
holding anything else is refused with one line naming it and ``weights_only``.
"""

from __future__ import annotations

import logging
import pickle
import random
import re
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from synthsat.atomic import remove_abandoned, write_with
from synthsat.errors import CheckpointError, CheckpointMissing

log = logging.getLogger(__name__)

#: What each kind of checkpoint is for (used in messages).
KINDS = {"generator": "GeneratorTask", "segmentation": "SegmentationTask"}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Save checkpoints atomically: temporary file beside the target, fsync, rename.

    Lightning's default writes through an fsspec transaction whose temporary file lives
    in the system temp folder; moving it across file systems is a copy, and a full disk
    during that copy truncates the previous checkpoint. Here the temporary file is in
    the checkpoint's own directory, so the final rename is atomic, and a failed write
    removes only the temporary file. A killed writer's temporary file there (its writer
    named in it, see :func:`synthsat.atomic.atomic_path`) is removed at the next save,
    once that writer is gone (:func:`synthsat.atomic.remove_abandoned`). Remote paths
    (``s3://`` ...) use Lightning's own saving.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        if path.parent.is_dir():
            for stale in remove_abandoned(path.parent):
                log.info("removed %s, left by an interrupted run", stale)
        save_atomic(checkpoint, path)

    def load_checkpoint(
        self, path: Any, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Lightning's loading (resume, ``trainer.test(ckpt_path=...)``), always with
        ``weights_only=True``: nothing in the file is run, whatever the caller asked.
        ``map_location`` None keeps tensors on the device they were saved from."""
        location = _saved_device if map_location is None else map_location
        return super().load_checkpoint(path, map_location=location, weights_only=True)


def _saved_device(storage: Any, location: str) -> Any:
    """A ``map_location`` that keeps a storage where it was saved (Lightning's default)."""
    return storage


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically (temp file, fsync, rename, fsync dir)."""

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    write_with(path, save, fsync=True)


def random_states() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's (CPU and CUDA) global generators.

    Plain types and tensors only, so that checkpoints load with ``weights_only=True``.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [
            str(kind),
            torch.from_numpy(np.array(keys)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_random_states(states: dict[str, Any]) -> None:
    """Restore the generators' states saved by :func:`random_states` (CUDA states only
    onto as many devices as they were saved from)."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


class RandomStateCheckpoint(L.Callback):
    """Save the random generators' states in every checkpoint; restore them on resume.

    Training draws its random patches, style codes, noise fields and LabelMix coins from
    the global generators (data-loader workers are seeded from torch's), which
    ``seed_everything`` resets at the start of every run, so without their states a
    resumed run repeats the draws of steps 0, 1, ... With them, a run resumed from a
    checkpoint written at an epoch's end (validation on the epoch's last batch: the
    generator's default ``val_check_interval`` of 250 batches is two toy-world epochs)
    continues exactly as the uninterrupted run, to the same weights. From a checkpoint
    written mid-epoch it continues deterministically, but not with the uninterrupted
    run's draws: the data loader restarts, and it had already drawn its next batch when
    the checkpoint was written.

    The states are applied in ``on_train_start``, after everything that builds modules
    (and draws initial weights) on the way to training. Under DDP the checkpoint holds
    rank 0's states and every rank gets them, as every rank gets the same seed at start.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return random_states()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = dict(state_dict)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending:
            set_random_states(self._pending)
            self._pending = None


class ResumableCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` follows every validation.

    Lightning 2.6 writes ``last.ckpt`` only where it writes a top-k checkpoint: after a
    validation that improves on the best. A run stopped (SIGTERM, preemption, a crash)
    after a long stretch without improvement (up to early stopping's patience, e.g. 20
    validations) then resumes from the last *best* step and trains that stretch again.
    Here every validation that did not save a checkpoint writes ``last.ckpt`` too. The
    files and their names are Lightning's; only when ``last.ckpt`` is written changes.
    """

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if (
            self.save_last
            and not self._should_skip_saving_checkpoint(trainer)
            and not self._should_save_on_train_epoch_end(trainer)
            and self._last_global_step_saved != trainer.global_step
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def checkpoint_kind(checkpoint: dict[str, Any]) -> str | None:
    """``generator``, ``segmentation`` or None, from a checkpoint's hyperparameters."""
    hp = checkpoint.get("hyper_parameters") or {}
    if "metadata" in hp and ("backbone" in hp or "encoder_name" in hp):
        return "segmentation"
    if ("metadata" in hp or "data" in hp) and "z_dim" in hp:  # "data": before the rename
        return "generator"
    return None


#: The training jobs that resume from ``ckpt_path``, and the kind of checkpoint they need.
RESUME_KINDS = {"train_generator": "generator", "train_segmentation": "segmentation"}

#: How torch says that ``weights_only=True`` refused what a file holds.
_REFUSED = "Weights only load failed"


def _refused(err: Exception) -> str:
    """What ``weights_only=True`` loading refused, in a few words (from torch's message)."""
    text = str(err)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return f"the global {found.group(1)}"
    found = re.search(r"WeightsUnpickler error: ([^\n.]+)", text)
    return found.group(1).strip() if found else "objects other than tensors and plain values"


#: What torch's loaders raise on a cut or garbled file (the legacy, pre-zip format's
#: loader reads a few pickles and checks them with asserts and dict look-ups).
_CORRUPT = (
    EOFError,
    RuntimeError,
    zipfile.BadZipFile,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AssertionError,
)


def _load_weights_only(path: Path, where: str, what: str) -> Any:
    """``torch.load(path, weights_only=True)``; read errors as one-line CheckpointErrors."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # "Unsupported operand": not a pickle at all (text, random bytes), not a refused one
        if _REFUSED not in str(err) or "Unsupported operand" in str(err):
            raise CheckpointError(
                f"{where}: the file is corrupt or truncated ({type(err).__name__}); {what}"
            ) from err
        raise CheckpointError(
            f"{where}: refused: it holds {_refused(err)}, which loading with "
            f"weights_only=True does not allow (it could run code); {what}"
        ) from None
    except _CORRUPT as err:
        raise CheckpointError(
            f"{where}: the file is corrupt or truncated ({type(err).__name__}); {what}"
        ) from err


def read_checkpoint(path: str | Path, kind: str, job: str, key: str = "ckpt") -> dict[str, Any]:
    """Read ``path`` with ``weights_only=True`` and check that it is a ``kind`` checkpoint.

    Args:
        path: the checkpoint file.
        kind: ``generator`` or ``segmentation``.
        job: the command that needs it (for messages), e.g. ``synthesize``.
        key: the setting that named it (for messages), e.g. ``ckpt_path``.

    Raises:
        CheckpointError: the file is missing, empty, corrupt, of another kind, or holds
            more than tensors and plain values (which could run code when loaded).
    """
    path = Path(path).expanduser()
    where = f"{key}={path}"
    what = f"{job} needs a {kind} checkpoint"
    if not path.is_file():
        raise CheckpointMissing(f"{where}: file does not exist; {what}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{where}: the file is empty (0 bytes); {what}")
    checkpoint = _load_weights_only(path, where, what)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{where}: not a Lightning checkpoint; {what}")
    found = checkpoint_kind(checkpoint)
    if found != kind:
        this = f"this is a {found} checkpoint" if found else "this is not a synthsat checkpoint"
        raise CheckpointError(f"{where}: {this}; {what}")
    return checkpoint


def check_resume(task_name: str, ckpt_path: str | Path | None) -> None:
    """Check a training job's ``ckpt_path`` before any data is read (see
    :func:`read_checkpoint`); nothing to check without one or for other jobs."""
    kind = RESUME_KINDS.get(task_name)
    if ckpt_path not in (None, "") and kind is not None:
        read_checkpoint(str(ckpt_path), kind, task_name, key="ckpt_path")


def load_task(
    path: str | Path, kind: str, job: str, map_location: Any = "cpu", key: str = "ckpt"
) -> Any:
    """Load the ``kind`` task from ``path`` (see :func:`read_checkpoint` for the checks and
    the arguments), with ``weights_only=True``."""
    read_checkpoint(path, kind, job, key)
    if kind == "generator":
        from synthsat.tasks.generator import GeneratorTask as Task
    else:
        from synthsat.tasks.segmentation import SegmentationTask as Task  # type: ignore[assignment]
    return Task.load_from_checkpoint(
        str(Path(path).expanduser()), map_location=map_location, weights_only=True
    )
