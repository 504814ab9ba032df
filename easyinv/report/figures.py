"""The figures of a reconstruction run: qualitative grid, metric distributions, quality vs cost, failure gallery.

Like the tables, figures are pure functions of a run's files: records and the PNGs a job saved (``save_png=true``)
where ``easyinv.run.files`` says they are. A figure whose inputs are missing is skipped with a logged note.
"""

from __future__ import annotations

import logging
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from easyinv.report.columns import metrics, table1_metrics
from easyinv.report.plotting import (
    figure_labels,
    labels_in_order,
    metric_bounds,
    new_figure,
    plot_title,
    save_figure,
    saved_reconstruction,
    saved_references,
)
from easyinv.report.summary import summarize

__all__ = ["failure_gallery", "metric_distributions", "qualitative_grid", "quality_vs_cost", "write_figures"]

log = logging.getLogger(__name__)


def qualitative_grid(
    df: pd.DataFrame, run_dirs: Sequence[str | Path], out_path: str | Path,
    item_ids: Sequence[str] | None = None, max_items: int = 4,
) -> Path | None:
    """Per item: the reference and each method's reconstruction, and below them |rec − ref| on one shared scale.

    Items default to the first ``max_items`` (by id) with a saved reference; returns None when no PNGs exist.
    """
    df = figure_labels(df)
    dirs = list(dict.fromkeys([*map(Path, run_dirs), *map(Path, df["run_dir"].dropna().unique())]))
    candidates = item_ids if item_ids is not None else sorted(df["item_id"].dropna().astype(str).unique())
    refs = saved_references(dirs, candidates, max_items)
    labels = labels_in_order(df)
    recons: dict[tuple[str, str], np.ndarray | None] = {}
    for label in labels:
        rows = df[df["label"] == label]
        raw = str(rows["method_label"].dropna().iloc[0]) if rows["method_label"].notna().any() else label
        own = [Path(d) for d in rows["run_dir"].dropna().unique()]
        for item in refs:
            recons[(label, item)] = saved_reconstruction(own, dirs, raw, item)
    if not refs or all(v is None for v in recons.values()):
        log.info("qualitative grid skipped: no saved reference/reconstruction PNGs (run with save_png=true)")
        return None

    errors = {k: np.abs(v.astype(np.float32) - refs[k[1]].astype(np.float32)).mean(-1) / 255
              for k, v in recons.items() if v is not None and v.shape == refs[k[1]].shape}
    vmax = max(float(np.percentile(np.stack([e.ravel() for e in errors.values()]), 99)) if errors else 0, 1 / 255)
    ncols = 1 + len(labels)
    fig = new_figure(1.7 * ncols + 0.6, 3.4 * len(refs))
    axes = fig.subplots(2 * len(refs), ncols, squeeze=False)
    image = None
    for r, (item, ref) in enumerate(refs.items()):
        top, bottom = axes[2 * r], axes[2 * r + 1]
        top[0].imshow(ref)
        top[0].set_title(f"reference\n{textwrap.shorten(item, 24)}", fontsize=7)
        for c, label in enumerate(labels, start=1):
            rec, err = recons[(label, item)], errors.get((label, item))
            if rec is not None:
                top[c].imshow(rec)
            else:
                top[c].text(0.5, 0.5, "not saved", ha="center", va="center", fontsize=7, color="gray")
            psnr = df.loc[(df["label"] == label) & (df["item_id"] == item), "psnr"]
            value = psnr.iloc[0] if len(psnr) else None
            score = "no PSNR" if value is None or pd.isna(value) else (
                "∞ dB (identical)" if np.isinf(value) else f"{value:.2f} dB")
            top[c].set_title(f"{textwrap.shorten(label, 24)}\n{score}", fontsize=7)
            if err is not None:
                image = bottom[c].imshow(err, cmap="magma", vmin=0, vmax=vmax)
        bottom[0].text(0.5, 0.5, "|rec − ref|\n(mean over RGB)", ha="center", va="center", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.5, label="abs. error (0–1)")
    return save_figure(fig, Path(out_path))


def metric_distributions(df: pd.DataFrame, out_path: str | Path) -> Path | None:
    """Box plot of each measured metric per method (``ok`` images); None when there is nothing to plot."""
    ok = figure_labels(df[df["status"] == "ok"])
    shown = [m for m in metrics() if m.name in ok and ok[m.name].notna().any()]
    if not shown:
        log.info("metric distributions skipped: no ok record has a metric")
        return None
    labels = labels_in_order(ok)
    fig = new_figure(max(3.2, 0.55 * len(labels) + 1.2) * len(shown), 3.6)
    axes = fig.subplots(1, len(shown), squeeze=False)[0]
    for ax, metric in zip(axes, shown, strict=True):
        values = [ok.loc[ok["label"] == label, metric.name].to_numpy(dtype=float) for label in labels]
        data = [v[np.isfinite(v)] for v in values]  # an identical image's PSNR is +inf: nothing to draw
        ax.boxplot(data, showmeans=True)  # positions 1..n; labels set below (keyword names moved across versions)
        ax.set_xticks(range(1, len(labels) + 1), [textwrap.shorten(lb, 24) for lb in labels], rotation=30, ha="right")
        ax.set_title(plot_title(ok, metric), fontsize=9)
        metric_bounds(ax, metric)
        ax.tick_params(labelsize=7)
    return save_figure(fig, Path(out_path))


def quality_vs_cost(df: pd.DataFrame, out_path: str | Path) -> Path | None:
    """Per-method mean quality (± 95 % CI) against time per image and against NFE per image."""
    table = summarize(figure_labels(df), by=("label",))
    shown = [m for m in table1_metrics() if table[f"{m.name}_mean"].notna().any()]
    costs = [(c, x) for c, x in (("time_s_mean", "time per image (s)"), ("nfe_mean", "NFE per image"))
             if table[c].notna().any()]
    if not shown or not costs:
        log.info("quality-vs-cost skipped: records lack metrics or time/NFE")
        return None
    fig = new_figure(3.4 * len(shown), 3.0 * len(costs))
    axes = fig.subplots(len(costs), len(shown), squeeze=False)
    for row, (cost, xlabel) in enumerate(costs):
        for col, metric in enumerate(shown):
            ax = axes[row][col]
            mean, ci = f"{metric.name}_mean", f"{metric.name}_ci95"
            for _, r in table.iterrows():
                xerr = r["time_s_ci95"] if cost == "time_s_mean" and math.isfinite(r["time_s_ci95"]) else None
                yerr = r[ci] if math.isfinite(r[ci]) else None
                ax.errorbar(r[cost], r[mean], xerr=xerr, yerr=yerr, fmt="o", capsize=3)
                ax.annotate(textwrap.shorten(str(r["label"]), 20), (r[cost], r[mean]), fontsize=6,
                            xytext=(3, 3), textcoords="offset points")
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_ylabel(metric.title, fontsize=8)
            ax.tick_params(labelsize=7)
    return save_figure(fig, Path(out_path))


def failure_gallery(
    df: pd.DataFrame, run_dirs: Sequence[str | Path], out_path: str | Path, worst_k: int = 4, max_failures: int = 12,
) -> Path | None:
    """Items that failed (status ≠ ok, with their reasons) and the ``worst_k`` ok items by PSNR, as saved."""
    df = figure_labels(df)
    failed = df[df["status"] != "ok"].sort_values(["label", "item_id"]).head(max_failures)
    worst = df[(df["status"] == "ok") & df["psnr"].notna()].nsmallest(worst_k, "psnr")
    shown = pd.concat([failed, worst])
    if shown.empty:
        log.info("failure gallery skipped: no failures and no PSNR to rank")
        return None
    dirs = [Path(d) for d in run_dirs]
    ncols = min(4, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    fig = new_figure(2.4 * ncols, 2.7 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (_, r) in zip(axes, shown.iterrows(), strict=False):
        raw = str(r["method_label"]) if pd.notna(r["method_label"]) else str(r["method"])
        own = [Path(r["run_dir"])] if pd.notna(r["run_dir"]) else []
        image = saved_reconstruction(own, dirs, raw, str(r["item_id"]))
        if image is not None:
            ax.imshow(image)
        else:
            ax.text(0.5, 0.5, "no image saved", ha="center", va="center", fontsize=7, color="gray")
        if r["status"] == "ok":
            detail = f"worst PSNR: {r['psnr']:.2f} dB"
        else:
            detail = f"{r['status']}: {r['reason'] if pd.notna(r['reason']) else 'no reason recorded'}"
        head = f"{textwrap.shorten(str(r['label']), 28)} · {textwrap.shorten(str(r['item_id']), 28)}"
        ax.set_title(head + "\n" + textwrap.fill(textwrap.shorten(detail, 90), 34), fontsize=6)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(shown):]:
        ax.set_axis_off()
    return save_figure(fig, Path(out_path))


def write_figures(
    df: pd.DataFrame, run_dirs: Sequence[str | Path], out_dir: str | Path, items: Sequence[str] | None = None
) -> list[Path]:
    """Every figure whose inputs exist, as PNG in ``out_dir``; the others are skipped with a logged note.

    ``items``: the image ids shown in the qualitative grid (default: the first few with saved PNGs).
    """
    out_dir = Path(out_dir)
    made = [
        qualitative_grid(df, run_dirs, out_dir / "qualitative_grid.png", item_ids=items),
        metric_distributions(df, out_dir / "metric_distributions.png"),
        quality_vs_cost(df, out_dir / "quality_vs_cost.png"),
        failure_gallery(df, run_dirs, out_dir / "failure_gallery.png"),
    ]
    return [p for p in made if p is not None]
