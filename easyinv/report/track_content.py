"""What an experiment tracker shows of finished runs, read from their run directories and written report alone.

Per job (one configuration: method × model × precision × dataset, one config hash): the resolved config as params
(the hashed part only, so a resumed or re-run job logs the same params), where and on what it ran as tags, the
report's Table-1 numbers as metrics, its per-image records. Per run root (a multirun/sweep directory): the report's
files. Nothing here talks to a tracker (``track_mlflow``, ``track_wandb`` do) or computes a number: a tracker is a
window on the records and the report, which stay the source of truth.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from easyinv.report.sweep_tables import swept_keys
from easyinv.run.completeness import check_runs
from easyinv.run.files import MANIFEST_FILE, safe_name
from easyinv.run.records import HASH_EXCLUDE, flatten, read_records

__all__ = ["ROW_KEYS", "TABLE_FILES", "TrackedJob", "TrackedRoot", "collect", "hashed_params", "table_row",
           "write_parquet"]

# the report's CSVs with one row per configuration: a job's metrics are its row's numbers. Table 1's rows carry
# their config hash; the editing table's are found by these columns, whose values in the job's records are unique
TABLE_FILES = ("table1.csv", "editing.csv")
ROW_KEYS = ("dataset", "model", "protocol", "precision")
# table columns that are not this run's numbers (published ones) or not numbers at all
_NOT_METRICS = ("paper_",)
_SWEPT_PREFIX = "swept."  # a swept value logged as a metric too, so trackers can plot against it
MULTIRUN_FILE = "multirun.yaml"  # Hydra writes it into a sweep directory


@dataclass
class TrackedJob:
    """One job as a tracker shows it; ``key`` (the config hash) finds its tracker run again."""

    key: str
    name: str
    run_dir: Path
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]
    records: pd.DataFrame
    config: dict[str, Any]
    complete: bool


@dataclass
class TrackedRoot:
    """A run root (a sweep directory, or one job's directory) and the report written from it."""

    key: str
    path: Path
    report_dir: Path | None
    jobs: list[TrackedJob] = field(default_factory=list)
    sweep: bool = False  # a multirun: its jobs are the children of one parent run

    @property
    def artifacts(self) -> list[Path]:
        """The report's files (tables, report.html, figures): every file under the report directory."""
        if self.report_dir is None or not self.report_dir.is_dir():
            return []
        return sorted(p for p in self.report_dir.rglob("*") if p.is_file())

    @property
    def tags(self) -> dict[str, str]:
        return {"easyinv.sweep": self.key, "easyinv.run_dir": str(self.path.resolve()),
                "easyinv.jobs": str(len(self.jobs))}


def collect(roots: Iterable[str | Path], report_dir: str | Path | None) -> list[TrackedRoot]:
    """Every job under each root, with its numbers read from ``report_dir``'s tables (written from these roots)."""
    report = Path(report_dir) if report_dir is not None else None
    tables = _tables(report)
    tracked = []
    for root in map(Path, roots):
        root = root.parent if root.is_file() else root
        found = check_runs([root])
        records = read_records([root])
        swept = swept_keys(records) if not records.empty else []
        jobs = [_job(c.run_dir, c.config_hash, c.label, c.complete, records, tables, swept) for c in found]
        sweep = (root / MULTIRUN_FILE).is_file() or len(jobs) > 1
        tracked.append(TrackedRoot(key=safe_name(root.resolve().name), path=root, report_dir=report, jobs=jobs,
                                   sweep=sweep))
    return tracked


def _job(run_dir: Path, digest: str, label: str, complete: bool, records: pd.DataFrame,
         tables: list[pd.DataFrame], swept: list[str]) -> TrackedJob:
    manifest = _manifest(run_dir)
    own = str(manifest.get("config_hash")) == digest
    config = (manifest.get("config") or {}) if own else {}
    mine = records[records["config_hash"].astype(str) == digest] if not records.empty else records
    mine = mine[mine["run_dir"].astype(str) == str(run_dir)] if "run_dir" in mine.columns else mine
    params = hashed_params(config) if config else _params_from_records(mine)
    metrics = _metrics(table_row(tables, digest, mine))
    for key in swept:
        values = mine[key].dropna().unique() if key in mine.columns else []
        if len(values) == 1 and _number(values[0]) is not None:
            metrics[f"{_SWEPT_PREFIX}{key}"] = _number(values[0])  # type: ignore[assignment]
    name = run_dir.name if run_dir.name and run_dir.name != "." else (label or digest)
    return TrackedJob(key=digest, name=name, run_dir=run_dir, params=params,
                      tags=_tags(digest, label, run_dir, manifest, mine, complete), metrics=metrics,
                      records=mine.drop(columns=[c for c in ("run_dir", "records_file") if c in mine.columns]),
                      config=config, complete=complete)


def hashed_params(config: Mapping[str, Any]) -> dict[str, str]:
    """The resolved config, flattened, without the keys the config hash leaves out: equal hashes, equal params."""
    drop = tuple(HASH_EXCLUDE)
    flat = flatten(config)
    return {k: _text(v) for k, v in sorted(flat.items())
            if not any(k == d or k.startswith(f"{d}.") for d in drop)}


def _params_from_records(rows: pd.DataFrame) -> dict[str, str]:
    """A run written before run.json held its config: what its records say of the configuration."""
    if rows.empty:
        return {}
    first = rows.iloc[0]
    keys = ("dataset", "model", "method", "method_label", "precision", "seed")
    return {k: _text(first[k]) for k in keys if k in rows.columns and pd.notna(first[k])}


def _tags(digest: str, label: str, run_dir: Path, manifest: Mapping[str, Any], rows: pd.DataFrame,
          complete: bool) -> dict[str, str]:
    env = manifest.get("environment") or {}
    packages = env.get("packages") or {}
    device = env.get("device") or {}
    devices = sorted({str(d) for d in rows["device"].dropna()}) if "device" in rows.columns else []
    tags = {
        "easyinv.config_hash": digest,
        "easyinv.method_label": label,
        "easyinv.run_dir": str(run_dir.resolve()),
        "easyinv.complete": str(bool(complete)).lower(),
        "easyinv.images": str(len(rows)),
        "easyinv.git_commit": (env.get("git") or {}).get("sha"),
        "easyinv.git_dirty": (env.get("git") or {}).get("dirty"),
        "easyinv.device": ",".join(devices) or (manifest.get("config") or {}).get("device"),
        "easyinv.gpu": device.get("name") if device.get("type") == "cuda" else None,
        "easyinv.torch": packages.get("torch"),
        "easyinv.diffusers": packages.get("diffusers"),
        "easyinv.python": env.get("python"),
    }
    return {k: _text(v) for k, v in tags.items() if v is not None and v != ""}


def _metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """A table row's numbers, as written; for each ``<m>_mean`` with a ``<m>_ci95`` half-width, its bounds too."""
    out: dict[str, float] = {}
    for key, value in row.items():
        number = _number(value)
        if number is None or key.startswith(_NOT_METRICS) or key == "config_hash":
            continue
        out[key] = number
    for key in list(out):
        if key.endswith("_mean") and f"{key[:-5]}_ci95" in out:
            stem = key[:-5]
            out[f"{stem}_ci_low"] = out[key] - out[f"{stem}_ci95"]
            out[f"{stem}_ci_high"] = out[key] + out[f"{stem}_ci95"]
    return out


def _tables(report_dir: Path | None) -> list[pd.DataFrame]:
    if report_dir is None:
        return []
    # hashes are text: read as numbers, one of digits and an "e" would become a float
    return [pd.read_csv(report_dir / name, dtype={"config_hash": str}) for name in TABLE_FILES
            if (report_dir / name).is_file()]


def table_row(tables: list[pd.DataFrame], digest: str, records: pd.DataFrame) -> dict[str, Any]:
    """The job's row of the report's tables: by its config hash (a row of several configurations counts for each),
    else by the ``ROW_KEYS`` its records hold one value of; ``{}`` when no single row is the job's."""
    for table in tables:
        if "config_hash" in table.columns:
            hashes = table["config_hash"].astype(str).str.split(",")
            found = table[hashes.map(lambda hs, d=digest: d in [h.strip() for h in hs])]
        else:
            keys = [k for k in ROW_KEYS if k in table.columns and k in records.columns]
            if not keys or records.empty or any(records[k].nunique(dropna=False) != 1 for k in keys):
                continue
            found = table
            for key in keys:
                found = found[found[key].astype(str) == str(records[key].iloc[0])]
        if len(found) == 1:
            return found.iloc[0].to_dict()
    return {}


def write_parquet(records: pd.DataFrame, path: str | Path) -> Path:
    """The per-image records as a Parquet table; a column mixing kinds (numbers and "inf") is written as text."""
    out = records.copy()
    for col in out.columns:
        if out[col].dtype == object and len({type(v) for v in out[col].dropna()}) > 1:
            out[col] = out[col].map(lambda v: None if v is None or v != v else str(v))
    out.to_parquet(path, index=False)
    return Path(path)


def _manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / MANIFEST_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _number(value: Any) -> float | None:
    """An int/float (not a bool), else None: trackers take numbers, and NaN is an empty cell. ±inf is kept (the
    PSNR of an exact reconstruction); MLflow stores it as ±1.797e308, W&B as Infinity."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "item"):
        return None
    number = value.item() if hasattr(value, "item") else value
    if isinstance(number, bool) or not isinstance(number, (int, float)) or math.isnan(number):
        return None
    return float(number)


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
