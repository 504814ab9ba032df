"""Hydra callbacks: write the tables and figures once a run or a whole sweep has finished.

Under ``accelerate launch`` every process runs the same jobs on its own shard; each waits here for the others, and
the main process alone writes the report. Under the submitit launcher the callback runs in the submitting process
after the whole array has finished.

With ``tracking=mlflow|wandb`` each job is then logged to the tracker (``easyinv.report.tracking``), once, by the
process that wrote the report, after every shard's records are in; a tracker that fails costs one warning line.

A report that fails is loud: one line on stderr naming the exception and the ``easyinv-report`` command that writes
it again, and a non-zero exit (Hydra would only warn about an exception and exit 0), with every record kept. A
single run whose job itself failed exits with the job's error instead.
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
        from hydra.core.utils import JobStatus

        job = kwargs.get("job_return")
        self._report(Path(config.hydra.run.dir), config, job_failed=getattr(job, "status", None) == JobStatus.FAILED)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._report(Path(config.hydra.sweep.dir), config)

    def _report(self, root: Path, config: DictConfig, job_failed: bool = False) -> None:
        from easyinv.run.shards import launch_state

        state = launch_state()
        if state is not None:
            state.wait_for_everyone()  # every shard's records are on disk before anything is aggregated
            if not state.is_main_process:
                return
        from easyinv.report.tracking import TrackingSettings

        try:
            tracking = TrackingSettings.from_config(_container(config.get("tracking")))
        except ValueError as e:
            raise SystemExit(f"easyinv-bench: {e}") from None
        if not root.exists() or not (config.get("report_dir") or tracking.enabled):
            return
        from easyinv.report.paired import PairedSettings

        # a tracker shows the report's numbers: with tracking on and no report_dir, the report goes beside the runs
        out = Path(config.report_dir) if config.get("report_dir") else root / "report"
        options = config.get("report") or {}
        try:  # a bad report.bootstrap / report.alpha is one line, as the CLI's flags are; absent keys: the defaults
            paired = PairedSettings.from_options(options, ignore=("html",))
        except ValueError as e:
            raise SystemExit(f"easyinv-bench: {e}") from None
        try:
            self._write(root, out, config, paired, html=bool(options.get("html", False)))
        except Exception as e:  # noqa: BLE001 - any failure: one line and a non-zero exit, the records stay
            log.debug("the report failed", exc_info=True)
            reason = " ".join(f"{type(e).__name__}: {e}".split())
            if job_failed:  # the job's own error is what the command exits with
                log.warning("the report of the failed run in %s failed too (%s)", root, reason)
                return
            raise SystemExit(f"easyinv-bench: the report in {out} failed ({reason}); the records under {root} are "
                             f"kept: `easyinv-report {root} --out {out}` writes it again") from None
        if tracking.enabled:
            from easyinv.report.tracking import track

            track([root], out, tracking, complete_only=True)  # a failure is one warning line inside

    def _write(self, root: Path, out: Path, config: DictConfig, paired: Any, html: bool) -> None:
        from easyinv.report import write_report

        files = write_report([root], out, paired=paired, html=html)
        log.info("report written to %s", out)
        for key in ("table1_md", "table2_md", "sweep_md", "editing_md"):
            if key in files:
                print(Path(files[key]).read_text())
        if "html" in files:
            print(f"browsable report: {files['html']}")
        if config.get("figures_dir"):
            from easyinv.report.paper_figures import write_paper_figures

            made = write_paper_figures([root], config.figures_dir)
            print(f"paper figures: {', '.join(sorted(k for k in made if k != 'figures_md'))} and "
                  f"{made['figures_md']}")
        reference = Path(config.reference_dir) / "table1.csv" if config.get("reference_dir") else None
        if reference is not None and "table1_csv" in files:
            print(_compared(Path(files["table1_csv"]), reference))


def _compared(new: Path, reference: Path) -> str:
    """One line (plus the differences) saying whether this run's quality and NFE columns match the committed table."""
    from easyinv.report import compare_tables

    if not reference.is_file():
        return f"no reference table at {reference} to compare with"
    diffs = compare_tables(new, reference)
    if not diffs:
        return f"quality and NFE columns MATCH the committed table {reference} (timings are not compared)"
    return "\n".join([f"quality or NFE columns DIFFER from the committed table {reference}:", *diffs])


def _container(node: Any) -> dict[str, Any] | None:
    """A config node as a plain dict, interpolations resolved (``experiment: ${experiment_name}``)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if node is not None else None  # type: ignore[return-value]
