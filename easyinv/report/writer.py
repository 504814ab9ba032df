"""The top of the report layer: every table and figure of a set of runs, written from their records in one call.

Reconstruction rows get Table 1 (+ Table 2 where a configuration ran in several precisions, + the sweep table where
a configuration key varies) and the figures; editing rows get the editing tables and strip. Everything written is a
pure function of the runs' files, so an interrupted run re-reports without recomputing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from easyinv.report.columns import DEFAULT_PAPER_DIR
from easyinv.report.editing_tables import is_editing, write_editing_report
from easyinv.report.figures import write_figures
from easyinv.report.html import write_html_report
from easyinv.report.paired import DEFAULT, PairedSettings
from easyinv.report.sweep_figures import write_sweep_figures
from easyinv.report.sweep_tables import sweep_table, swept_keys, write_sweep
from easyinv.report.tables import load_paper, table1, table2, write_table
from easyinv.run.completeness import check_runs, incomplete_note
from easyinv.run.records import read_records

__all__ = ["write_report"]

log = logging.getLogger(__name__)


def write_report(
    run_dirs: str | Path | Iterable[str | Path],
    out_dir: str | Path,
    paper_dir: str | Path | None = DEFAULT_PAPER_DIR,
    figures: bool = True,
    sweep: bool | None = None,
    items: Sequence[str] | None = None,
    paired: PairedSettings | None = DEFAULT,
    html: bool = False,
) -> dict[str, Path]:
    """Read every run's records and write Table 1 (+ Table 2 with ≥2 precisions, + the sweep) and the figures into
    ``out_dir``. Returns ``{"table1_md": path, ..., "fig_<stem>": path}``.

    ``sweep``: None writes the sweep table, heatmaps and curves when a configuration key varies; True demands them
    (ValueError when nothing varies); False leaves them out. ``paired``: the paired comparisons with a baseline
    (None or a ``baseline`` of None: none). ``html``: also ``report.html``, the browsable report of every table,
    image and figure (thumbnails cached in the run directories).
    """
    run_dirs = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    df = read_records(run_dirs)
    if df.empty:
        raise ValueError(f"no records under {[str(d) for d in run_dirs]}")
    written: dict[str, Path] = {}
    all_df = df
    if "protocol" in df.columns:  # editing jobs' rows get the editing table (easyinv.report.editing_tables)
        editing = is_editing(df)
        if editing.any():
            written.update(write_editing_report(df[editing], out_dir, paper_dir=paper_dir, figures=figures,
                                                run_dirs=run_dirs, paired=paired))
        df = df[~editing].drop(columns="protocol")
        if df.empty:
            if html:
                written["html"] = write_html_report(out_dir, run_dirs, written, editing=all_df[editing])
            return written
    keys = swept_keys(df) if sweep is not False else []
    if sweep and not keys:  # checked before anything is written
        raise ValueError(f"no configuration key varies in the records under {[str(d) for d in run_dirs]}: each "
                         "dataset/model/method/precision was run with one configuration, so there is no sweep")
    paper = load_paper(paper_dir)
    incomplete = incomplete_note(check_runs(run_dirs), run_dirs)
    if incomplete:
        log.warning("%s", incomplete)
    t1 = table1(df, paper, paired=paired)
    t1.attrs["incomplete"] = incomplete
    for kind, path in write_table(t1, out_dir, "table1").items():
        written[f"table1_{kind}"] = path
    t2 = table2(df, paper, paired=paired)
    if t2 is not None:
        t2.attrs["incomplete"] = incomplete
    if t2 is None:
        log.info("Table 2 skipped: no configuration was measured in more than one precision")
    else:
        written.update({f"table2_{kind}": path for kind, path in write_table(t2, out_dir, "table2").items()})
    table = sweep_table(df, keys, paired=paired) if keys else None
    if table is not None:
        written.update(write_sweep(table, out_dir))
    if figures:
        made = write_figures(df, run_dirs, Path(out_dir) / "figures", items=items)
        if table is not None:
            made += write_sweep_figures(table, Path(out_dir) / "figures")
        for path in made:
            written[f"fig_{path.stem}"] = path
    if html:
        editing_rows = all_df[is_editing(all_df)] if "protocol" in all_df.columns else None
        frames = {key: frame for key, frame in (("table1_md", t1), ("table2_md", t2), ("sweep_md", table))
                  if frame is not None}  # the unrounded numbers the page sorts by and shows the p-values of
        written["html"] = write_html_report(out_dir, run_dirs, written, reconstruction=df, editing=editing_rows,
                                            frames=frames)
    return written
