"""Synthesis as Lightning ``predict``: a dataset of tile requests and a writer callback.

``trainer.predict`` hands each process (rank) its share of the requests — under DDP
the distributed sampler splits them across GPUs and nodes. For every request,
:meth:`SynthesisModule.predict_step` returns a lazy stream of finished rows (see
:meth:`~synthsat.synthesis.synthesizer.Synthesizer.stream`), and
:class:`SynthesisWriter` consumes it, writing the GeoTIFF atomically, so the tile is
never held in memory. Finished outputs are skipped, so a rerun resumes a killed job;
so are tiles another live process is writing (a second synthesis on the same ``out``:
its temporary files name their writer and are neither deleted nor written twice) —
until this run's own tiles are done: then it waits for each such tile, and writes it
itself if its writer is gone (killed), so a run never ends with a tile missing (one
whose writer runs on another host, where it cannot be checked, is an error naming
it); at the end rank 0 rebuilds the manifest from the outputs on disk. Each tile written is
logged with its size and throughput (:func:`tile_message`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from synthsat.data.synthetic_tiles import read_provenance, write_manifest
from synthsat.errors import ConfigError, IncompleteOutput
from synthsat.locks import is_this_host
from synthsat.synthesis.requests import TileRequest
from synthsat.synthesis.synthesizer import Synthesizer
from synthsat.synthesis.writer import busy_owner, busy_writer, remove_stale_temps
from synthsat.tasks.hparams import checkpoint_metadata

log = logging.getLogger(__name__)

#: The clock of the tiles' throughput (a test replaces it).
_clock = time.perf_counter

#: Seconds between looks at a tile another process is writing.
_poll_s = 0.2


def tile_message(path: str | Path, pixels: int, seconds: float) -> str:
    """The log line of a tile written: ``wrote <path>: <Mpx> Mpx in <s> s, <Mpx/s> Mpx/s``.

    Args:
        path: the tile's file.
        pixels: its pixels (height x width; bands not counted).
        seconds: time from when the writer started the tile (its rows are computed
            lazily as the writer takes them, so this is just before its first chip is
            synthesised) to when its file was complete.
    """
    mpx = pixels / 1e6
    return f"wrote {path}: {mpx:.3g} Mpx in {seconds:.1f} s, {mpx / max(seconds, 1e-9):.3g} Mpx/s"


def _counted(rows: Iterable[np.ndarray], pixels: list[int]) -> Iterator[np.ndarray]:
    """``rows`` unchanged, adding each strip's pixels (``h x width``) to ``pixels[0]``."""
    for strip in rows:
        pixels[0] += int(strip.shape[-2]) * int(strip.shape[-1])
        yield strip


class TaskChipGenerator(nn.Module):
    """A :class:`~synthsat.synthesis.gan_synthesizer.ChipGenerator` of a trained ``GeneratorTask``.

    Args:
        task: the generator task (its ``hparams`` hold the data metadata, patch size,
            z size and diversity weight).
    """

    def __init__(self, task: Any) -> None:
        super().__init__()
        hp = task.hparams
        self.data: dict[str, Any] = dict(checkpoint_metadata(hp))
        self.num_classes = len(self.data["classes"])
        self.out_bands = int(self.data["bands"])
        self.chip_size = int(hp["patch_size"])
        self.z_dim = int(hp["z_dim"])
        self.lambda_div = float(hp.get("lambda_div", 0.0))
        self.has_encoder = getattr(task, "encoder", None) is not None
        self.task = task.eval()
        self.net = task.inference_generator().eval()
        self.noise_dim = int(getattr(self.net, "noise_dim", 0))
        self.noise_cell = int(getattr(self.net, "noise_cell", 1))

    def generate(self, onehot: Tensor, z: Tensor, noise: Tensor | None = None) -> Tensor:
        """Normalised images from one-hot masks, style codes and (if used) noise fields."""
        return self.net(onehot, z, noise)

    def encode(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, logvar)`` of the style of normalised real chips."""
        if not self.has_encoder:
            raise ValueError(
                "the checkpoint's generator was trained without a style encoder "
                "(use_vae=false); use style=random"
            )
        return self.task.encode(image)


def load_chip_generator(checkpoint: str | Path, map_location: str = "cpu") -> TaskChipGenerator:
    """Load a ``GeneratorTask`` checkpoint as a chip generator.

    Raises:
        CheckpointError: if ``checkpoint`` is missing (also a ``FileNotFoundError``),
            empty, corrupt or not a generator checkpoint.
    """
    from synthsat.tasks.checkpoints import load_task

    path = Path(checkpoint)
    if not path.is_file():
        from synthsat.errors import CheckpointMissing

        raise CheckpointMissing(
            f"ckpt={path}: generator checkpoint does not exist "
            "(train one with synthsat-train-generator, then pass ckpt=...)"
        )
    return TaskChipGenerator(load_task(path, "generator", "synthesize", map_location))


class RequestDataset(Dataset):
    """The synthesis requests, one item each (the unit that ranks share out)."""

    def __init__(self, requests: Sequence[TileRequest]) -> None:
        self.requests = list(requests)

    def __len__(self) -> int:
        return len(self.requests)

    def __getitem__(self, index: int) -> TileRequest:
        return self.requests[index]


def collate_requests(batch: list[TileRequest]) -> list[TileRequest]:
    """Keep requests as a list (the default collate cannot stack them)."""
    return batch


@dataclass
class TileStream:
    """A request and the lazy stream of its finished rows (None: output exists)."""

    request: TileRequest
    rows: Iterator[np.ndarray] | None


class SynthesisModule(L.LightningModule):
    """Runs a tile synthesiser in ``predict``; its generator (if any) moves with the module.

    Args:
        synthesizer: the tile synthesiser (a
            :class:`~synthsat.synthesis.gan_synthesizer.TileSynthesizer`, whose generator should
            be an ``nn.Module``, or another
            :class:`~synthsat.synthesis.synthesizer.Synthesizer`).
    """

    def __init__(self, synthesizer: Synthesizer) -> None:
        super().__init__()
        self.synthesizer = synthesizer
        generator = getattr(synthesizer, "generator", None)
        if isinstance(generator, nn.Module):
            self.generator = generator

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        """Requests are paths, not tensors: nothing to move."""
        return batch

    def predict_step(self, batch: list[TileRequest], batch_idx: int) -> list[TileStream]:
        """Check each request and start its row stream (computed as the writer consumes it)."""
        streams = []
        for request in batch:
            if request.output.exists():
                streams.append(TileStream(request, None))
                continue
            self.synthesizer.check(request)
            streams.append(TileStream(request, self.synthesizer.stream(request, self.device)))
        return streams


class SynthesisWriter(BasePredictionWriter):
    """Writes each tile stream to its GeoTIFF (atomically) and keeps the manifest.

    Args:
        out_dir: output directory (holds the tiles and ``manifest.json``).
    """

    def __init__(self, out_dir: str | Path) -> None:
        super().__init__(write_interval="batch")
        self.out_dir = Path(out_dir)
        self.written: list[dict[str, Any]] = []
        self.skipped: list[Path] = []
        self.busy: list[TileRequest] = []  # skipped while another live process wrote them

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Rank 0 removes temporary files of killed runs (not those of live writers)
        before anyone writes."""
        if trainer.is_global_zero:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            for path in remove_stale_temps(self.out_dir):
                log.info("removed %s, left by an interrupted run", path)
        trainer.strategy.barrier("synthsat-synthesis-start")

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: list[TileStream],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Write the tiles of one batch of requests, logging each one's throughput."""
        assert isinstance(pl_module, SynthesisModule)
        synthesizer = pl_module.synthesizer
        for item in prediction:
            if item.rows is None or item.request.output.exists():
                self.skipped.append(item.request.output)
                _warn_if_different(item.request, synthesizer)
                continue
            busy = busy_writer(item.request.output)
            if busy is not None:  # another synthesis on this out_dir writes it now
                self.busy.append(item.request)
                log.warning("skip %s: %s is writing it", item.request.output, busy)
                continue
            self._write(trainer, synthesizer, item.request, item.rows)

    def _write(
        self,
        trainer: L.Trainer,
        synthesizer: Synthesizer,
        request: TileRequest,
        rows: Iterator[np.ndarray],
    ) -> None:
        """Write one tile from its rows, logging its throughput."""
        pixels = [0]
        start = _clock()
        self.written.append(synthesizer.write(request, _counted(rows, pixels)))
        seconds = _clock() - start
        if trainer.world_size == 1:
            write_manifest(self.out_dir)
        log.info("%s", tile_message(request.output, pixels[0], seconds))

    def _finish_busy(self, trainer: L.Trainer, pl_module: SynthesisModule) -> None:
        """The tiles skipped while another process wrote them: wait for each until it is
        there (counted as skipped) or its writer is gone (killed: written here).

        Raises:
            IncompleteOutput: tiles still missing whose writer runs on another host
                (it cannot be checked from here), naming them.
        """
        missing = []
        synthesizer = pl_module.synthesizer
        for request in self.busy:
            while not request.output.exists() and (owner := busy_owner(request.output)):
                if not is_this_host(owner[1]):
                    missing.append(f"{request.output.name} (pid {owner[0]} on {owner[1]})")
                    break
                time.sleep(_poll_s)
            else:
                if request.output.exists():
                    self.skipped.append(request.output)
                    continue
                log.warning("%s: its writer is gone; writing it here", request.output)
                remove_stale_temps(self.out_dir)
                synthesizer.check(request)
                rows = synthesizer.stream(request, pl_module.device)
                self._write(trainer, synthesizer, request, rows)
        self.busy = []
        if missing:
            raise IncompleteOutput(
                f"{self.out_dir}: {len(missing)} tile(s) missing, being written by "
                f"processes on other hosts: {', '.join(missing)}; rerun once they end"
            )

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Once this rank's tiles are done, finish those another process was writing
        (:meth:`_finish_busy`); after every rank is done, rank 0 rebuilds the manifest."""
        assert isinstance(pl_module, SynthesisModule)
        self._finish_busy(trainer, pl_module)
        trainer.strategy.barrier("synthsat-synthesis-end")
        if trainer.is_global_zero:
            write_manifest(self.out_dir)


def _warn_if_different(request: TileRequest, synthesizer: Synthesizer) -> None:
    """Warn when a kept output was made with other settings than this run's."""
    old = read_provenance(request.output) or {}
    new = synthesizer.record(request)
    diff = [
        k
        for k in (
            "generator",
            "checkpoint",
            "seed",
            "style",
            "style_scope",
            "lambda_div",
            "overlap",
            "texture",
        )
        if k in new and old.get(k) != new[k]
    ]
    if diff:
        log.warning(
            "%s exists and is kept, but was made with other %s (%s) than this run "
            "(%s); delete it to remake it",
            request.output,
            ", ".join(diff),
            {k: old.get(k) for k in diff},
            {k: new[k] for k in diff},
        )


def run_synthesis(
    synthesizer: Synthesizer,
    requests: Sequence[TileRequest],
    out_dir: str | Path,
    trainer: L.Trainer | None = None,
) -> SynthesisWriter:
    """Make every request's output with ``trainer.predict`` (skipping finished ones).

    Args:
        synthesizer: the tile synthesiser (see
            :class:`~synthsat.synthesis.synthesizer.Synthesizer`).
        requests: the outputs to make (see :func:`~synthsat.synthesis.requests.make_requests`).
        out_dir: output directory.
        trainer: a Trainer without the writer (it is added); None: one CPU process.
            Under DDP each tile goes to one process (Lightning's predict sampler does
            not repeat any), which needs at least as many requests as processes.

    Returns:
        the writer callback, with the outputs this process wrote and skipped.

    Raises:
        ConfigError: fewer requests than processes.
    """
    writer = SynthesisWriter(out_dir)
    if trainer is None:
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
        )
    processes = int(trainer.num_devices) * int(trainer.num_nodes)
    if 0 < len(requests) < processes:
        # Lightning's predict sampler gives every tile to one rank and needs one per rank
        raise ConfigError(
            f"{len(requests)} tile(s) to synthesise for {processes} processes: use at most "
            f"trainer.devices={len(requests)} (trainer.num_nodes=1), or more tiles"
        )
    trainer.callbacks.append(writer)
    loader = DataLoader(
        RequestDataset(requests), batch_size=1, shuffle=False, collate_fn=collate_requests
    )
    trainer.predict(SynthesisModule(synthesizer), dataloaders=loader, return_predictions=False)
    return writer
