"""The figures of a sweep (input: a ``sweep_tables.sweep_table``): metric heatmaps over pairs of swept keys and
metric-versus-η curves, each per dataset/model/method/precision/device context.
"""

from __future__ import annotations

import itertools
import logging
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from easyinv.report.columns import declaration, metrics
from easyinv.report.plotting import new_figure, plot_title, save_figure
from easyinv.report.sweep_tables import SWEEP_CONTEXT, sweep_axes, sweep_slice
from easyinv.run.files import safe_name

__all__ = ["MAX_HEATMAP_VALUES", "MAX_LINES", "sweep_curves", "sweep_heatmaps", "write_sweep_figures"]

log = logging.getLogger(__name__)

MAX_HEATMAP_VALUES = 12  # an axis with more distinct values (a TPE or random search) gets points in the curves only
MAX_LINES = 8  # more settings of the other keys than this: every configuration becomes a point, not a line


def _short(key: str) -> str:
    """``method.interval.start`` → ``interval.start``: every swept record key is a method key."""
    return key.removeprefix("method.")


def _tick(value: object) -> str:
    return f"{value:g}" if isinstance(value, int | float | np.number) else str(value)


def _keys(sweep: pd.DataFrame, keys: Sequence[str] | None) -> list[str]:
    return list(keys if keys is not None else sweep.attrs.get("keys", []))


def _contexts(sweep: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The sweep split by (dataset, model, method, precision, device), each with a file-name suffix naming it when
    there is more than one (a heatmap never mixes two models or methods)."""
    varying = [c for c in SWEEP_CONTEXT if sweep[c].nunique(dropna=False) > 1]
    if not varying:
        return [("", sweep)]
    out = []
    for key, rows in sweep.groupby(varying, dropna=False, sort=False):
        suffix = "_" + safe_name("_".join(str(v) for v in (key if isinstance(key, tuple) else (key,))))
        out.append((suffix, rows.reset_index(drop=True)))
    return out


def _metrics(sweep: pd.DataFrame) -> list[str]:
    return [m.name for m in metrics() if f"{m.name}_mean" in sweep and sweep[f"{m.name}_mean"].notna().any()]


def _metric_title(sweep: pd.DataFrame, metric: str) -> str:
    return plot_title(sweep, declaration(metric), f"{metric}_mean")


def _heatmap_panel(fig: Figure, ax: Axes, sweep: pd.DataFrame, x: str, y: str, metric: str, keys: list[str]) -> None:
    grid, held = sweep_slice(sweep, x, y, metric, keys)
    values = grid.to_numpy(dtype=float)
    lower = declaration(metric).lower_is_better
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis_r" if lower else "viridis", origin="lower",
                      aspect="auto")  # reversed map for lower-is-better: brighter is better in every panel
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    for (r, c), v in np.ndenumerate(values):
        if np.isnan(v):
            continue
        shade = 1.0 if np.isinf(v) else (v - low) / (high - low) if high > low else 0.5
        bright = 1 - shade if lower else shade
        ax.text(c, r, "∞" if np.isinf(v) else f"{v:.3g}", ha="center", va="center", fontsize=7,
                color="black" if bright > 0.6 else "white")
    if not np.isnan(values).all():
        r, c = np.unravel_index(np.nanargmin(values) if lower else np.nanargmax(values), values.shape)
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_xticks(range(len(grid.columns)), [_tick(v) for v in grid.columns])
    ax.set_yticks(range(len(grid.index)), [_tick(v) for v in grid.index])
    ax.set_xlabel(_short(x), fontsize=8)
    ax.set_ylabel(_short(y), fontsize=8)
    ax.tick_params(labelsize=7)
    title = _metric_title(sweep, metric)
    if held:
        title += "\n" + textwrap.shorten(", ".join(f"{_short(k)}={v}" for k, v in held.items()), 48)
    ax.set_title(title, fontsize=8)
    fig.colorbar(image, ax=ax, shrink=0.8)


def sweep_heatmaps(sweep: pd.DataFrame, out_dir: str | Path, keys: Sequence[str] | None = None) -> list[Path]:
    """One PNG per pair of swept axes (η × interval start, η × k, ...), a heatmap per metric in it.

    Each heatmap holds the other swept keys at that metric's best configuration (named in its title, see
    ``sweeps.sweep_slice``) and frames the best cell; brighter is better in every panel. Only pairs run as a full
    grid get one; axes with more than ``MAX_HEATMAP_VALUES`` values (a TPE search) are left to :func:`sweep_curves`.
    """
    keys = _keys(sweep, keys)
    made = []
    for suffix, context in _contexts(sweep):
        axes = [a for a in sweep_axes(context, keys) if 2 <= context[a].nunique() <= MAX_HEATMAP_VALUES]
        shown = _metrics(context)
        for x, y in itertools.combinations(axes, 2):
            if not shown or len(context[[x, y]].drop_duplicates()) < context[x].nunique() * context[y].nunique():
                continue  # only full grids: a TPE search or two linked axes (a window's start and end) leave holes
            fig = new_figure(3.4 * len(shown), 3.3)
            for ax, metric in zip(fig.subplots(1, len(shown), squeeze=False)[0], shown, strict=True):
                _heatmap_panel(fig, ax, context, x, y, metric, keys)
            stem = safe_name(f"sweep_heatmap_{_short(x)}__{_short(y)}{suffix}")
            made.append(save_figure(fig, Path(out_dir) / f"{stem}.png"))
    if not made:
        log.info("sweep heatmaps skipped: no two swept numeric keys form a full grid of 2-%d values each",
                 MAX_HEATMAP_VALUES)
    return made


def _default_x(axes: dict[str, str], sweep: pd.DataFrame) -> str | None:
    """η when it is swept (the paper's main knob), else the axis with the most values."""
    etas = [a for a in axes if a.rsplit(".", 1)[-1] == "eta"]
    if etas:
        return etas[0]
    return max(axes, key=lambda a: sweep[a].nunique(), default=None)


def sweep_curves(
    sweep: pd.DataFrame, out_dir: str | Path, x: str | None = None, keys: Sequence[str] | None = None,
) -> list[Path]:
    """Each metric against ``x`` (default η), one line with 95 % CI bars per setting of the other swept keys.

    With more than ``MAX_LINES`` settings (a TPE or random search) every configuration is drawn as a point.
    """
    keys = _keys(sweep, keys)
    made = []
    for suffix, context in _contexts(sweep):
        axes = sweep_axes(context, keys)
        axis = x if x in axes else _default_x(axes, context)
        shown = _metrics(context)
        if axis is None or not shown:
            continue
        others = [k for k in keys if k != axes[axis] and context[k].nunique(dropna=False) > 1]
        lines = list(context.groupby(others, dropna=False, sort=True)) if others else [((), context)]
        fig = new_figure(3.4 * len(shown), 3.2)
        for ax, metric in zip(fig.subplots(1, len(shown), squeeze=False)[0], shown, strict=True):
            mean, ci = f"{metric}_mean", f"{metric}_ci95"
            if len(lines) > MAX_LINES:
                ax.scatter(context[axis], context[mean], s=14, label="one configuration")
            for key, rows in lines if len(lines) <= MAX_LINES else []:
                rows = rows.sort_values(axis)
                label = ", ".join(f"{_short(k)}={v}" for k, v in zip(others, key, strict=True)) or "all"
                ax.errorbar(rows[axis], rows[mean], yerr=rows[ci].fillna(0.0), marker="o", markersize=3, capsize=2,
                            linewidth=1, label=label)
            ax.set_xlabel(_short(axis), fontsize=8)
            ax.set_title(_metric_title(context, metric), fontsize=8)
            ax.tick_params(labelsize=7)
        handles, labels = fig.axes[0].get_legend_handles_labels()
        if len(lines) > 1:
            fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), fontsize=7)
        made.append(save_figure(fig, Path(out_dir) / f"{safe_name(f'sweep_curves_{_short(axis)}{suffix}')}.png"))
    return made


def write_sweep_figures(sweep: pd.DataFrame, out_dir: str | Path, keys: Sequence[str] | None = None) -> list[Path]:
    """The heatmaps and curves of a ``sweeps.sweep_table`` as PNG in ``out_dir``."""
    return [*sweep_heatmaps(sweep, out_dir, keys), *sweep_curves(sweep, out_dir, keys=keys)]
