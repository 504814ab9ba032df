"""Log tracked runs to MLflow: one run per job (found again by its config hash), the children of one parent run per
sweep (found again by the sweep's name), through ``MlflowClient`` alone (no active-run state, so a Hydra multirun
that shares one process never resumes the wrong run).

Idempotent: a job logged again reuses its run, logs only the params it lacks (equal hashes, equal params: MLflow
refuses a changed param), only the metrics whose value changed, and overwrites its artifacts. The embedded store is
a SQLite file beside an artifact folder, so no server is needed; an ``http(s)://`` URI is a team's server, probed
first so a dead one fails in seconds.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from easyinv.report.track_content import TrackedJob, TrackedRoot, write_parquet

__all__ = ["QUIET_ENV", "embedded_uri", "log_mlflow"]

# before mlflow is imported: no telemetry or URL banners offline, and a server that does not answer fails at once
# (its defaults retry 7 times with backoff and wait 120 s per request); a user's own setting wins
QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
PROBE_TIMEOUT_S = 5.0
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "artifacts"
KIND_TAG = "easyinv.kind"  # "job" or "sweep": a job's run and a sweep's parent are never found for each other
KEY_TAG = "easyinv.config_hash"  # finds a job's run
SWEEP_TAG = "easyinv.sweep"  # finds a sweep's parent run (its children carry it too)
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own: the UI nests a run under its parent
RECORDS_ARTIFACT = "records.parquet"
_BATCH = 100  # params per log_batch call (MLflow's limit)

log = logging.getLogger(__name__)


def embedded_uri(store: str | Path) -> str:
    """``sqlite:////abs/store/mlflow.db``: absolute, since a relative SQLite URI follows the process's CWD."""
    return f"sqlite:///{(Path(store).resolve() / DB_FILE).as_posix()}"


def log_mlflow(roots: list[TrackedRoot], uri: str | None, store: str | Path, experiment: str) -> dict[str, str]:
    """Log every job of ``roots`` to the MLflow store at ``uri`` (None: the embedded store in ``store``).

    Returns ``{config hash or sweep name: run id}``. Raises on any failure; the caller turns that into one line.
    """
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent"):
        logging.getLogger(name).setLevel(logging.WARNING)  # the embedded store's schema migration is chatty
    embedded = uri is None
    if embedded:
        Path(store).mkdir(parents=True, exist_ok=True)
        uri = embedded_uri(store)
    elif uri.startswith(("http://", "https://")):
        _probe(uri)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp_id = _experiment(client, experiment, Path(store) / ARTIFACTS_DIR if embedded else None)
    ids: dict[str, str] = {}
    for root in roots:
        parent = None
        if root.sweep:
            parent = _run(client, exp_id, "sweep", SWEEP_TAG, root.key, root.key, None, {})
            _log(client, parent, {}, root.tags, {})
            _log_report(client, parent, root)
            ids[root.key] = parent
        for job in root.jobs:
            run_id = _run(client, exp_id, "job", KEY_TAG, job.key, job.name, parent,
                          {SWEEP_TAG: root.key} if parent else {})
            _log(client, run_id, job.params, job.tags, job.metrics)
            _log_job_files(client, run_id, job)
            if not root.sweep:  # one job alone: its run holds the report too
                _log_report(client, run_id, root)
            client.set_terminated(run_id, "FINISHED")
            ids[job.key] = run_id
        if parent is not None:
            client.set_terminated(parent, "FINISHED")
    return ids


def _probe(uri: str) -> None:
    """One GET of the server's ``/health``: a server that is down or refuses raises here, in seconds."""
    with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=PROBE_TIMEOUT_S) as answer:
        if answer.status != 200:
            raise ConnectionError(f"{uri}/health answered {answer.status}")


def _experiment(client: Any, name: str, artifacts: Path | None) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if artifacts is not None:  # fixed at creation: beside the SQLite file, not in the CWD's ./mlruns
        artifacts.mkdir(parents=True, exist_ok=True)
        location = artifacts.resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def _run(client: Any, exp_id: str, kind: str, tag: str, key: str, name: str, parent: str | None,
         extra_tags: Mapping[str, str]) -> str:
    """The ``kind`` run tagged ``tag = key`` in the experiment, created when there is none; under ``parent`` if one."""
    # keys are config hashes and safe_name'd directory names: nothing in them needs quoting
    found = client.search_runs([exp_id], filter_string=f"tags.`{KIND_TAG}` = '{kind}' and tags.`{tag}` = '{key}'",
                               max_results=2)
    tags = {KIND_TAG: kind, tag: key, **extra_tags}
    if parent is not None:
        tags[PARENT_TAG] = parent
    if found:
        run_id = found[0].info.run_id
        if len(found) > 1:
            log.warning("MLflow: more than one run tagged %s=%s; updating %s", tag, key, run_id)
        for k, v in tags.items():  # a job logged alone first, then in a sweep, moves under the sweep's parent
            if found[0].data.tags.get(k) != v:
                client.set_tag(run_id, k, v)
        return run_id
    return client.create_run(exp_id, tags=tags, run_name=name).info.run_id


def _log(client: Any, run_id: str, params: Mapping[str, str], tags: Mapping[str, str],
         metrics: Mapping[str, float]) -> None:
    """Params it lacks, every tag, and the metrics whose value changed (a resumed run's history does not repeat)."""
    from mlflow.entities import Metric, Param, RunTag

    data = client.get_run(run_id).data
    new_params = [Param(k, v) for k, v in params.items() if k not in data.params]
    run_tags = [RunTag(k, v) for k, v in tags.items() if data.tags.get(k) != v]
    now = int(time.time() * 1000)
    changed = [Metric(k, v, now, 0) for k, v in metrics.items() if data.metrics.get(k) != _as_stored(v)]
    for start in range(0, max(len(new_params), len(run_tags), len(changed)), _BATCH):
        client.log_batch(run_id, metrics=changed[start:start + _BATCH], params=new_params[start:start + _BATCH],
                         tags=run_tags[start:start + _BATCH])


def _log_job_files(client: Any, run_id: str, job: TrackedJob) -> None:
    """The job's per-image records as a Parquet table and its config; written anew, so a resumed run has one copy."""
    with tempfile.TemporaryDirectory(prefix="easyinv-track-") as tmp:
        path = Path(tmp) / RECORDS_ARTIFACT
        write_parquet(job.records, path)
        client.log_artifact(run_id, str(path))
    if job.config:
        client.log_dict(run_id, job.config, "config.json")


def _log_report(client: Any, run_id: str, root: TrackedRoot) -> None:
    if root.report_dir is not None and root.artifacts:
        client.log_artifacts(run_id, str(root.report_dir), "report")


def _as_stored(value: float) -> float:
    """What MLflow's store gives back for a metric: ±inf becomes ±the largest float (an exact PSNR stays unchanged)."""
    return max(min(value, sys.float_info.max), -sys.float_info.max)
