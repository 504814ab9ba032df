"""Figures from records and saved PNGs: qualitative grid, metric distributions, quality vs cost, failure gallery, and
for sweeps the metric heatmaps over pairs of swept keys and the metric-versus-η curves.

Like the tables, figures are pure functions of a run's files. The runner saves ``ref/<safe_name(item)>.png`` and
``recon/<safe_name(method_label)>/<safe_name(item)>.png`` under each run dir (``save_png=true``); the helpers below
give those paths, so writer and reader cannot disagree. Plots use matplotlib's ``Figure`` directly (Agg, no pyplot
state), and a figure whose inputs are missing is skipped with a logged note.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import re
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from easyinv.report import LOWER_IS_BETTER, METRICS, PAPER_ORDER, summarize, with_labels
from easyinv.sweeps import SWEEP_CONTEXT, sweep_axes, sweep_slice

__all__ = [
    "failure_gallery",
    "latents_path",
    "metric_distributions",
    "qualitative_grid",
    "quality_vs_cost",
    "recon_png_path",
    "ref_png_path",
    "safe_name",
    "save_png",
    "saved_references",
    "step_png_path",
    "sweep_curves",
    "sweep_heatmaps",
    "write_figures",
    "write_sweep_figures",
]

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
TITLES = {"psnr": "PSNR (dB) ↑", "ssim": "SSIM ↑", "lpips": "LPIPS ↓", "latent_mse": "latent MSE ↓"}
DPI = 100


# --------------------------------------------------------------------------------------------------------------------
# File layout shared with the runner
# --------------------------------------------------------------------------------------------------------------------


def safe_name(item_id: str) -> str:
    """A file-name stem for an item id or label: ``[A-Za-z0-9._-]`` kept, other runs become ``_``.

    When anything had to change (``val2017/0001.jpg`` → ``val2017_0001.jpg-<8 hex>``) a hash of the original id is
    appended, so two ids never share a file; ids that are already safe are used as they are.
    """
    text = str(item_id)
    name = _UNSAFE.sub("_", text).strip("._")[:100] or "item"
    if name != text:
        name = f"{name}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:8]}"
    return name


def ref_png_path(run_dir: str | Path, item_id: str) -> Path:
    """Where the runner saves the preprocessed reference image of ``item_id``."""
    return Path(run_dir) / "ref" / f"{safe_name(item_id)}.png"


def recon_png_path(run_dir: str | Path, method_label: str, item_id: str) -> Path:
    """Where the runner saves the uint8 reconstruction of ``item_id`` by ``method_label``."""
    return Path(run_dir) / "recon" / safe_name(method_label) / f"{safe_name(item_id)}.png"


def latents_path(run_dir: str | Path, method_label: str, item_id: str) -> Path:
    """Where the runner stores the reconstruction-trajectory latents of ``item_id`` kept by ``save_latents``."""
    return Path(run_dir) / "latents" / safe_name(method_label) / f"{safe_name(item_id)}.pt"


def step_png_path(run_dir: str | Path, method_label: str, item_id: str, step: int) -> Path:
    """Where the runner saves the decoded latent after reconstruction step ``step`` (0 = z_T, T = the result)."""
    return Path(run_dir) / "steps" / safe_name(method_label) / f"{safe_name(item_id)}.step{int(step)}.png"


def save_png(image_u8: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 (H, W, 3) array as a lossless PNG (never JPEG: it would bias every metric)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(image_u8, dtype=np.uint8)).save(path, format="PNG")
    return path


def _load(path: Path | None) -> np.ndarray | None:
    if path is None or not path.is_file():
        return None
    return np.asarray(Image.open(path).convert("RGB"))


def _find(paths: Iterable[Path]) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


def saved_references(dirs: Sequence[Path], items: Iterable[str], max_items: int) -> dict[str, np.ndarray]:
    """The saved reference images of the first ``max_items`` of ``items`` that have one, in order."""
    refs: dict[str, np.ndarray] = {}
    for item in items:
        found = _find(ref_png_path(d, item) for d in dirs)
        if found is not None:
            refs[item] = _load(found)
        if len(refs) == max_items:
            break
    return refs


def _recon(own: Sequence[Path], others: Sequence[Path], method_label: str, item_id: str) -> np.ndarray | None:
    """A saved reconstruction: ``recon/<label>/<item>.png``, or flat ``recon/<item>.png`` in the record's own run
    dir (a run dir holds one configuration, so the label level is optional there)."""
    labelled = (recon_png_path(d, method_label, item_id) for d in [*own, *others])
    flat = (Path(d) / "recon" / f"{safe_name(item_id)}.png" for d in own)
    return _load(_find(itertools.chain(labelled, flat)))


def _figure_labels(df: pd.DataFrame) -> pd.DataFrame:
    """The tables' labels, plus model and precision where a figure mixes several (``easyinv · fp16``)."""
    df = with_labels(df)
    for key in ("model", "precision"):
        if df[key].nunique(dropna=False) > 1:
            df["label"] = df["label"] + " · " + df[key].astype(object).where(df[key].notna(), "?").astype(str)
    return df


def _labels_in_order(df: pd.DataFrame, column: str = "label") -> list[str]:
    """Labels in the tables' order: the paper's methods, the others by name, the VAE-only ceiling last."""
    firsts = df.groupby(column, sort=False)["method"].first()

    def rank(label: str) -> tuple[int, str]:
        method = str(firsts[label])
        base = PAPER_ORDER.index(method) if method in PAPER_ORDER else len(PAPER_ORDER) + (method == "vae_only")
        return base, label

    return sorted(firsts.index.astype(str), key=rank)


def _new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None})
    return path


# --------------------------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------------------------


def qualitative_grid(
    df: pd.DataFrame, run_dirs: Sequence[str | Path], out_path: str | Path,
    item_ids: Sequence[str] | None = None, max_items: int = 4,
) -> Path | None:
    """Per item: the reference and each method's reconstruction, and below them |rec − ref| on one shared scale.

    Items default to the first ``max_items`` (by id) with a saved reference; returns None when no PNGs exist.
    """
    df = _figure_labels(df)
    dirs = list(dict.fromkeys([*map(Path, run_dirs), *map(Path, df["run_dir"].dropna().unique())]))
    candidates = item_ids if item_ids is not None else sorted(df["item_id"].dropna().astype(str).unique())
    refs = saved_references(dirs, candidates, max_items)
    labels = _labels_in_order(df)
    recons: dict[tuple[str, str], np.ndarray | None] = {}
    for label in labels:
        rows = df[df["label"] == label]
        raw = str(rows["method_label"].dropna().iloc[0]) if rows["method_label"].notna().any() else label
        own = [Path(d) for d in rows["run_dir"].dropna().unique()]
        for item in refs:
            recons[(label, item)] = _recon(own, dirs, raw, item)
    if not refs or all(v is None for v in recons.values()):
        log.info("qualitative grid skipped: no saved reference/reconstruction PNGs (run with save_png=true)")
        return None

    errors = {k: np.abs(v.astype(np.float32) - refs[k[1]].astype(np.float32)).mean(-1) / 255
              for k, v in recons.items() if v is not None and v.shape == refs[k[1]].shape}
    vmax = max(float(np.percentile(np.stack([e.ravel() for e in errors.values()]), 99)) if errors else 0, 1 / 255)
    ncols = 1 + len(labels)
    fig = _new_figure(1.7 * ncols + 0.6, 3.4 * len(refs))
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
    return _save(fig, Path(out_path))


def metric_distributions(df: pd.DataFrame, out_path: str | Path) -> Path | None:
    """Box plot of each measured metric per method (``ok`` images); None when there is nothing to plot."""
    ok = _figure_labels(df[df["status"] == "ok"])
    metrics = [m for m in METRICS if ok[m].notna().any()]
    if not metrics:
        log.info("metric distributions skipped: no ok record has a metric")
        return None
    labels = _labels_in_order(ok)
    fig = _new_figure(max(3.2, 0.55 * len(labels) + 1.2) * len(metrics), 3.6)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        values = [ok.loc[ok["label"] == label, metric].to_numpy(dtype=float) for label in labels]
        data = [v[np.isfinite(v)] for v in values]  # an identical image's PSNR is +inf: nothing to draw
        ax.boxplot(data, showmeans=True)  # positions 1..n; labels set below (keyword names moved across versions)
        ax.set_xticks(range(1, len(labels) + 1), [textwrap.shorten(lb, 24) for lb in labels], rotation=30, ha="right")
        title = TITLES[metric]
        if metric == "lpips" and not ok.loc[ok["lpips"].notna(), "lpips_comparable"].all():
            title += " † random trunk"
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
    return _save(fig, Path(out_path))


def quality_vs_cost(df: pd.DataFrame, out_path: str | Path) -> Path | None:
    """Per-method mean quality (± 95 % CI) against time per image and against NFE per image."""
    table = summarize(_figure_labels(df), by=("label",))
    metrics = [m for m in ("psnr", "ssim", "lpips") if table[f"{m}_mean"].notna().any()]
    costs = [(c, x) for c, x in (("time_s_mean", "time per image (s)"), ("nfe_mean", "NFE per image"))
             if table[c].notna().any()]
    if not metrics or not costs:
        log.info("quality-vs-cost skipped: records lack metrics or time/NFE")
        return None
    fig = _new_figure(3.4 * len(metrics), 3.0 * len(costs))
    axes = fig.subplots(len(costs), len(metrics), squeeze=False)
    for row, (cost, xlabel) in enumerate(costs):
        for col, metric in enumerate(metrics):
            ax = axes[row][col]
            for _, r in table.iterrows():
                xerr = r["time_s_ci95"] if cost == "time_s_mean" and math.isfinite(r["time_s_ci95"]) else None
                yerr = r[f"{metric}_ci95"] if math.isfinite(r[f"{metric}_ci95"]) else None
                ax.errorbar(r[cost], r[f"{metric}_mean"], xerr=xerr, yerr=yerr, fmt="o", capsize=3)
                ax.annotate(textwrap.shorten(str(r["label"]), 20), (r[cost], r[f"{metric}_mean"]), fontsize=6,
                            xytext=(3, 3), textcoords="offset points")
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_ylabel(TITLES[metric], fontsize=8)
            ax.tick_params(labelsize=7)
    return _save(fig, Path(out_path))


def failure_gallery(
    df: pd.DataFrame, run_dirs: Sequence[str | Path], out_path: str | Path, worst_k: int = 4, max_failures: int = 12,
) -> Path | None:
    """Items that failed (status ≠ ok, with their reasons) and the ``worst_k`` ok items by PSNR, as saved."""
    df = _figure_labels(df)
    failed = df[df["status"] != "ok"].sort_values(["label", "item_id"]).head(max_failures)
    worst = df[(df["status"] == "ok") & df["psnr"].notna()].nsmallest(worst_k, "psnr")
    shown = pd.concat([failed, worst])
    if shown.empty:
        log.info("failure gallery skipped: no failures and no PSNR to rank")
        return None
    dirs = [Path(d) for d in run_dirs]
    ncols = min(4, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    fig = _new_figure(2.4 * ncols, 2.7 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (_, r) in zip(axes, shown.iterrows(), strict=False):
        raw = str(r["method_label"]) if pd.notna(r["method_label"]) else str(r["method"])
        own = [Path(r["run_dir"])] if pd.notna(r["run_dir"]) else []
        image = _recon(own, dirs, raw, str(r["item_id"]))
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
    return _save(fig, Path(out_path))


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


# --------------------------------------------------------------------------------------------------------------------
# Sweeps (input: a sweeps.sweep_table)
# --------------------------------------------------------------------------------------------------------------------

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
    return [m for m in METRICS if sweep[f"{m}_mean"].notna().any()]


def _metric_title(sweep: pd.DataFrame, metric: str) -> str:
    title = TITLES[metric]
    if metric == "lpips" and not sweep.loc[sweep["lpips_mean"].notna(), "lpips_comparable"].all():
        title += " † random trunk"
    return title


def _heatmap_panel(fig: Figure, ax: Axes, sweep: pd.DataFrame, x: str, y: str, metric: str, keys: list[str]) -> None:
    grid, held = sweep_slice(sweep, x, y, metric, keys)
    values = grid.to_numpy(dtype=float)
    lower = LOWER_IS_BETTER[metric]
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
        metrics = _metrics(context)
        for x, y in itertools.combinations(axes, 2):
            if not metrics or len(context[[x, y]].drop_duplicates()) < context[x].nunique() * context[y].nunique():
                continue  # only full grids: a TPE search or two linked axes (a window's start and end) leave holes
            fig = _new_figure(3.4 * len(metrics), 3.3)
            for ax, metric in zip(fig.subplots(1, len(metrics), squeeze=False)[0], metrics, strict=True):
                _heatmap_panel(fig, ax, context, x, y, metric, keys)
            stem = safe_name(f"sweep_heatmap_{_short(x)}__{_short(y)}{suffix}")
            made.append(_save(fig, Path(out_dir) / f"{stem}.png"))
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
        metrics = _metrics(context)
        if axis is None or not metrics:
            continue
        others = [k for k in keys if k != axes[axis] and context[k].nunique(dropna=False) > 1]
        lines = list(context.groupby(others, dropna=False, sort=True)) if others else [((), context)]
        fig = _new_figure(3.4 * len(metrics), 3.2)
        for ax, metric in zip(fig.subplots(1, len(metrics), squeeze=False)[0], metrics, strict=True):
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
        made.append(_save(fig, Path(out_dir) / f"{safe_name(f'sweep_curves_{_short(axis)}{suffix}')}.png"))
    return made


def write_sweep_figures(sweep: pd.DataFrame, out_dir: str | Path, keys: Sequence[str] | None = None) -> list[Path]:
    """The heatmaps and curves of a ``sweeps.sweep_table`` as PNG in ``out_dir``."""
    return [*sweep_heatmaps(sweep, out_dir, keys), *sweep_curves(sweep, out_dir, keys=keys)]
