"""Sweeps: one row per swept configuration, the best configuration per metric, and the axes the figures plot.

A key is "swept" when it takes several values within one dataset/model/method/precision (``method.eta`` …); list
values such as ``method.interval`` also get numeric ``.start``/``.end`` columns so they can be heatmap axes.
``easyinv.report.writer`` writes these tables; ``easyinv.report.sweep_figures`` draws the heatmaps and curves.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from easyinv.report.columns import TIME, declaration, metrics, paired_metrics, shown_pairs
from easyinv.report.paired import PairedSettings, paired_columns, psnr_ceilings
from easyinv.report.styles import MARKDOWN, markdown_grid, metric_cell, number
from easyinv.report.summary import extra_columns, summarize
from easyinv.report.tables import csv_columns, pair_baseline, pair_cell, paired_note, pairs_cell

__all__ = [
    "LIST_PARTS",
    "SWEEP_CONTEXT",
    "best_configs",
    "sweep_axes",
    "sweep_markdown",
    "sweep_slice",
    "sweep_table",
    "swept_keys",
    "write_sweep",
]


def swept_keys(df: pd.DataFrame) -> list[str]:
    """Free record keys (e.g. ``method.eta``) taking more than one value within one dataset/model/method/precision."""
    keys = []
    for col in extra_columns(df):
        groups = df.groupby(["dataset", "model", "method", "precision"], dropna=False)
        if (groups[col].nunique(dropna=False) > 1).any():
            keys.append(col)
    return keys


SWEEP_CONTEXT = ("dataset", "model", "method", "precision", "device")
LIST_PARTS = ("start", "end")  # names of a two-element list's parts: [start, end] windows such as method.interval


def _number_list(value: Any) -> list[float] | None:
    """A list as records store it (``"[0.05, 0.25]"``) → its numbers; None when it is not a list of numbers."""
    parsed: Any = value
    if isinstance(value, str):
        try:
            parsed = ast.literal_eval(value)  # records hold JSON lists or Python list reprs: both parse here
        except (ValueError, SyntaxError):
            return None
    if not isinstance(parsed, list | tuple) or not parsed:
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in parsed):
        return None
    return [float(v) for v in parsed]


def _list_parts(values: pd.Series) -> dict[str, pd.Series]:
    """``{"start": ..., "end": ...}`` for a column of two-number lists (``{"0": ..., "1": ..., ...}`` for another
    common length); empty when the column is not a list of numbers of one length throughout."""
    parsed = [_number_list(v) for v in values]
    lengths = {len(v) for v in parsed if v is not None}
    if any(v is None for v in parsed) or len(lengths) != 1:
        return {}
    n = lengths.pop()
    names = LIST_PARTS if n == len(LIST_PARTS) else tuple(str(i) for i in range(n))
    lists = [v for v in parsed if v is not None]
    return {name: pd.Series([v[i] for v in lists], index=values.index, dtype="float64") for i, name in enumerate(names)}


def _is_number_column(values: pd.Series) -> bool:
    present = values.dropna()
    return len(present) > 0 and all(isinstance(v, int | float | np.number) and not isinstance(v, bool | np.bool_)
                                    for v in present)


def sweep_table(df: pd.DataFrame, keys: Sequence[str], paired: PairedSettings | None = None) -> pd.DataFrame:
    """One row per configuration of the swept ``keys``: the :func:`summarize` columns; ``attrs["keys"]`` holds keys.

    A key whose values are number lists (``method.interval``) also gets one numeric column per element,
    ``<key>.start``/``<key>.end`` for pairs, so it can be plotted and is sorted by value rather than as text.
    With ``paired`` (and its baseline method among the rows), every configuration's per-image differences to the
    baseline's (first) configuration on the same dataset, model, precision and device.
    """
    missing = [k for k in keys if k not in df.columns]
    if missing:
        raise KeyError(f"sweep_table: records have no column(s) {missing}; swept keys are {swept_keys(df)}")
    by = [*SWEEP_CONTEXT, *keys]
    table = summarize(df, by=by)
    order = list(SWEEP_CONTEXT)
    for key in keys:
        for name, values in _list_parts(table[key]).items():
            table[f"{key}.{name}"] = values
            order.append(f"{key}.{name}")
        order.append(key)
    table = table.sort_values(order, kind="stable", na_position="last").reset_index(drop=True)
    if paired is not None and paired.baseline is not None:
        def config(frame: pd.DataFrame) -> pd.Series:  # one name per configuration, the same in records and rows
            return frame[["method", *keys]].map(str).agg(" ".join, axis=1)

        pairs = paired_columns(df.assign(_config=config(df)), table.assign(_config=config(table)),
                               ["dataset", "model", "precision", "device"], "_config", paired.baseline,
                               {m.name: m.lower_is_better for m in paired_metrics()}, paired,
                               baseline_column="method")
        pairs["pair_baseline"] = pairs["pair_baseline"].where(pairs["pair_baseline"].isna(), paired.baseline)
        table = pd.concat([table, pairs], axis=1)
        table.attrs["psnr_ceilings"] = psnr_ceilings(df)
    table.attrs["keys"] = list(keys)
    return table


def sweep_axes(sweep: pd.DataFrame, keys: Sequence[str] | None = None) -> dict[str, str]:
    """The numeric columns along which a :func:`sweep_table` varies, each mapped to the swept key it comes from.

    Numeric keys map to themselves; a list key contributes its parts, each only if it adds information to the parts
    before it: a window swept as [0.05, 0.25] and [0.0, 0.5] gives ``<key>.start`` alone, as its end follows.
    """
    keys = list(keys if keys is not None else sweep.attrs.get("keys", []))
    axes: dict[str, str] = {}
    for key in keys:
        if _is_number_column(sweep[key]):
            if sweep[key].nunique() > 1:
                axes[key] = key
            continue
        kept: list[str] = []
        for name in _list_parts(sweep[key]):
            column = f"{key}.{name}"
            before = len(sweep[kept].drop_duplicates()) if kept else 1
            if column in sweep and len(sweep[[*kept, column]].drop_duplicates()) > before:
                kept.append(column)
        axes.update(dict.fromkeys(kept, key))
    return axes


def sweep_slice(
    sweep: pd.DataFrame, x: str, y: str, metric: str, keys: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``metric`` means on the ``x`` × ``y`` grid, every other swept key held at the metric's best configuration.

    Returns the grid (index: values of ``y``, columns: values of ``x``, NaN where that configuration was not run)
    and the held values. Holding the others at the optimum shows the landscape through the best point, where a mean
    over them would mix configurations of very different quality. Pass one context (dataset, model, method,
    precision, device) at a time.
    """
    keys = list(keys if keys is not None else sweep.attrs.get("keys", []))
    axes = sweep_axes(sweep, keys)
    column = f"{metric}_mean"
    scored = sweep[sweep[column].notna()]  # an infinite PSNR (identical images) is a best, as in best_configs
    if scored.empty:
        raise ValueError(f"sweep_slice: no {metric} in the sweep")
    best = scored.loc[scored[column].idxmin() if declaration(metric).lower_is_better else scored[column].idxmax()]
    on_axes = {axes.get(x, x), axes.get(y, y)}
    held = {k: best[k] for k in keys if k not in on_axes}
    rows = sweep
    for key, value in held.items():
        rows = rows[rows[key].astype(str) == str(value)]
    grid = rows.pivot_table(index=y, columns=x, values=column, aggfunc="mean", dropna=False)
    grid = grid.reindex(index=sorted(sweep[y].dropna().unique()), columns=sorted(sweep[x].dropna().unique()))
    return grid, {k: _plain(v) for k, v in held.items()}


def best_configs(sweep: pd.DataFrame, keys: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """The best configuration per metric of a :func:`sweep_table` (lowest LPIPS/latent MSE/time, highest SSIM/PSNR).

    ``{metric: {"config": {key: value}, "value", "ci95", "n", "dataset", "model", "method", "precision"}}``.
    """
    keys = list(keys if keys is not None else sweep.attrs.get("keys", []))
    best: dict[str, dict[str, Any]] = {}
    for declared in (*metrics(), TIME):
        metric, mean = declared.name, f"{declared.name}_mean"
        if mean not in sweep or sweep[mean].notna().sum() == 0:
            continue
        i = sweep[mean].idxmin() if declared.lower_is_better else sweep[mean].idxmax()
        row = sweep.loc[i]
        best[metric] = {
            "config": {k: _plain(row[k]) for k in keys},
            "value": _plain(row[mean]),
            "ci95": _plain(row[f"{metric}_ci95"]),
            "n": _plain(row[f"{metric}_n"]),
            **{k: _plain(row[k]) for k in ("dataset", "model", "method", "precision")},
        }
    return best


def _plain(value: Any) -> Any:
    """numpy/pandas scalars → JSON-ready Python values (NaN → None)."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def sweep_markdown(sweep: pd.DataFrame) -> str:
    """The text of ``sweep.md``: one row per configuration (mean ± 95 % CI per metric), then the best per metric."""
    keys = sweep.attrs.get("keys", [])
    shown = {**{k: sweep[k].astype(str) for k in ["method", "precision", *keys]}, "n": sweep["n_ok"].astype(str)}
    for declared in (*metrics(), TIME):
        shown[declared.heading] = [metric_cell(r, declared.name, MARKDOWN) for _, r in sweep.iterrows()]
    shown["NFE"] = [number(v, 1, MARKDOWN) for v in sweep["nfe_mean"]]
    baseline = pair_baseline(sweep)
    if baseline is not None:
        compared = shown_pairs()
        shown[f"Pairs vs {baseline}"] = [pairs_cell(r, compared, MARKDOWN) for _, r in sweep.iterrows()]
        for declared in compared:
            shown[f"Δ {declared.label} vs {baseline}"] = [pair_cell(r, declared.name, MARKDOWN)
                                                         for _, r in sweep.iterrows()]
    lines = [f"## Sweep over {', '.join(keys)}", "", markdown_grid(pd.DataFrame(shown)), ""]
    if baseline is not None:
        lines += [paired_note(sweep, baseline), ""]
    several = len(sweep[list(SWEEP_CONTEXT)].drop_duplicates()) > 1
    best = best_configs(sweep, keys)
    if best:
        lines.append("Best configuration per metric (mean over images; time: warm-up excluded):")
        lines.append("")
    for metric, entry in best.items():
        where = ", ".join(f"{k}={v}" for k, v in entry["config"].items())
        if several:
            where += " (" + ", ".join(str(entry[k]) for k in ("method", "model", "precision")) + ")"
        declared = declaration(metric)
        value = number(entry["value"] if entry["value"] is not None else math.nan, declared.decimals, MARKDOWN)
        lines.append(f"- {declared.heading}: {value} at {where}")
    return "\n".join(lines) + "\n"


def write_sweep(sweep: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """``sweep.md``, ``sweep.csv`` and ``best_configs.json`` for a :func:`sweep_table`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = sweep.attrs.get("keys", [])
    paths = {"sweep_md": out_dir / "sweep.md", "sweep_csv": out_dir / "sweep.csv",
             "best_configs": out_dir / "best_configs.json"}
    paths["sweep_md"].write_text(sweep_markdown(sweep), "utf-8")
    parts = [c for c in sweep.columns if any(c.startswith(f"{k}.") for k in keys)]
    columns = [c for c in [*SWEEP_CONTEXT, *keys, *parts, *csv_columns()] if c in sweep]
    csv = sweep[list(dict.fromkeys(columns))]
    csv.to_csv(paths["sweep_csv"], index=False, lineterminator="\n")  # full precision
    paths["best_configs"].write_text(json.dumps(best_configs(sweep), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return paths
