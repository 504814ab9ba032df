"""Hydra callbacks: write the tables and figures once a run or a whole sweep has finished."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class ReportCallback(Callback):
    """Aggregate every job's records under the run/sweep directory into ``report_dir`` (if one is set)."""

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._report(Path(config.hydra.run.dir), config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._report(Path(config.hydra.sweep.dir), config)

    def _report(self, root: Path, config: DictConfig) -> None:
        if not config.get("report_dir") or not root.exists():
            return
        from easyinv.report import write_report

        out = Path(config.report_dir)
        files = write_report([root], out)
        log.info("report written to %s", out)
        for key in ("table1_md", "table2_md", "sweep_md"):
            if key in files:
                print(Path(files[key]).read_text())
