"""Log finished runs to an experiment tracker (``tracking=mlflow|wandb``, ``easyinv-report --track``), after their
report is written. A tracker is a window on the records and the report: one that is down, refuses, or is not
installed costs one warning line naming the command that logs the runs later, and never a record or a report.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from easyinv.report.track_content import collect
from easyinv.report.track_mlflow import log_mlflow
from easyinv.report.track_wandb import log_wandb

__all__ = ["BACKENDS", "TrackingSettings", "track"]

BACKENDS = ("none", "mlflow", "wandb")
WANDB_MODES = ("offline", "online")
DEFAULT_STORE = Path("results") / "tracking"  # `easyinv-report --track` without a config: the app's default place

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackingSettings:
    """Where runs are logged: the ``tracking`` config group's keys (configs/tracking/), or the CLI's flags."""

    backend: str = "none"
    uri: str | None = None  # MLflow: a tracking URI (None: the embedded store in ``store``)
    store: str = str(DEFAULT_STORE / "mlflow")  # MLflow's embedded store: mlflow.db + artifacts/
    experiment: str | None = None  # the MLflow experiment / W&B project (None: the run root's experiment name)
    mode: str = "offline"  # W&B
    dir: str = str(DEFAULT_STORE)  # W&B: offline runs go to DIR/wandb/
    entity: str | None = None  # W&B

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"tracking.backend: expected one of {BACKENDS}, got {self.backend!r}")
        if self.backend == "wandb" and self.mode not in WANDB_MODES:
            raise ValueError(f"tracking.mode: expected one of {WANDB_MODES}, got {self.mode!r}")

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None) -> TrackingSettings:
        """From the composed ``tracking`` node; the W&B ``project`` key names the experiment too."""
        node = dict(node or {})
        experiment = node.pop("experiment", None) or node.pop("project", None)
        node.pop("project", None)
        known = {k: (str(v) if v is not None else None) for k, v in node.items()
                 if k in cls.__dataclass_fields__}
        return cls(**{**known, "experiment": experiment})

    @property
    def enabled(self) -> bool:
        return self.backend != "none"

    def flags(self) -> list[str]:
        """``easyinv-report`` flags that log to the same place."""
        out = ["--track", self.backend]
        if self.backend == "mlflow":
            out += ["--tracking-uri", self.uri] if self.uri else ["--tracking-store", self.store]
        if self.backend == "wandb":
            out += ["--tracking-dir", self.dir, "--wandb-mode", self.mode]
        if self.experiment:
            out += ["--tracking-experiment", self.experiment]
        return out


def track(roots: Iterable[str | Path], report_dir: str | Path | None, settings: TrackingSettings,
          complete_only: bool = False) -> dict[str, str] | None:
    """Log each root's jobs (and its report) to the tracker; returns ``{key: run id}``, or None after one warning line.

    ``complete_only``: leave out jobs with rows still missing (a shard of a sharded job that ends before the others:
    the last shard to finish logs the merged job once).
    """
    roots = [Path(r) for r in roots]
    if not settings.enabled:
        return {}
    try:
        tracked = collect(roots, report_dir)
        if complete_only:
            for root in tracked:
                waiting = [j.name for j in root.jobs if not j.complete]
                if waiting:
                    log.info("tracking: %s not logged yet (rows missing; logged once every shard is in)",
                             ", ".join(waiting))
                root.jobs = [j for j in root.jobs if j.complete]
            tracked = [r for r in tracked if r.jobs]
        if not tracked:
            return {}
        if settings.backend == "mlflow":
            experiment = settings.experiment or _experiment_name(tracked[0])
            ids = log_mlflow(tracked, settings.uri, settings.store, experiment)
            where = settings.uri or f"the embedded store {settings.store}"
        else:
            experiment = settings.experiment or _experiment_name(tracked[0])
            ids = log_wandb(tracked, settings.mode, settings.dir, experiment, settings.entity)
            where = f"W&B ({settings.mode}, {Path(settings.dir) / 'wandb'})"
    except Exception as e:  # noqa: BLE001 - any tracker failure: one line, the records and report stay
        log.debug("tracking failed", exc_info=True)
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        if isinstance(e, ImportError):
            reason += "; pip install 'easyinv-bench[track]'"
        command = shlex.join(["easyinv-report", *map(str, roots), *(["--out", str(report_dir)] if report_dir else []),
                              *settings.flags()])
        log.warning("tracking: not logged to %s (%s); the records and report are kept: `%s` logs them later",
                    settings.backend, reason, command)
        return None
    jobs = sum(len(r.jobs) for r in tracked)
    log.info("tracking: %d job(s) logged to %s, experiment %r", jobs, where, experiment)
    return ids


def _experiment_name(root: Any) -> str:
    """The runs' own experiment name (run.json's config), else the root directory's name."""
    for job in root.jobs:
        name = (job.config or {}).get("experiment_name")
        if name:
            return str(name)
    return root.key
