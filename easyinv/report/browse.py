"""The per-image data of the browsable report: every image as a row, every method as a cell with its status,
failure reason, metrics and the paths (relative to the report) of its saved PNGs and their cached thumbnails.

Paths come from ``easyinv.run.files`` (the one place that says where a run keeps its files): the data holds one
folder per (run, method, kind) and one file stem per image, which the page joins, so 2,298 images × 10 methods stay
a few megabytes of JSON. Only files that exist are referenced; a missing PNG is shown as missing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from easyinv.report.columns import Metric, metrics
from easyinv.report.plotting import figure_labels, labels_in_order
from easyinv.report.thumbnails import thumbnail
from easyinv.run.files import edit_png_path, recon_png_path, ref_png_path, safe_name, thumb_path

__all__ = ["EDIT_KINDS", "RECON_KINDS", "per_image_data", "status_of"]

PathOf = Callable[[Path, str, str], Path]  # (run dir, method label or protocol, item id) → PNG path
RECON_KINDS: dict[str, PathOf] = {"recon": recon_png_path}
EDIT_KINDS: dict[str, PathOf] = {"recon": recon_png_path, "edit": edit_png_path}


def status_of(row: Any) -> str:
    """The status a record is filtered by: its status, or for an ok row ``degenerate`` / ``retried`` when flagged."""
    status = str(row.status)
    if status == "ok" and isinstance(row.flag, str) and row.flag:
        return str(row.flag)
    if status == "ok" and isinstance(row.retried, str) and row.retried:
        return "retried"
    return status


def _rounded(x: float, decimals: int) -> float:
    """Two decimals more than printed; a value that prints as 0 keeps 3 significant digits, so it still sorts apart
    from an exact 0 (an LPIPS of 8.9e-5 is not a pixel-identical reconstruction)."""
    if x == 0 or not math.isfinite(x) or abs(x) >= 10.0 ** -decimals:
        return round(x, decimals + 2)
    return float(f"{x:.3g}")


def _json_number(value: Any, decimals: int) -> float | str | None:
    """Rounded for the page; NaN → null and ±∞ → "Infinity"/"-Infinity" (JSON has neither)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    if math.isnan(x):
        return None
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return _rounded(x, decimals)


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _url(path: Path, out_dir: Path) -> str:
    return quote(Path(os.path.relpath(path, out_dir)).as_posix(), safe="/")


def _text(value: Any) -> str | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def per_image_data(
    df: pd.DataFrame,
    out_dir: str | Path,
    shown: Sequence[Metric] | None = None,
    kinds: Mapping[str, PathOf] = RECON_KINDS,
    member: str = "method_label",
    thumbs: bool = True,
) -> dict[str, Any]:
    """The JSON the page reads: ``methods`` (labels in the tables' order), ``items`` (``[id, part, stem, ref dir]``),
    ``dirs`` (``[full, thumbnail]`` folder URLs), ``cells`` (per item, per method: ``[status, reason, [metrics],
    [dir per kind]]`` or null where the method has no record of the image).

    ``member``: the record column whose value names the files of a row (the method label; an editing row's
    protocol). ``shown``: the metrics, as declared (default: every declared reconstruction metric; values times
    their ``scale``). ``thumbs``: make the missing thumbnails (else only cached ones are used).
    """
    shown = metrics() if shown is None else tuple(shown)
    out_dir = Path(out_dir)
    df = df.copy()
    df[member] = df[member].where(df[member].notna(), df["method"]).map(str)
    if member == "method_label":
        df = figure_labels(df)
    else:
        df["label"] = df[member]
        for key in ("model", "precision"):
            if df[key].nunique(dropna=False) > 1:
                df["label"] = df["label"] + " · " + df[key].map(str)
    methods = labels_in_order(df)
    column = {label: i for i, label in enumerate(methods)}
    items = list(dict.fromkeys(df["item_id"].astype(str)))
    row_of = {item: i for i, item in enumerate(items)}
    dirs: list[list[str]] = []
    dir_index: dict[tuple[str, str], int] = {}

    def folder(png: Path, run_dir: Path) -> int:
        """The index of the (PNG folder, thumbnail folder) pair of ``png``, making its thumbnail on the way."""
        made = thumbnail(png, run_dir) if thumbs else thumb_path(run_dir, png)
        key = (str(png.parent), str(made.parent))
        if key not in dir_index:
            dir_index[key] = len(dirs)
            dirs.append([_url(png.parent, out_dir), _url(made.parent, out_dir)])
        return dir_index[key]

    stems = [safe_name(item) for item in items]
    refs = [-1] * len(items)
    cells: list[list[Any]] = [[None] * len(methods) for _ in items]
    for row in df.itertuples(index=False):
        run_dir = Path(str(row.run_dir))
        item = str(row.item_id)
        i = row_of[item]
        if refs[i] < 0:
            ref = ref_png_path(run_dir, item)
            if ref.is_file():
                refs[i] = folder(ref, run_dir)
        where = []
        for path_of in kinds.values():
            png = path_of(run_dir, str(getattr(row, member)), item)
            where.append(folder(png, run_dir) if png.is_file() else -1)
        values = [_json_number(_float(getattr(row, m.name, None) if m.name in df.columns else None) * m.scale,
                               m.decimals) for m in shown]
        cells[i][column[str(row.label)]] = [status_of(row), _text(row.reason), values, where]
    return {
        "kinds": list(kinds),
        "metrics": [{"key": m.name, "name": m.heading, "lower": m.lower_is_better, "decimals": m.decimals}
                    for m in shown],
        "methods": methods,
        "dirs": dirs,
        "items": [[item, item.split("/")[0] if "/" in item else "—", stem, ref]
                  for item, stem, ref in zip(items, stems, refs, strict=True)],
        "cells": cells,
    }
