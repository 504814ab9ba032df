"""Read back what W&B wrote offline: ``wandb.Api()`` needs a server, so the tests parse ``run-<id>.wandb`` itself.

The file is a LevelDB-style log (the reference's adoption.md §8): a 7-byte header (``:W&B``, magic 0xBEE1, version 0),
then 32 KiB blocks of records, each with a 7-byte header (crc32, uint16 length, type 1 full / 2 first / 3 middle /
4 last); a block's tail shorter than a header is padding. The payloads are ``wandb_internal_pb2.Record`` protobufs.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def payloads(path: Path) -> list[bytes]:
    data = Path(path).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), (ident, hex(magic), version)
    out, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # padding at the end of a block
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if length == 0 and kind == 0:
            pos += left  # zero-filled tail
            continue
        body = data[pos + HEADER:pos + HEADER + length]
        assert zlib.crc32(bytes([kind]) + body) & 0xFFFFFFFF == crc, f"crc mismatch at byte {pos}"
        pos += HEADER + length
        if kind == FULL:
            out.append(body)
        elif kind == FIRST:
            pending = body
        elif kind == MIDDLE:
            pending += body
        elif kind == LAST:
            out.append(pending + body)
            pending = b""
    return out


@dataclass
class OfflineRun:
    """What one offline run directory holds: the run's config, group, job type and name, its logged metrics."""

    run_id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    history: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def read_offline_run(run_dir: Path) -> OfflineRun:
    from wandb.proto import wandb_internal_pb2 as pb

    (log,) = Path(run_dir).glob("run-*.wandb")
    run = OfflineRun()
    for body in payloads(log):
        record = pb.Record()
        record.ParseFromString(body)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id, run.name = record.run.run_id, record.run.display_name
            run.group, run.job_type = record.run.run_group, record.run.job_type
            run.config.update(_items(record.run.config.update))
        elif kind == "config":
            run.config.update(_items(record.config.update))
        elif kind == "history":
            run.history.update(_values(record.history.item))
        elif kind == "summary":
            run.summary.update(_values(record.summary.update))
    run.files = sorted(str(p.relative_to(run_dir / "files")) for p in (run_dir / "files").rglob("*") if p.is_file())
    return run


def _values(items) -> dict[str, Any]:
    """History and summary items: each key's value as JSON."""
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


def _items(items) -> dict[str, Any]:
    """Config items: W&B stores each key's value as ``{"value": ...}`` (with a ``desc``) in JSON."""
    out = {}
    for item in items:
        value = json.loads(item.value_json)
        out[item.key or "/".join(item.nested_key)] = value.get("value", value) if isinstance(value, dict) else value
    return out


def offline_runs(directory: Path) -> list[Path]:
    return sorted((Path(directory) / "wandb").glob("offline-run-*"))
