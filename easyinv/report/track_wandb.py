"""Log tracked runs to Weights & Biases: one run per job (its id derived from the config hash), the jobs of a sweep in
one group beside a run of the sweep's report; offline by default (no account, no network: ``wandb sync`` uploads later).

W&B has no parent runs, so a sweep is a group; it has no key-value tags, so the tags go into the run's config
under ``easyinv.*``. A re-logged job keeps its id: W&B merges it into the same run when it syncs (offline, it
writes a second directory with the same id).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from easyinv.report.track_content import TrackedJob, TrackedRoot, write_parquet

__all__ = ["QUIET_ENV", "log_wandb", "run_id"]

QUIET_ENV = {"WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true"}  # a user's own setting wins
RECORDS_FILE = "records.parquet"


def run_id(kind: str, key: str) -> str:
    """A W&B run id for a job's config hash or a sweep's name: stable, and free of the characters ids refuse."""
    return f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def log_wandb(roots: list[TrackedRoot], mode: str, directory: str | Path, project: str,
              entity: str | None = None) -> dict[str, str]:
    """Log every job of ``roots`` to W&B (``mode`` offline or online); returns ``{config hash or sweep: run id}``."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    import wandb

    Path(directory).mkdir(parents=True, exist_ok=True)
    ids: dict[str, str] = {}
    for root in roots:
        group = root.key if root.sweep else None
        if root.sweep:
            ids[root.key] = _one(wandb, mode, directory, project, entity, run_id("sweep", root.key), root.key, group,
                                 "sweep", {f"{k}": v for k, v in root.tags.items()}, {}, root, None)
        for job in root.jobs:
            config = {**job.params, **job.tags}  # tags: easyinv.* keys, apart from the config's own keys
            ids[job.key] = _one(wandb, mode, directory, project, entity, run_id("job", job.key), job.name, group,
                                "job", config, job.metrics, None if root.sweep else root, job)
    return ids


def _one(wandb: Any, mode: str, directory: str | Path, project: str, entity: str | None, rid: str, name: str,
         group: str | None, job_type: str, config: dict[str, Any], metrics: dict[str, float],
         report: TrackedRoot | None, job: TrackedJob | None) -> str:
    run = wandb.init(project=project, entity=entity, dir=str(directory), id=rid, name=name, group=group,
                     job_type=job_type, config=config, mode=mode, resume="allow", reinit="finish_previous",
                     settings=wandb.Settings(console="off", x_disable_stats=True, x_disable_meta=True))
    try:
        files = Path(run.dir)  # what lies here at the end is uploaded with the run
        if job is not None:
            write_parquet(job.records, files / RECORDS_FILE)
        if report is not None and report.report_dir is not None and report.artifacts:
            shutil.copytree(report.report_dir, files / "report", dirs_exist_ok=True)
        if metrics:
            run.log(dict(metrics), step=0)
    finally:
        run.finish()
    return rid
