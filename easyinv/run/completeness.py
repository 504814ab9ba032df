"""Is a job finished? Every configuration's expected items against the rows that all its writers recorded.

A job directory holds ``run.json`` (with the item list of the whole selection, every shard's) and one records file
per writer. A row is missing when no writer recorded the item under the configuration; duplicated when two
finished rows exist for it (two writers computed the same item, e.g. runs with different shard counts at once).
``error`` rows count as recorded but not finished: a resume retries them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from easyinv.run.files import MANIFEST_FILE, RECORDS_GLOB
from easyinv.run.records import STATUSES, read_records, records_files

__all__ = ["ConfigCompleteness", "check_runs", "format_check", "incomplete_note"]

SHOW_IDS = 10  # ids listed per problem in the check's output


@dataclass
class ConfigCompleteness:
    """One configuration (config hash) of one job directory."""

    run_dir: Path
    config_hash: str
    label: str
    expected: list[str] | None  # None when no run.json records the item list of this configuration
    counts: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    files: int = 0

    @property
    def complete(self) -> bool:
        return self.expected is not None and not self.missing and not self.duplicated


def _job_dirs(run_dirs: Iterable[str | Path]) -> list[Path]:
    found: list[Path] = []
    for root in map(Path, run_dirs):
        if not root.exists():
            raise FileNotFoundError(f"no records file or run directory at {root}")
        if root.is_file():
            root = root.parent
        markers = [*root.rglob(RECORDS_GLOB), *root.rglob(MANIFEST_FILE)]
        found.extend(p.parent for p in markers if ".submitit" not in p.parts)
    return sorted(dict.fromkeys(found))


def _manifest(run_dir: Path) -> dict:
    path = run_dir / MANIFEST_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def check_runs(run_dirs: str | Path | Iterable[str | Path]) -> list[ConfigCompleteness]:
    """Completeness of every configuration in every job directory under ``run_dirs``."""
    roots = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    results = []
    for run_dir in _job_dirs(roots):
        manifest = _manifest(run_dir)
        files = records_files(run_dir, recursive=False)
        df = read_records(files, dedupe=False) if files else None
        hashes = [] if df is None else [str(h) for h in df["config_hash"].dropna().unique()]
        if manifest.get("config_hash") and str(manifest["config_hash"]) not in hashes:
            hashes.append(str(manifest["config_hash"]))  # started, nothing recorded yet: all of it is missing
        for digest in hashes:
            own = manifest.get("config_hash") == digest
            expected = [str(i) for i in manifest["items"]] if own and "items" in manifest else None
            rows = df[df["config_hash"].astype(str) == digest] if df is not None else None
            label = str(manifest.get("method_label") or "") if own else ""
            if rows is not None and len(rows) and not label:
                label = str(rows["method_label"].dropna().iloc[0]) if rows["method_label"].notna().any() else ""
            results.append(_one(run_dir, digest, label, expected, rows, len(files)))
    return results


def _one(run_dir: Path, digest: str, label: str, expected: list[str] | None, rows, n_files: int) -> ConfigCompleteness:
    status: dict[str, str] = {}
    finished: dict[str, int] = {}
    if rows is not None:
        for item, state in zip(rows["item_id"].astype(str), rows["status"].astype(str), strict=True):
            if state != "error":
                finished[item] = finished.get(item, 0) + 1
                status[item] = state
            else:
                status.setdefault(item, state)
    wanted = expected if expected is not None else list(status)
    counts = dict.fromkeys(STATUSES, 0)
    for item in wanted:
        if item in status:
            counts[status[item]] = counts.get(status[item], 0) + 1
    missing = [item for item in wanted if item not in status]
    duplicated = sorted(item for item, n in finished.items() if n > 1)
    return ConfigCompleteness(run_dir, digest, label, expected, counts, missing, duplicated, n_files)


def _name(result: ConfigCompleteness, roots: Sequence[Path]) -> str:
    for root in roots:
        root = root.parent if root.is_file() else root
        if result.run_dir == root or root in result.run_dir.parents:
            rel = result.run_dir.relative_to(root).as_posix()
            return rel if rel != "." else result.run_dir.name
    return str(result.run_dir)


def format_check(results: Sequence[ConfigCompleteness], run_dirs: Iterable[str | Path] = ()) -> str:
    """The ``--check`` report: one line of counts per configuration, then the first missing/duplicated ids."""
    roots = [Path(r) for r in run_dirs]
    if not results:
        return "no job directories (records*.jsonl or run.json) found"
    lines = []
    for r in results:
        n = "?" if r.expected is None else str(len(r.expected))
        counts = ", ".join(f"{s} {r.counts.get(s, 0)}" for s in STATUSES)
        verdict = ("complete" if r.complete else
                   "UNKNOWN: no item list in run.json for this configuration" if r.expected is None else "INCOMPLETE")
        name = _name(r, roots)
        label = f" ({r.label})" if r.label and r.label not in name else ""
        lines.append(f"{name}{label} [config {r.config_hash}, {r.files} records file(s)]: {n} items: "
                     f"{counts}, missing {len(r.missing)}, duplicated {len(r.duplicated)} -> {verdict}")
        for kind, ids in (("missing", r.missing), ("duplicated", r.duplicated)):
            if ids:
                more = f" … ({len(ids) - SHOW_IDS} more)" if len(ids) > SHOW_IDS else ""
                lines.append(f"    {kind}: {', '.join(ids[:SHOW_IDS])}{more}")
    done = sum(r.complete for r in results)
    lines.append(f"{done} of {len(results)} configuration(s) complete")
    return "\n".join(lines)


def incomplete_note(results: Sequence[ConfigCompleteness], run_dirs: Iterable[str | Path] = ()) -> str | None:
    """One sentence for the top of a table when rows are missing or duplicated; None when every list is met."""
    roots = [Path(r) for r in run_dirs]
    bad = [r for r in results if r.expected is not None and (r.missing or r.duplicated)]
    if not bad:
        return None
    parts = []
    for r in bad:
        what = []
        if r.missing:
            what.append(f"{len(r.missing)} of {len(r.expected or [])} items missing")
        if r.duplicated:
            what.append(f"{len(r.duplicated)} duplicated")
        parts.append(f"{r.label or _name(r, roots)}: {', '.join(what)}")
    return ("Incomplete run: " + "; ".join(parts) + ". The rows below cover the recorded images only; "
            "`easyinv-report RUN_DIR --check` lists the missing ids, and re-running the same command fills them in.")
