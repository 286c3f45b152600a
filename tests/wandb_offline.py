"""Read an offline W&B run (``wandb/offline-run-*/run-*.wandb``) back, for tests.

wandb 0.31 writes no ``config.yaml`` or ``wandb-summary.json`` offline and ships no
reader of its run files: the file is a LevelDB-style log (a 7-byte header, 32 KiB
blocks of records with a 7-byte header: CRC, length, kind) of ``wandb.proto`` records.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

BLOCK = 32768
HEADER = b":W&B"
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[Any]:
    """The ``wandb_internal_pb2.Record`` s of a run file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == HEADER, f"{path} is not a W&B run file"
    pos, chunks, pending = 7, [], b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:  # zero padding to the block's end
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == FULL:
            chunks.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            chunks.append(pending + chunk)
            pending = b""
    found = []
    for chunk in chunks:
        record = pb.Record()
        record.ParseFromString(chunk)
        found.append(record)
    return found


def _apply(target: dict[str, Any], item: Any) -> None:
    keys = [item.key] if item.key else list(item.nested_key)
    node = target
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = json.loads(item.value_json)


def complete_records(path: Path, limit_s: float = 600.0) -> list[Any]:
    """The records of a finished run's file, once W&B's service has written them all.

    ``wandb.finish`` can return before the service process (wandb-core) has flushed the
    file: on a busy machine a test read it without its ``run`` record. The signal that
    the file is whole is its ``exit`` record, W&B's last; ``limit_s`` only bounds how long
    a run that never ends takes to fail.
    """
    deadline = time.monotonic() + limit_s
    while True:
        try:
            found = records(path)
        except Exception:  # noqa: BLE001 - a record still being written: read again
            found = []
        if any(r.WhichOneof("record_type") == "exit" for r in found):
            return found
        if time.monotonic() > deadline:
            kinds = [r.WhichOneof("record_type") for r in found]
            raise AssertionError(f"{path} has no exit record after {limit_s:.0f} s: {kinds}")
        time.sleep(0.1)


def read_run(run_dir: Path) -> dict[str, Any]:
    """What an offline run holds: ``name``, ``tags``, ``group``, ``job_type``, ``project``,
    ``config`` and ``summary`` (nested dicts) and ``history`` (a list of logged rows)."""
    (path,) = Path(run_dir).glob("run-*.wandb")
    run: dict[str, Any] = {"config": {}, "summary": {}, "history": []}
    for record in complete_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.update(
                name=r.display_name,
                tags=list(r.tags),
                group=r.run_group,
                job_type=r.job_type,
                project=r.project,
            )
            for item in r.config.update:
                _apply(run["config"], item)
        elif kind == "config":
            for item in record.config.update:
                _apply(run["config"], item)
        elif kind == "summary":
            for item in record.summary.update:
                _apply(run["summary"], item)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _apply(row, item)
            run["history"].append(row)
    return run


def offline_runs(folder: Path) -> list[Path]:
    """The offline run folders under ``folder`` (``wandb/offline-run-*``), sorted."""
    return sorted(Path(folder).glob("**/wandb/offline-run-*"))


def logged_images(run_dir: Path, entry: dict[str, Any]) -> list[Any]:
    """The pixels (uint8 arrays, as W&B stored them) of a logged image key, given its
    summary ``entry`` (``{"_type": "images/separated", "filenames": [...]}``)."""
    import numpy as np
    from PIL import Image

    files = Path(run_dir) / "files"
    return [np.asarray(Image.open(files / name).convert("RGB")) for name in entry["filenames"]]
