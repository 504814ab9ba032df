"""The report layer: tables and figures as pure functions of runs' records and saved files.

Modules, bottom to top (each imports only those below it):

- ``columns``: the declared metrics (``easyinv.metrics``) as the tables use them, the paper's row order, precision
  names;
- ``styles``: how a cell is spelled in Markdown and LaTeX;
- ``summary``: per-configuration means, CIs, counts, time and NFE (``summarize``, ``mean_ci``);
- ``paired``: per-image differences to a baseline (bootstrap CI, Wilcoxon p, win rate, Holm); ``thumbnails``;
- ``tables``: Table 1/2 beside the paper; ``sweep_tables`` and ``plotting`` (figure plumbing) above it;
- ``figures``, ``sweep_figures``, ``paper_figures``, ``editing_figures``, ``browse`` (per-image data of the page);
  then ``editing_tables``; then ``html`` (``report.html``);
- ``writer`` (``write_report``: every table and figure of a set of runs);
- ``track_content`` (what an experiment tracker is shown of written runs), ``track_mlflow`` and ``track_wandb``
  (one tracker each), ``tracking`` (``track``: a tracker's failure is one warning line);
- ``cli`` (``easyinv-report``, ``--track``).

The names below are re-exported so that ``from easyinv.report import write_report`` (and the other names the
single ``easyinv/report.py`` module used to hold) keep working.
"""

from easyinv.report.cli import main
from easyinv.report.columns import (
    DEFAULT_PAPER_DIR,
    LOWER_IS_BETTER,
    PAPER_ORDER,
    metrics,
    paired_metrics,
    table1_metrics,
)
from easyinv.report.summary import mean_ci, summarize, with_labels
from easyinv.report.tables import compare_tables, load_paper, markdown_table, table1, table2, write_table
from easyinv.report.writer import write_report

__all__ = [
    "DEFAULT_PAPER_DIR",
    "LOWER_IS_BETTER",
    "PAPER_ORDER",
    "compare_tables",
    "load_paper",
    "main",
    "markdown_table",
    "mean_ci",
    "metrics",
    "paired_metrics",
    "summarize",
    "table1",
    "table1_metrics",
    "table2",
    "with_labels",
    "write_report",
    "write_table",
]
