"""Per-image result records: one JSON line per (image, method config), appended durably the moment it exists.

A killed run leaves at most one partial last line; readers skip it and writers start a fresh line after it, so a
resumed run loses nothing but the image that was being written. Tables and figures are pure functions of these
files (``easyinv.report``), so a crashed run re-reports without recomputing.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import pandas as pd

from easyinv.metrics import declared
from easyinv.run.files import MANIFEST_FILE, RECORDS_FILE, RECORDS_GLOB
from easyinv.validation import CONFIG_DIR, dirname_exclude_keys

__all__ = [
    "RECORDS_FILE",
    "RECORDS_GLOB",
    "RECORD_FIELDS",
    "SOURCE_COLUMNS",
    "STATUSES",
    "Record",
    "RecordWriter",
    "RecordsBusyError",
    "config_hash",
    "done_keys",
    "environment_info",
    "flatten",
    "read_records",
    "records_files",
    "write_run_manifest",
]

log = logging.getLogger(__name__)

STATUSES = ("ok", "skipped", "nonfinite", "error")

# Parts of the resolved config that do not change a record's numbers: where things live, how fast and in what batches
# they run, what is kept on disk, which slice of the data is taken. One list: the keys a run directory's name leaves
# out (configs/config.yaml, hydra.job.config.override_dirname.exclude_keys) are left out of the hash, and a dotted
# key here leaves out everything under it. The hash leaves out more than the name does, each for its reason:
HASH_ONLY = (
    # whole trees, whatever keys they hold; the name's list spells out each key a command line can set under them
    # (tests/test_config_keys.py checks it does)
    "paths", "hydra", "report", "shard",
    # the data's slice and where it and the weights live: the same numbers per item, but another offset, data folder
    # or weights folder gets its own run directory (model.load.source via flat_dirname)
    "dataset.offset", "dataset.root", "dataset.manifest", "dataset.hash_files", "model.load.source",
    "model.load.cache_dir",  # where the tiny models are built: the same seeded weights wherever it is
    "model.editing",  # editor defaults per model: an editing job's own config (edit.*) holds the values it used
    "job",  # the job kind follows from the edit group (hashed), so it names no number of its own
)


def hash_exclude(config_dir: Path = CONFIG_DIR) -> tuple[str, ...]:
    """The keys the config hash leaves out: the run directory name's list in ``config_dir``'s config.yaml, then
    :data:`HASH_ONLY`."""
    return tuple(dict.fromkeys((*dirname_exclude_keys(config_dir), *HASH_ONLY)))


HASH_EXCLUDE = hash_exclude()
PACKAGES = ("torch", "torchvision", "diffusers", "transformers", "accelerate", "lpips", "torchmetrics", "hydra-core",
            "omegaconf", "numpy", "pandas")


@dataclass
class Record:
    """One image under one method configuration. Every field is a primitive, so a record is one flat JSON object.

    Times are seconds; ``nfe`` counts latent rows through the UNet (``nfe_invert + nfe_reconstruct``);
    ``unet_seconds`` is time spent inside UNet calls; ``warmup`` marks the first image, left out of timing means.
    ``extra`` holds flattened free keys (swept hyperparameters like ``method.eta``) written at the top level.
    Failures: ``first_failure`` says where a non-finite value first appeared (``invert step 12``), ``retried`` how
    the image was computed again (``fp32``), ``flag`` marks an ``ok`` row to distrust (``degenerate``: a flat
    reconstruction of a textured image). ``batch_size`` is the batch the image actually ran in.

    The metric fields (``psnr`` ... ``latent_mse``, ``lpips_comparable``) are keywords for the metrics declared in
    ``easyinv.metrics`` when this class was written; a metric declared since is written through ``extra`` (or as a
    key of a plain dict record), and :func:`read_records` gives every declared metric its column either way.
    """

    item_id: str
    method: str
    status: str = "ok"
    reason: str | None = None
    dataset: str | None = None
    model: str | None = None
    method_label: str | None = None
    precision: str | None = None
    config_hash: str | None = None
    psnr: float | None = None
    ssim: float | None = None
    lpips: float | None = None
    latent_mse: float | None = None
    nfe: int | None = None
    nfe_invert: int | None = None
    nfe_reconstruct: int | None = None
    backward_passes: int | None = None  # autograd passes through the network (null-text inversion), not in nfe
    state_bytes: int | None = None  # what the reconstruction needs per image: z_T plus the method's own state
    t_encode: float | None = None
    t_invert: float | None = None
    t_reconstruct: float | None = None
    t_decode: float | None = None
    t_metrics: float | None = None
    t_total: float | None = None
    unet_seconds: float | None = None
    ms_per_nfe: float | None = None
    warmup: bool = False
    seed: int | None = None
    lpips_comparable: bool | None = None
    device: str | None = None
    batch_size: int | None = None
    first_failure: str | None = None
    retried: str | None = None
    flag: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"Record.status: expected one of {STATUSES}, got {self.status!r}")
        clash = set(self.extra) & set(RECORD_FIELDS)
        if clash:
            raise ValueError(f"Record.extra: keys {sorted(clash)} clash with record fields")

    def to_dict(self) -> dict[str, Any]:
        """Flat dict: the fields in declaration order, then ``extra``."""
        d = asdict(self)
        extra = d.pop("extra")
        return {**d, **extra}


RECORD_FIELDS: tuple[str, ...] = tuple(f for f in Record.__dataclass_fields__ if f != "extra")
SOURCE_COLUMNS = ("run_dir", "records_file")  # added by read_records: where a row was read, not what it measured


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"method": {"eta": 0.5}}`` → ``{"method.eta": 0.5}``; lists become JSON strings (records hold primitives).

    Hydra's ``_target_`` keys name a class, not a setting, and are left out.
    """
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if key == "_target_":
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(list(value), sort_keys=True, default=str)
        else:
            out[name] = value
    return out


def _primitive(key: str, value: Any) -> Any:
    """Check a value is JSON-primitive; NaN becomes null and ±inf the strings "inf"/"-inf" (strict JSON has neither).

    Infinity is a real result (PSNR of identical images), so it is kept; readers coerce it back to float.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float) or hasattr(value, "item"):  # numpy / 0-d torch scalars
        number = value.item() if hasattr(value, "item") else value
        if isinstance(number, float) and math.isnan(number):
            return None
        if isinstance(number, float) and math.isinf(number):
            return "inf" if number > 0 else "-inf"
        return number
    raise TypeError(f"record field {key!r}: {type(value).__name__} is not a primitive (str, int, float, bool, None)")


# Seconds a writer pauses in the middle of each line; only the SIGKILL test sets it (EASYINV_FAULT_WRITE_PAUSE).
_WRITE_PAUSE = float(os.environ.get("EASYINV_FAULT_WRITE_PAUSE", "0") or 0)


class RecordsBusyError(RuntimeError):
    """Another live process holds the records file this writer would append to."""


class RecordWriter:
    """Appends records to a JSONL file: write, flush and fsync per record, so a kill loses at most that record.

    If the file ends inside a line (a previous writer was killed mid-write), the next record starts on a new line and
    the fragment stays behind as one unreadable line that :func:`read_records` skips; nothing is truncated, so a
    concurrent writer can never lose data to this repair.

    The writer holds an advisory ``flock`` on the file from :meth:`open` (or the first append) until :meth:`close`:
    a second process that opens the same file (the same shard of the same job, started twice) gets
    :class:`RecordsBusyError` instead of interleaving rows. The kernel drops the lock when a process dies.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = None

    def append(self, record: Record | Mapping[str, Any]) -> None:
        """Write one record as one line, durably."""
        row = record.to_dict() if isinstance(record, Record) else dict(record)
        for required in ("item_id", "method", "status"):
            if row.get(required) is None:
                raise ValueError(f"record lacks {required!r}: {row}")
        if row["status"] not in STATUSES:
            raise ValueError(f"record status: expected one of {STATUSES}, got {row['status']!r}")
        line = json.dumps({k: _primitive(k, v) for k, v in row.items()}, allow_nan=False, ensure_ascii=False)
        f = self.open()
        if _WRITE_PAUSE > 0:  # fault injection for the kill test: leave a half-written line on disk for a moment
            f.write(line[: len(line) // 2])
            f.flush()
            time.sleep(_WRITE_PAUSE)
            line = line[len(line) // 2 :]
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())

    def open(self) -> IO[str]:
        """Open for appending and take the lock (idempotent); raises :class:`RecordsBusyError` if it is held."""
        if self._file is None:
            f = self.path.open("a", encoding="utf-8")
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                f.close()
                if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise RecordsBusyError(
                        f"{self.path} is being written by another process (the same shard of the same job is "
                        "already running); stop it or wait for it, then run again to resume") from None
                raise
            if _ends_mid_line(self.path):
                log.warning("%s ends in a partial line (killed writer?); it will be skipped when read", self.path)
                f.write("\n")
            self._file = f
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor releases the lock
            self._file = None

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ends_mid_line(path: Path) -> bool:
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every parseable line of a records file; broken lines (a killed writer's fragment) are skipped with a warning."""
    rows = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s:%d: skipping an incomplete record (%d bytes)", path, number, len(line))
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def records_files(paths_or_dirs: str | Path | Iterable[str | Path], recursive: bool = True) -> list[Path]:
    """Every records file (``records*.jsonl``: one per writer) under the given files or directories."""
    items = [paths_or_dirs] if isinstance(paths_or_dirs, (str, Path)) else list(paths_or_dirs)
    files: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            found = item.rglob(RECORDS_GLOB) if recursive else item.glob(RECORDS_GLOB)
            files.extend(sorted(p for p in found if p.is_file()))
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"no records file or run directory at {item}")
    return list(dict.fromkeys(files))


def read_records(paths_or_dirs: str | Path | Iterable[str | Path], dedupe: bool = True) -> pd.DataFrame:
    """All records under the given files/directories (recursively, every ``records*.jsonl``) as one DataFrame.

    Every :data:`RECORD_FIELDS` column exists, and so does every metric declared in ``easyinv.metrics`` (float, empty
    in records written before it was declared) with its ``comparable`` flag; ``run_dir`` names the directory each
    record came from and
    ``records_file`` the file. With ``dedupe`` a record measured twice (same ``item_id``, ``config_hash`` and
    ``device``, e.g. an error later retried, possibly by another shard) keeps its last finished occurrence: an
    ``error`` row never hides a finished row of the same image, whichever file holds it.
    """
    frames = []
    for path in records_files(paths_or_dirs):
        rows = _read_jsonl(path)
        if rows:
            frame = pd.DataFrame(rows)
            frame["run_dir"] = str(path.parent)
            frame["records_file"] = path.name
            frames.append(frame)
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    metrics = declared()
    flags = [m.comparable for m in metrics if m.comparable is not None]
    for name in (*RECORD_FIELDS, *SOURCE_COLUMNS, *(m.name for m in metrics), *flags):
        if name not in df.columns:
            df[name] = None
    numeric = {name: kind for name, kind in Record.__annotations__.items() if kind in ("float | None", "int | None")}
    numeric.update(dict.fromkeys((m.name for m in metrics), "float | None"))
    for name, kind in numeric.items():
        dtype = "float64" if kind.startswith("float") else "Int64"
        df[name] = pd.to_numeric(df[name], errors="coerce").astype(dtype)
    for name in dict.fromkeys(("warmup", *flags)):
        df[name] = df[name].map(lambda v: bool(v) if isinstance(v, bool) else False).astype(bool)
    if dedupe and len(df):
        before = len(df)
        finished = (df["status"] != "error").to_numpy()
        order = sorted(range(len(df)), key=lambda i: finished[i])  # stable: errors first, file order kept within
        df = df.iloc[order].drop_duplicates(subset=["item_id", "config_hash", "device"], keep="last").sort_index()
        df = df.reset_index(drop=True)
        if len(df) < before:
            log.info("read_records: %d repeated record(s) replaced by their last occurrence", before - len(df))
    return df


def done_keys(
    paths_or_dirs: str | Path | Iterable[str | Path], retry: Iterable[str] = ("error",), keep_retried: bool = False
) -> set[tuple[str, str]]:
    """``(item_id, config_hash)`` pairs already finished in the given records files or job directories.

    A directory means every ``records*.jsonl`` directly in it, whichever shard wrote it, so a job resumed with
    another shard count (or as one process) never recomputes a finished row. A pair is done when any file holds a
    record of it whose status is not in ``retry`` (an ``error`` later retried to ``ok`` is done), or, with
    ``keep_retried``, a record that already went through a retry (``retried`` set: trying again would fail the same
    way). A missing path means nothing is done.
    """
    items = [paths_or_dirs] if isinstance(paths_or_dirs, (str, Path)) else list(paths_or_dirs)
    retry = set(retry)
    done: set[tuple[str, str]] = set()
    for path in records_files([p for p in map(Path, items) if p.exists()], recursive=False):
        for row in _read_jsonl(path):
            if str(row.get("status")) not in retry or (keep_retried and row.get("retried")):
                done.add((str(row.get("item_id")), str(row.get("config_hash"))))
    return done


def config_hash(cfg: Mapping[str, Any], exclude: Iterable[str] = HASH_EXCLUDE) -> str:
    """First 12 hex of the sha256 of canonical JSON of the resolved config, without keys that leave numbers alone.

    ``exclude`` holds dotted paths (``"dataset.limit"``); key order never matters.
    """
    pruned = _without(dict(cfg), {tuple(e.split(".")) for e in exclude})
    text = json.dumps(pruned, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:12]


def _without(tree: Mapping[str, Any], drop: set[tuple[str, ...]], prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        path = (*prefix, str(key))
        if path in drop:
            continue
        out[str(key)] = _without(value, drop, path) if isinstance(value, Mapping) else value
    return out


# --------------------------------------------------------------------------------------------------------------------
# Run manifest
# --------------------------------------------------------------------------------------------------------------------


def environment_info(device: Any = None) -> dict[str, Any]:
    """Versions, git state and hardware: what a reader needs to trust or compare a run's numbers."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "git": _git_state(),
        "cpu": {"machine": platform.machine(), "cores": os.cpu_count()},
    }
    try:
        import torch

        info["cpu"]["torch_threads"] = torch.get_num_threads()
        info["cuda"] = {"available": torch.cuda.is_available(), "runtime": torch.version.cuda}
        dev = torch.device(device) if device not in (None, "auto") else None
        if dev is None and torch.cuda.is_available():
            dev = torch.device("cuda", torch.cuda.current_device())
        if dev is not None and dev.type == "cuda" and torch.cuda.is_available():
            props = torch.cuda.get_device_properties(dev)
            info["device"] = {"type": "cuda", "name": props.name, "capability": f"{props.major}.{props.minor}",
                              "memory_gib": round(props.total_memory / 2**30, 1),
                              "cudnn": torch.backends.cudnn.version()}
        else:
            info["device"] = {"type": dev.type if dev is not None else None, "name": platform.processor() or None}
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    return info


def _git_state() -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}
    if sha.returncode != 0:
        return {"sha": None, "dirty": None}
    return {"sha": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip()) if dirty.returncode == 0 else None}


def write_run_manifest(run_dir: str | Path, info: Mapping[str, Any], device: Any = None) -> Path:
    """Write ``run.json`` (``info`` + ``environment``) atomically; a resumed run overwrites it with its own state."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    body = dict(info)
    body.setdefault("environment", environment_info(device if device is not None else info.get("device")))
    target = run_dir / MANIFEST_FILE
    tmp = target.with_suffix(f".json.{os.getpid()}.tmp")  # shards of one job write the same run.json
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    return target
