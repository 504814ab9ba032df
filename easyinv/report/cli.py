"""``easyinv-report RUN_DIR... [--out DIR] [--paper results/paper | none] [--no-figures] [--sweep] [--html]
[--baseline ddim | none] [--bootstrap N] [--alpha A] [--track mlflow | wandb ...]``: tables, figures and the browsable
report.html from finished or interrupted runs, then (``--track``) each job logged to an experiment tracker;
``easyinv-report RUN_DIR... --check``: the completeness of sharded or interrupted runs.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from easyinv.report.columns import DEFAULT_PAPER_DIR
from easyinv.report.paired import DEFAULT, PairedSettings
from easyinv.report.tracking import BACKENDS, WANDB_MODES, TrackingSettings, track
from easyinv.report.writer import write_report
from easyinv.run.completeness import check_runs, format_check

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """``easyinv-report``: tables (and figures) from finished or interrupted runs."""
    parser = argparse.ArgumentParser(
        prog="easyinv-report", description="Tables and figures from the records of finished or interrupted runs.")
    parser.add_argument("run_dirs", nargs="+", type=Path,
                        help="run directories (searched for records*.jsonl, every shard's)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: FIRST_RUN_DIR/report)")
    parser.add_argument("--paper", default=str(DEFAULT_PAPER_DIR), help="published numbers dir, or 'none'")
    parser.add_argument("--no-figures", action="store_true", help="tables only")
    parser.add_argument("--sweep", action="store_true",
                        help="require a sweep: write sweep.md/.csv, best_configs.json, heatmaps and curves, and fail "
                             "if no configuration key varies (default: written whenever one varies)")
    parser.add_argument("--items", nargs="+", default=None, metavar="ID",
                        help="image ids for the qualitative grid (default: the first few with saved PNGs)")
    parser.add_argument("--html", action="store_true",
                        help="also write report.html: sortable tables, every image per method (thumbnails cached in "
                             "the run directories), side-by-side views, figures; opens from disk, no network")
    # the defaults are PairedSettings' (the end-of-run report's too); a flag left out keeps its default
    parser.add_argument("--baseline", default=None,
                        help=f"paired Δ columns against this method (label), or 'none' (default: {DEFAULT.baseline}, "
                             "where it ran); a baseline given here must name a method of the records")
    parser.add_argument("--edit-baseline", default=None,
                        help=f"the editing tables' baseline protocol (default: {DEFAULT.edit_baseline}, where it ran)")
    parser.add_argument("--bootstrap", type=int, default=None,
                        help=f"resamples of the mean difference's BCa bootstrap interval in the CSV (default "
                             f"{DEFAULT.bootstrap})")
    parser.add_argument("--alpha", type=float, default=None,
                        help=f"Holm-adjusted level of the * mark, in (0, 1) (default {DEFAULT.alpha})")
    parser.add_argument("--check", action="store_true",
                        help="only check completeness: per configuration, the counts of ok/skipped/nonfinite/error/"
                             "missing rows across every shard's records file against the item list in run.json; "
                             "exit 1 when a row is missing or duplicated (or the item list is unknown)")
    tracking = parser.add_argument_group("experiment tracking (README 'Experiment tracking')")
    tracking.add_argument("--track", choices=BACKENDS[1:], default=None,
                          help="after the report, log each job (params, tags, Table-1 metrics, records, report files) "
                               "to MLflow or W&B; a job logged before is updated, never duplicated")
    tracking.add_argument("--tracking-uri", default=None,
                          help="MLflow tracking URI, e.g. http://host:5000 (default: the embedded store)")
    tracking.add_argument("--tracking-store", default=TrackingSettings.store,
                          help="MLflow's embedded store: a folder for mlflow.db and artifacts/ (default: %(default)s)")
    tracking.add_argument("--tracking-experiment", default=None,
                          help="MLflow experiment / W&B project (default: the runs' experiment_name)")
    tracking.add_argument("--tracking-dir", default=TrackingSettings.dir,
                          help="W&B writes DIR/wandb/offline-run-* (default: %(default)s)")
    tracking.add_argument("--wandb-mode", choices=WANDB_MODES, default=TrackingSettings.mode,
                          help="W&B offline (default; `wandb sync` later) or online")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.check:
        try:
            results = check_runs(args.run_dirs)
        except FileNotFoundError as e:
            raise SystemExit(f"easyinv-report: {e}") from None
        print(format_check(results, args.run_dirs))
        return 0 if results and all(r.complete for r in results) else 1
    out = args.out or args.run_dirs[0] / "report"
    paper = None if args.paper.lower() == "none" else args.paper
    given = frozenset(k for k in ("baseline", "edit_baseline") if getattr(args, k) is not None)  # must be there
    options = {k: getattr(args, k) for k in ("baseline", "edit_baseline", "bootstrap", "alpha")
               if getattr(args, k) is not None}
    if str(options.get("baseline", "")).lower() == "none":
        options["baseline"] = None
    try:
        paired = replace(PairedSettings.from_options(options), require=given)
        written = write_report(args.run_dirs, out, paper_dir=paper, figures=not args.no_figures,
                               sweep=True if args.sweep else None, items=args.items, paired=paired, html=args.html)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"easyinv-report: {e}") from None
    for name, path in written.items():
        print(f"{name}: {path}")
    if args.track:
        settings = TrackingSettings(backend=args.track, uri=args.tracking_uri, store=args.tracking_store,
                                    experiment=args.tracking_experiment, mode=args.wandb_mode, dir=args.tracking_dir)
        if track(args.run_dirs, out, settings) is None:
            return 1  # the warning line said why; the report above is written
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
