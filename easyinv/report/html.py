"""``report.html``: one self-contained page beside the tables, opened from disk with no network.

It shows the tables written next to it (sortable by any column, on the tables' unrounded numbers; the paired
comparisons' p-values, Holm-adjusted p-values and win rates as each Δ cell's tooltip and in a table under it), a
per-image view (every image a row: reference, each method's reconstruction and edit as thumbnails linked to the full
PNGs, per-image metrics, status and failure reason; filtered by method, status and dataset part; sorted by a metric
or by the difference of two methods; paged), a side-by-side view of two methods on one image with their error maps,
and the figures. The page is rendered with Jinja2 from ``templates/``; its script and style are inlined from the same
package folder (no CDN), and the per-image data (``easyinv.report.browse``) is embedded as JSON.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import pandas as pd
from markupsafe import Markup

from easyinv.report.browse import EDIT_KINDS, RECON_KINDS, per_image_data
from easyinv.report.columns import EDIT_METRICS, TIME, Metric, metrics
from easyinv.report.styles import MARKDOWN, numbers

__all__ = ["TEMPLATES", "markdown_tables", "pair_details", "render_html", "sort_values", "write_html_report"]

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).with_name("templates")
# the tables written beside the page, in the order shown: (key of write_report's result, title)
TABLES = (("table1_md", "Table 1"), ("table2_md", "Table 2"), ("sweep_md", "Sweep"), ("editing_md", "Editing"),
          ("editing_by_type_md", "Editing per edit type"))


def _declared() -> tuple[Metric, ...]:
    """Every declared column the tables print: the reconstruction metrics (read now: one declared later counts),
    time, the editing metrics."""
    return (*metrics(), TIME, *EDIT_METRICS)


# a metric's header (its mean column), its short name (Paper X, Δ X, Δ X vs B columns) and the name shown beside
# its paired statistics, from the declarations (easyinv.metrics)
def _mean_headers() -> dict[str, str]:
    return {**{m.heading: m.name for m in _declared()}, "Recon PSNR ↑": "psnr"}


def _short_names() -> dict[str, str]:
    return {**{m.label: m.name for m in _declared()}, "time (s)": "time_s"}


def _metric_name(metric: str) -> str:
    """The name beside a metric's paired statistics: a reconstruction metric's label, an editing metric's header."""
    edit = {m.name: m.heading for m in EDIT_METRICS}
    return edit.get(metric) or {m.name: m.label for m in metrics()}.get(metric, metric)


def _pair_decimals(metric: str) -> int:
    return {m.name: m.decimals for m in _declared()}.get(metric, 3)

FAILURE_COUNTS = ("n_nonfinite", "n_degenerate", "n_error", "n_skipped", "n_retried")  # the Failures cell's kinds


def markdown_tables(text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The grids of a Markdown file (``columns``, ``rows``) and its other non-empty lines (caption and notes)."""
    grids: list[dict[str, Any]] = []
    other: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|:"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append([c.strip() for c in lines[i].strip().strip("|").split(" | ")])
                i += 1
            grids.append({"columns": block[0], "rows": block[2:]})
            continue
        line = lines[i].strip().lstrip("#- ").strip()
        if line:
            other.append(line.replace("**", ""))
        i += 1
    return grids, other


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _raw(text: str) -> str:
    """A number as a ``data-sort`` attribute: the shortest text that reads back to the same float; NaN → ``""``."""
    x = _float(text)
    if math.isnan(x):
        return ""
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return repr(x)


def _get(row: Mapping[str, Any], column: str) -> float:
    return _float(row.get(column))


def _pair_n(row: Mapping[str, Any]) -> float:
    """The most pairs of any metric (the Pairs column)."""
    metrics = [m[1] for k in row if (m := re.fullmatch(r"pair_(.+)_delta", str(k)))]
    counts = [c for c in (_get(row, f"pair_{m}_n") for m in metrics) if not math.isnan(c)]
    return max(counts) if counts and not pd.isna(row.get("pair_baseline")) else math.nan


def _sorter(header: str, frame: pd.DataFrame) -> Callable[[Mapping[str, Any]], float] | None:
    """How a printed column's unrounded value is read from its table's row (None: sorted by its text)."""
    columns = list(frame.columns)
    if header in columns:  # a swept key printed as it is: a number sorts by its value, text as text
        numeric = pd.api.types.is_numeric_dtype(frame[header]) and not pd.api.types.is_bool_dtype(frame[header])
        return (lambda row: _get(row, header)) if numeric else None
    if header == "n":
        return lambda row: _get(row, "n_ok")
    mean_headers, short_names = _mean_headers(), _short_names()
    if header in mean_headers:
        return lambda row: _get(row, f"{mean_headers[header]}_mean")
    fixed = {"NFE": "nfe_mean", "ms/NFE": "ms_per_nfe", "Edit type": "edit_type"}
    if header in fixed:
        return lambda row: _get(row, fixed[header])
    if header == "non-UNet %":
        return lambda row: 100 * _get(row, "non_unet_share")
    if header == "Failures":  # all failures, not the first count printed
        return lambda row: sum(_get(row, c) for c in FAILURE_COUNTS if c in columns)
    if header.startswith("Pairs vs "):
        return _pair_n
    match = re.fullmatch(r"Δ (.+?) vs .+", header)
    if match and match[1] in short_names:
        return lambda row: _get(row, f"pair_{short_names[match[1]]}_delta")
    match = re.fullmatch(r"Paper (.+)", header)
    if match and match[1] in short_names:
        return lambda row: _get(row, f"paper_{short_names[match[1]]}")
    match = re.fullmatch(r"Δ (.+)", header)
    if match and match[1] in short_names:
        metric = short_names[match[1]]
        if f"diff_{metric}" in columns:
            return lambda row: _get(row, f"diff_{metric}")
        # the editing tables print ours − paper where the metric is comparable (no diff column)
        return lambda row: (_get(row, f"{metric}_mean") - _get(row, f"paper_{metric}")
                            if row.get(f"{metric}_comparable") in (True, 1, "True") else math.nan)
    return None


def sort_values(columns: Sequence[str], frame: pd.DataFrame) -> list[list[str | None]]:
    """Per printed row and column, the unrounded number it sorts by (``data-sort``: ``""`` for a missing value),
    read from the table's frame (the same rows in the same order); None where the column sorts by its text."""
    sorters = [_sorter(header, frame) for header in columns]
    return [[None if sort is None else _raw(sort(row)) for sort in sorters]
            for row in frame.to_dict(orient="records")]


def _interval(get: Mapping[str, float], decimals: int) -> list[str]:
    """Δ, CI low and CI high as the tables print them (``styles.numbers``: small values in significant digits)."""
    return numbers([get["delta"], get["lo"], get["hi"]], decimals, MARKDOWN, signed=True)


def _p(x: float) -> str:
    return "—" if math.isnan(x) else f"{x:.3g}"


def _win(x: float) -> str:
    return "—" if math.isnan(x) else f"{100 * x:.1f} %"


def _count(x: float) -> str:
    return "—" if math.isnan(x) else str(int(x))


def _pair_metrics(frame: pd.DataFrame) -> list[str]:
    found = [m[1] for c in frame.columns if (m := re.fullmatch(r"pair_(.+)_delta", str(c)))]
    return [m for m in found if frame[f"pair_{m}_delta"].notna().any() or frame[f"pair_{m}_n"].notna().any()]


def pair_title(row: Mapping[str, Any], metric: str, baseline: str) -> str:
    """A Δ cell's tooltip: the paired statistics of ``pair_<metric>_<stat>`` (as computed for the tables)."""
    get = {s: _get(row, f"pair_{metric}_{s}") for s in ("delta", "lo", "hi", "p", "p_holm", "win", "n", "left_out")}
    d = _pair_decimals(metric)
    significant = _get(row, f"pair_{metric}_significant") == 1
    delta, lo, hi = _interval(get, d)
    return (f"row − {baseline}, per image: Δ {delta}, CI [{lo}, {hi}]; Wilcoxon p {_p(get['p'])}, "
            f"Holm p {_p(get['p_holm'])}"
            f"{' (significant)' if significant else ''}; win rate {_win(get['win'])}; {_count(get['n'])} pairs, "
            f"{_count(get['left_out'])} left out")


def pair_details(identity: Sequence[str], rows: Sequence[Sequence[str]], frame: pd.DataFrame) -> dict[str, Any] | None:
    """The paired statistics of a table as a long table (row × metric: Δ, CI, p, Holm p, win rate, pairs, left out,
    significance), from its frame's ``pair_<metric>_<stat>`` columns; None where the table compares nothing.
    ``identity``: the printed identity columns (before ``n``); ``rows``: the printed rows."""
    if "pair_baseline" not in frame.columns or not frame["pair_baseline"].notna().any():
        return None
    baseline = str(frame["pair_baseline"].dropna().iloc[0])
    columns = [*identity, "Metric", f"Δ (row − {baseline})", "CI low", "CI high", "p (Wilcoxon)", "p (Holm)",
               "Win rate", "Pairs", "Left out", "Significant"]
    out = []
    metrics = _pair_metrics(frame)
    for printed, row in zip(rows, frame.to_dict(orient="records"), strict=True):
        if pd.isna(row.get("pair_baseline")):
            continue
        for metric in metrics:
            get = {s: _get(row, f"pair_{metric}_{s}") for s in ("delta", "lo", "hi", "p", "p_holm", "win", "n",
                                                                 "left_out", "significant")}
            d = _pair_decimals(metric)
            cells = [{"text": text, "sort": None} for text in printed[:len(identity)]]
            cells.append({"text": _metric_name(metric), "sort": None})
            cells += [{"text": text, "sort": _raw(get[s])}
                      for s, text in zip(("delta", "lo", "hi"), _interval(get, d), strict=True)]
            cells += [{"text": _p(get[s]), "sort": _raw(get[s])} for s in ("p", "p_holm")]
            cells.append({"text": _win(get["win"]), "sort": _raw(get["win"])})
            cells += [{"text": _count(get[s]), "sort": _raw(get[s])} for s in ("n", "left_out")]
            sig = get["significant"]
            cells.append({"text": "—" if math.isnan(sig) else "yes *" if sig == 1 else "no", "sort": _raw(sig)})
            out.append(cells)
    return {"baseline": baseline, "columns": columns, "rows": out}


def _grid_cells(grid: Mapping[str, Any], frame: pd.DataFrame | None) -> list[list[dict[str, Any]]]:
    """The printed cells with their ``data-sort`` value and, for a paired Δ cell, its statistics as ``title``."""
    columns, rows = grid["columns"], grid["rows"]
    if frame is None or len(frame) != len(rows):
        return [[{"text": text, "sort": None, "title": None} for text in row] for row in rows]
    sorts = sort_values(columns, frame)
    baseline = None if "pair_baseline" not in frame else frame["pair_baseline"].dropna()
    titles: list[str | None] = [None] * len(columns)
    if baseline is not None and len(baseline):
        short_names = _short_names()
        for j, header in enumerate(columns):
            match = re.fullmatch(r"Δ (.+?) vs .+", header)
            if match and match[1] in short_names:
                titles[j] = short_names[match[1]]
    records = frame.to_dict(orient="records")
    out = []
    for row, sort, record in zip(rows, sorts, records, strict=True):
        cells = []
        for j, text in enumerate(row):
            metric = titles[j]
            title = (pair_title(record, metric, str(record["pair_baseline"]))
                     if metric is not None and not pd.isna(record.get("pair_baseline")) else None)
            cells.append({"text": text, "sort": sort[j], "title": title})
        out.append(cells)
    return out


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True,
                              lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)


def render_html(context: Mapping[str, Any]) -> str:
    """The page from ``templates/report.html.j2`` with the script and style of the same folder inlined."""
    env = _environment()
    script = (TEMPLATES / "report.js").read_text(encoding="utf-8")
    style = (TEMPLATES / "report.css").read_text(encoding="utf-8")
    if "</script" in script.lower() or "</style" in style.lower():
        raise ValueError("the report's inlined script or style would end its own element")
    return env.get_template("report.html.j2").render(**context, script=Markup(script), style=Markup(style))


def _link(path: Path, out_dir: Path) -> str:
    return quote(Path(os.path.relpath(path, out_dir)).as_posix(), safe="/")


def _frame(key: str, md: Path, frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame | None:
    """The numbers behind a table: the frame write_report passed, else the CSV written beside its Markdown."""
    if key in frames:
        return frames[key].reset_index(drop=True)
    csv = md.with_suffix(".csv")
    return pd.read_csv(csv) if csv.is_file() else None


def _baseline(frame: pd.DataFrame | None) -> str | None:
    if frame is None or "pair_baseline" not in frame.columns or not frame["pair_baseline"].notna().any():
        return None
    return str(frame["pair_baseline"].dropna().iloc[0])


def write_html_report(
    out_dir: str | Path,
    run_dirs: Sequence[str | Path],
    written: Mapping[str, Path],
    reconstruction: pd.DataFrame | None = None,
    editing: pd.DataFrame | None = None,
    thumbs: bool = True,
    page_size: int = 25,
    frames: Mapping[str, pd.DataFrame] | None = None,
) -> Path:
    """Write ``out_dir/report.html`` from the tables and figures already written (``written``, write_report's
    result) and the per-image records of the reconstruction and editing rows.

    ``frames``: the tables' frames by ``written``'s key of their Markdown (``table1_md``, ...), the rows in the
    printed order; a table without one sorts by the numbers of the CSV written beside it (6 decimals).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = dict(frames or {})
    tables = []
    baselines: dict[str, str | None] = {}
    for key, title in TABLES:
        if key not in written:
            continue
        md = Path(written[key])
        grids, notes = markdown_tables(md.read_text(encoding="utf-8"))
        frame = _frame(key, md, frames)
        baselines.setdefault("edit" if key.startswith("editing") else "recon", _baseline(frame))
        frame = frame if len(grids) == 1 else None
        files = [_link(p, out) for p in sorted(md.parent.glob(f"{md.stem}.*")) if p.suffix in (".md", ".csv", ".tex")]
        for k, grid in enumerate(grids):
            identity = grid["columns"][:grid["columns"].index("n")] if "n" in grid["columns"] else grid["columns"][:1]
            pairs = None if frame is None or len(frame) != len(grid["rows"]) else pair_details(
                identity, grid["rows"], frame)
            tables.append({"id": f"{md.stem}-{k}", "title": title, "notes": notes if k == len(grids) - 1 else [],
                           "files": files, "columns": grid["columns"], "rows": _grid_cells(grid, frame),
                           "pairs": pairs})
    figures = [{"name": key.removeprefix("fig_"), "src": _link(Path(p), out)} for key, p in written.items()
               if key.startswith("fig_") and Path(p).suffix.lower() in (".png", ".jpg", ".jpeg", ".svg")]
    views = []
    if reconstruction is not None and len(reconstruction):
        data = per_image_data(reconstruction, out, metrics(), RECON_KINDS, thumbs=thumbs)
        views.append({"id": "recon", "title": "Reconstruction", "data": {**data, "baseline": baselines.get("recon")}})
    if editing is not None and len(editing):
        data = per_image_data(editing, out, EDIT_METRICS, EDIT_KINDS, member="protocol", thumbs=thumbs)
        views.append({"id": "edit", "title": "Editing", "data": {**data, "baseline": baselines.get("edit")}})
    page = render_html({
        "title": f"easyinv report: {', '.join(Path(d).name for d in run_dirs)}",
        "runs": [_link(Path(d), out) for d in run_dirs],
        "tables": tables,
        "figures": figures,
        "views": views,
        "page_size": page_size,
    })
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    log.info("browsable report: %s", path)
    return path
