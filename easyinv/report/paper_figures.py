"""EasyInv's figures from a run's files: Fig. 1 (each method's failure case), Fig. 2 (the reconstruction's midpoint
latent decoded per method), Figs 3-4 (images with large white areas on SD-XL and SD-1.4, where the paper says ReNoise
returns black images), Fig. 5 (EasyInv's reconstructions), with ``figures.md`` saying which paper figure each one
reproduces, on which model and settings, and what to look for.

Like the tables, the figures are pure functions of records, ``run.json`` and the PNGs the runner saved
(``save_png``, ``save_latents``). A reconstruction that is not there is never drawn as a black tile: a non-finite
row is a red, hatched tile naming where it failed; a degenerate (flat) one is drawn with a red frame and its label.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle

from easyinv.report.columns import PAPER_ORDER
from easyinv.report.plotting import first_file, load_png, new_figure, save_figure
from easyinv.run.files import recon_png_path, ref_png_path, safe_name, saved_steps
from easyinv.run.records import read_records

__all__ = ["WHITE_FRACTION", "white_fraction", "write_paper_figures"]

log = logging.getLogger(__name__)

WHITE_LEVEL = 230  # a pixel is white when every channel is at least this
WHITE_FRACTION = 0.3  # an image "with large white areas" (Figs 3-4) has at least this share of white pixels
CEILING = "vae_only"
FAMILY_NAMES = {"sd1": "SD-1.x", "sdxl": "SD-XL", "gaussian": "the Gaussian model"}


def _short(text: str, width: int = 24) -> str:
    """Keep the end of a long id or label (``…white_dark_object.png``): it is the part that tells items apart."""
    text = str(text)
    return text if len(text) <= width else "…" + text[-(width - 1):]


def white_fraction(image_u8: np.ndarray) -> float:
    """Share of pixels whose three channels are all ≥ ``WHITE_LEVEL``."""
    return float((np.asarray(image_u8) >= WHITE_LEVEL).all(axis=-1).mean())


@dataclass
class Figure:
    """One paper figure as made here: its file (None when skipped), the settings it shows and its counts."""

    name: str
    paper: str
    look_for: str
    path: Path | None = None
    setting: str = ""
    notes: list[str] = field(default_factory=list)


def _runs_frame(run_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """Records with each run's model family, step count and precision (from its ``run.json``)."""
    df = read_records(run_dirs)
    if df.empty:
        raise ValueError(f"no records under {[str(d) for d in run_dirs]}")
    facts = {}
    for run_dir in df["run_dir"].dropna().unique():
        manifest = Path(run_dir) / "run.json"
        config = json.loads(manifest.read_text()).get("config", {}) if manifest.is_file() else {}
        facts[run_dir] = {"family": config.get("model", {}).get("family"),
                          "num_steps": config.get("method", {}).get("num_steps")}
    df["family"] = df["run_dir"].map(lambda d: facts.get(d, {}).get("family"))
    df["num_steps"] = df["run_dir"].map(lambda d: facts.get(d, {}).get("num_steps"))
    df["label"] = df["method_label"].where(df["method_label"].notna(), df["method"]).astype(str)
    return df[df["protocol"].isna()] if "protocol" in df else df  # editing rows have their own figure


def _labels(df: pd.DataFrame, ceiling: bool = False) -> list[str]:
    def rank(label: str) -> tuple[int, str]:
        method = str(df.loc[df["label"] == label, "method"].iloc[0])
        return (PAPER_ORDER.index(method) if method in PAPER_ORDER else len(PAPER_ORDER), label)

    labels = sorted(df["label"].unique(), key=rank)
    return [lb for lb in labels if ceiling or not lb.startswith(CEILING)]


def _model_rows(df: pd.DataFrame, family: str | None) -> pd.DataFrame:
    """The records of one model: the first model of ``family`` (any model when None or absent)."""
    chosen = df[df["family"] == family] if family is not None else df
    if chosen.empty:
        return chosen
    return chosen[chosen["model"] == sorted(chosen["model"].astype(str).unique())[0]]


def _sd1_or_any(df: pd.DataFrame) -> pd.DataFrame:
    """The SD-1.x model's records (the paper's Figs 1, 2, 5), else the first model's."""
    rows = _model_rows(df, "sd1")
    return rows if not rows.empty else _model_rows(df, None)


def _setting(rows: pd.DataFrame) -> str:
    model, family = rows["model"].iloc[0], rows["family"].iloc[0]
    steps = sorted({int(s) for s in rows["num_steps"].dropna()})
    precision = ", ".join(sorted(rows["precision"].astype(str).unique()))
    dataset = ", ".join(sorted(rows["dataset"].astype(str).unique()))
    return (f"model {model} ({FAMILY_NAMES.get(family, family)}), precision {precision}, "
            f"T = {', '.join(map(str, steps)) or '?'} steps, dataset {dataset}")


def _image(rows: pd.DataFrame, dirs: list[Path], label: str, item: str) -> tuple[np.ndarray | None, pd.Series | None]:
    match = rows[(rows["label"] == label) & (rows["item_id"] == item)]
    row = match.iloc[-1] if len(match) else None
    own = [Path(d) for d in match["run_dir"].dropna().unique()]
    raw = str(row["method_label"]) if row is not None and pd.notna(row["method_label"]) else label
    found = first_file(recon_png_path(d, raw, item) for d in [*own, *dirs])
    return (load_png(found) if found is not None else None), row


def _reference(dirs: list[Path], item: str) -> np.ndarray | None:
    found = first_file(ref_png_path(d, item) for d in dirs)
    return load_png(found) if found is not None else None


def _failure_kind(row: pd.Series) -> str | None:
    """"nonfinite", "degenerate" (a flat reconstruction of a textured image) or None for a row that looks fine."""
    if row["status"] == "nonfinite":
        return "nonfinite"
    return "degenerate" if row.get("flag") == "degenerate" else None


def _tile(ax: Axes, image: np.ndarray | None, row: pd.Series | None, title: str) -> str:
    """Draw one reconstruction; returns its kind: ok, degenerate, nonfinite, missing. A failure is never black."""
    kind = "missing"
    if row is not None and _failure_kind(row) == "nonfinite":
        kind = "nonfinite"
        ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, facecolor="mistyrose", hatch="///",
                               edgecolor="firebrick"))
        where = row.get("first_failure")
        text = "NON-FINITE" + (f"\n{where}" if isinstance(where, str) else "")
        ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=7, color="firebrick", weight="bold",
                transform=ax.transAxes)
    elif image is not None:
        ax.imshow(image)
        kind = "ok"
        if row is not None and _failure_kind(row) == "degenerate":
            kind = "degenerate"
            ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False, edgecolor="red", linewidth=3))
            title += "\nDEGENERATE (flat)"
    else:
        status = "not saved" if row is None or row["status"] == "ok" else str(row["status"])
        ax.text(0.5, 0.5, status, ha="center", va="center", fontsize=7, color="gray", transform=ax.transAxes)
    ax.set_title(title, fontsize=6)
    ax.set_xticks([])
    ax.set_yticks([])
    return kind


def _psnr(row: pd.Series | None) -> str:
    if row is None or row["status"] != "ok" or pd.isna(row.get("psnr")):
        return ""
    return "∞ dB" if math.isinf(float(row["psnr"])) else f"{float(row['psnr']):.2f} dB"


def _grid(rows: pd.DataFrame, dirs: list[Path], items: list[str], labels: list[str], out: Path,
          picture=None, caption=None) -> Path:
    """Rows = items, columns = reference + one tile per label; ``picture(label, item)`` overrides the image shown
    (e.g. a decoded midpoint) and ``caption(label)`` the tile's second title line."""
    fig = new_figure(1.6 * (1 + len(labels)) + 0.3, 1.9 * len(items) + 0.4)
    axes = fig.subplots(len(items), 1 + len(labels), squeeze=False)
    for r, item in enumerate(items):
        ref = _reference(dirs, item)
        _tile(axes[r][0], ref, None, f"reference\n{_short(item)}")
        for c, label in enumerate(labels, start=1):
            image, row = _image(rows, dirs, label, item)
            if picture is not None and (row is None or row["status"] != "nonfinite"):
                image = picture(label, item)
            second = caption(label) if caption is not None else _psnr(row)
            _tile(axes[r][c], image, row, f"{_short(label)}\n{second}")
    return save_figure(fig, out)


def _count_text(counts: dict[str, dict[str, int]]) -> str:
    parts = []
    for label, kinds in counts.items():
        bad = ", ".join(f"{kinds[k]} {k.replace('nonfinite', 'non-finite')}" for k in ("nonfinite", "degenerate")
                        if kinds.get(k))
        parts.append(f"{label}: {bad or 'none black or non-finite'}")
    return "; ".join(parts)


def _failure_cases(df: pd.DataFrame, dirs: list[Path], out: Path) -> Figure:
    spec = Figure("fig1", "Fig. 1 — each method's failure case",
                  "per method, its worst image (a non-finite or degenerate row first, else the lowest PSNR), beside "
                  "the reference and EasyInv's reconstruction of the same image; the paper's point is that each "
                  "baseline has images it cannot invert")
    rows = _sd1_or_any(df)
    labels = _labels(rows)
    if not labels:
        spec.notes.append("skipped: no inversion method in the runs")
        return spec
    spec.setting = _setting(rows)
    easy = next((lb for lb in labels if rows.loc[rows["label"] == lb, "method"].iloc[0] == "easyinv"), None)
    fig = new_figure(5.2, 1.9 * len(labels) + 0.4)
    axes = fig.subplots(len(labels), 3, squeeze=False)
    for r, label in enumerate(labels):
        own = rows[rows["label"] == label]
        failed = own[(own["status"] == "nonfinite") | (own["flag"] == "degenerate")]
        ranked = own[own["status"] == "ok"].sort_values("psnr", kind="stable")
        worst = failed.iloc[0] if len(failed) else (ranked.iloc[0] if len(ranked) else None)
        if worst is None:
            for ax in axes[r]:
                ax.set_axis_off()
            continue
        item = str(worst["item_id"])
        _tile(axes[r][0], _reference(dirs, item), None, f"reference\n{_short(item)}")
        image, row = _image(rows, dirs, label, item)
        kind = _tile(axes[r][1], image, row, f"{_short(label)} (worst)\n{_psnr(row)}")
        spec.notes.append(f"{label}: worst image {item} ({kind}{', ' + _psnr(row) if _psnr(row) else ''})")
        if easy is not None and easy != label:
            image, row = _image(rows, dirs, easy, item)
            _tile(axes[r][2], image, row, f"{_short(easy)}\n{_psnr(row)}")
        else:
            axes[r][2].set_axis_off()
    spec.path = save_figure(fig, out)
    return spec


def _midpoints(df: pd.DataFrame, dirs: list[Path], out: Path, max_items: int = 4) -> Figure:
    spec = Figure("fig2", "Fig. 2 — the latent at the midpoint of the denoising, decoded per method",
                  "the paper's evidence that EasyInv 'converges faster': at step T/2 of the reconstruction its "
                  "decoded latent should already show the image more clearly than DDIM's")
    rows = _sd1_or_any(df)
    labels = _labels(rows)
    found: dict[tuple[str, str], dict[int, Path]] = {}
    for label in labels:
        own = rows[rows["label"] == label]
        raw = str(own["method_label"].iloc[0])
        for run_dir in own["run_dir"].dropna().unique():
            for item, steps in saved_steps(run_dir, raw).items():
                found.setdefault((label, item), {}).update(steps)
    if not found:
        spec.notes.append("skipped: no stored trajectory latents (run with save_latents=[25], as experiment=figures "
                          "does)")
        return spec
    chosen: dict[str, tuple[int, int]] = {}  # per method: (its saved step closest to its midpoint T/2, T)
    for label in labels:
        steps = sorted({s for (lb, _), per in found.items() if lb == label for s in per})
        totals = rows.loc[rows["label"] == label, "num_steps"].dropna()
        if steps:
            total = int(totals.iloc[0]) if len(totals) else max(steps)
            chosen[label] = (min(steps, key=lambda s, t=total: (abs(s - t / 2), s)), total)
    items = [it for it in sorted(rows["item_id"].astype(str).unique())
             if any((lb, safe_name(it)) in found for lb in labels)][:max_items]

    def picture(label: str, item: str) -> np.ndarray | None:
        path = found.get((label, safe_name(item)), {}).get(chosen.get(label, (-1, 0))[0])
        return load_png(path) if path is not None else None

    spec.setting = _setting(rows)
    spec.path = _grid(rows, dirs, items, labels, out, picture,
                         lambda lb: f"step {chosen[lb][0]} of {chosen[lb][1]}" if lb in chosen else "no latent")
    steps_text = ", ".join(f"{lb}: step {step} of {total}" for lb, (step, total) in chosen.items())
    spec.notes.append(f"tiles: the model's VAE decode of the stored reconstruction latent at each method's midpoint "
                      f"({steps_text})")
    return spec


def _white_areas(df: pd.DataFrame, dirs: list[Path], out: Path, family: str, name: str, paper: str,
                 max_items: int = 4) -> Figure:
    spec = Figure(name, paper, "ReNoise returning black images where the input has large white areas (the paper's "
                  "claim); every method's reconstruction of the same images, black (degenerate) and non-finite "
                  f"results counted; white = at least {WHITE_FRACTION:.0%} of pixels with all channels ≥ {WHITE_LEVEL}")
    rows = _model_rows(df, family)
    if rows.empty:
        spec.notes.append(f"skipped: no run on an {FAMILY_NAMES[family]} model among these runs")
        return spec
    white = []
    for item in sorted(rows["item_id"].astype(str).unique()):
        ref = _reference(dirs, item)
        if ref is not None and white_fraction(ref) >= WHITE_FRACTION:
            white.append(item)
    if not white:
        spec.notes.append("skipped: no saved reference image has large white areas")
        return spec
    labels = _labels(rows)
    spec.setting = _setting(rows)
    spec.path = _grid(rows, dirs, white[:max_items], labels, out)
    every = {lb: {} for lb in labels}  # the counts over all white images, not only the shown ones
    for label in labels:
        for item in white:
            match = rows[(rows["label"] == label) & (rows["item_id"] == item)]
            if len(match):
                r = match.iloc[-1]
                kind = _failure_kind(r) or "ok"
                every[label][kind] = every[label].get(kind, 0) + 1
    spec.notes.append(f"{len(white)} white-area image(s): " + ", ".join(white))
    spec.notes.append("black or non-finite reconstructions: " + _count_text(every))
    return spec


def _easyinv_gallery(df: pd.DataFrame, dirs: list[Path], out: Path, max_items: int = 8) -> Figure:
    spec = Figure("fig5", "Fig. 5 — EasyInv on COCO images",
                  "EasyInv's reconstructions of natural photographs (the paper uses COCO): they should keep the "
                  "layout and colours of the reference")
    rows = _sd1_or_any(df)
    easy = rows[rows["method"] == "easyinv"]
    if easy.empty:
        spec.notes.append("skipped: no EasyInv run")
        return spec
    label = _labels(easy)[0]
    items = []
    for item in sorted(easy["item_id"].astype(str).unique()):
        ref = _reference(dirs, item)
        if ref is not None and white_fraction(ref) < WHITE_FRACTION and float(np.std(ref)) > 10:
            items.append(item)
    items = items[:max_items]
    if not items:
        spec.notes.append("skipped: no saved natural (non-white, textured) reference image")
        return spec
    spec.setting = _setting(easy)
    ncols = min(4, len(items))
    nrows = math.ceil(len(items) / ncols)
    fig = new_figure(1.7 * ncols + 0.3, 3.6 * nrows + 0.3)
    axes = fig.subplots(2 * nrows, ncols, squeeze=False)
    for k, item in enumerate(items):
        r, c = 2 * (k // ncols), k % ncols
        _tile(axes[r][c], _reference(dirs, item), None, f"reference\n{_short(item)}")
        image, row = _image(easy, dirs, label, item)
        _tile(axes[r + 1][c], image, row, f"{_short(label)}\n{_psnr(row)}")
    for ax in axes.ravel()[2 * len(items):]:
        ax.set_axis_off()
    spec.path = save_figure(fig, out)
    return spec


def write_paper_figures(run_dirs: str | Path | Sequence[str | Path], out_dir: str | Path) -> dict[str, Path]:
    """``fig1.png`` … ``fig5.png`` and ``figures.md`` in ``out_dir`` from the runs' records and saved PNGs/latents.
    A figure whose inputs are missing is listed in ``figures.md`` with the reason instead."""
    run_dirs = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = _runs_frame(run_dirs)
    dirs = list(dict.fromkeys([*map(Path, run_dirs), *map(Path, df["run_dir"].dropna().unique())]))
    figures = [
        _failure_cases(df, dirs, out / "fig1.png"),
        _midpoints(df, dirs, out / "fig2.png"),
        _white_areas(df, dirs, out / "fig3.png", "sdxl", "fig3",
                     "Fig. 3 — images with large white areas on SD-XL"),
        _white_areas(df, dirs, out / "fig4.png", "sd1", "fig4",
                     "Fig. 4 — images with large white areas on SD-1.4"),
        _easyinv_gallery(df, dirs, out / "fig5.png"),
    ]
    lines = ["# EasyInv's figures, reproduced", "",
             f"From the records and PNGs under {', '.join(str(d) for d in run_dirs)}. Each figure names the paper "
             "figure it reproduces, the model and settings it was made with, and what to look for.", ""]
    for fig in figures:
        lines += [f"## {fig.name}: {fig.paper}", ""]
        if fig.setting:
            lines += [f"- Setting: {fig.setting}"]
        lines += [f"- Look for: {fig.look_for}"] + [f"- {note}" for note in fig.notes] + [""]
        if fig.path is not None:
            lines += [f"![{fig.name}]({fig.path.name})", ""]
    (out / "figures.md").write_text("\n".join(lines))
    written = {fig.name: fig.path for fig in figures if fig.path is not None}
    written["figures_md"] = out / "figures.md"
    return written
