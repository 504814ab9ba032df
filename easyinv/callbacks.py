"""Hydra callbacks: write the tables and figures once a run or a whole sweep has finished.

Under ``accelerate launch`` every process runs the same jobs on its own shard; each waits here for the others, and
the main process alone writes the report. Under the submitit launcher the callback runs in the submitting process
after the whole array has finished.
"""

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
        from easyinv.shards import launch_state

        state = launch_state()
        if state is not None:
            state.wait_for_everyone()  # every shard's records are on disk before anything is aggregated
            if not state.is_main_process:
                return
        if not config.get("report_dir") or not root.exists():
            return
        from easyinv.report import write_report

        out = Path(config.report_dir)
        files = write_report([root], out)
        log.info("report written to %s", out)
        for key in ("table1_md", "table2_md", "sweep_md", "editing_md"):
            if key in files:
                print(Path(files[key]).read_text())
