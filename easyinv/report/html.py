"""``report.html``: one self-contained page beside the tables, opened from disk with no network.

It shows the tables written next to it (sortable by any column), a per-image view (every image a row: reference,
each method's reconstruction and edit as thumbnails linked to the full PNGs, per-image metrics, status and failure
reason; filtered by method, status and dataset part; sorted by a metric or by the difference of two methods; paged),
a side-by-side view of two methods on one image with their error maps, and the figures. The page is rendered with
Jinja2 from ``templates/``; its script and style are inlined from the same package folder (no CDN), and the
per-image data (``easyinv.report.browse``) is embedded as JSON.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import pandas as pd
from markupsafe import Markup

from easyinv.report.browse import EDIT_KINDS, RECON_KINDS, RECON_METRICS, MetricColumn, per_image_data
from easyinv.report.editing_tables import EDIT_COLUMNS

__all__ = ["TEMPLATES", "markdown_tables", "render_html", "write_html_report"]

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).with_name("templates")
EDIT_METRICS = tuple(MetricColumn(key, header, lower, 2, scale) for key, header, scale, lower, _ in EDIT_COLUMNS)
# the tables written beside the page, in the order shown: (key of write_report's result, title)
TABLES = (("table1_md", "Table 1"), ("table2_md", "Table 2"), ("sweep_md", "Sweep"), ("editing_md", "Editing"),
          ("editing_by_type_md", "Editing per edit type"))


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


def write_html_report(
    out_dir: str | Path,
    run_dirs: Sequence[str | Path],
    written: Mapping[str, Path],
    reconstruction: pd.DataFrame | None = None,
    editing: pd.DataFrame | None = None,
    thumbs: bool = True,
    page_size: int = 25,
) -> Path:
    """Write ``out_dir/report.html`` from the tables and figures already written (``written``, write_report's
    result) and the per-image records of the reconstruction and editing rows."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = []
    for key, title in TABLES:
        if key not in written:
            continue
        md = Path(written[key])
        grids, notes = markdown_tables(md.read_text(encoding="utf-8"))
        files = [_link(p, out) for p in sorted(md.parent.glob(f"{md.stem}.*")) if p.suffix in (".md", ".csv", ".tex")]
        for k, grid in enumerate(grids):
            tables.append({"id": f"{md.stem}-{k}", "title": title, "notes": notes if k == len(grids) - 1 else [],
                           "files": files, **grid})
    figures = [{"name": key.removeprefix("fig_"), "src": _link(Path(p), out)} for key, p in written.items()
               if key.startswith("fig_") and Path(p).suffix.lower() in (".png", ".jpg", ".jpeg", ".svg")]
    views = []
    if reconstruction is not None and len(reconstruction):
        views.append({"id": "recon", "title": "Reconstruction",
                      "data": per_image_data(reconstruction, out, RECON_METRICS, RECON_KINDS, thumbs=thumbs)})
    if editing is not None and len(editing):
        views.append({"id": "edit", "title": "Editing",
                      "data": per_image_data(editing, out, EDIT_METRICS, EDIT_KINDS, member="protocol",
                                             thumbs=thumbs)})
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
