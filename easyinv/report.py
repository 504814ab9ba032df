"""Tables from records: EasyInv's Table 1 (methods) and Table 2 (precision) beside the published numbers, and sweeps.

Every aggregate is a pure function of the per-image records (``easyinv.records``): quality metrics are averaged
per image (never pooled), with a t-based 95 % confidence interval; timing uses ``ok`` rows that are not the warm-up
image. Output is Markdown, LaTeX and CSV with fixed decimals, so an unchanged run re-reports byte for byte.

Command line: ``easyinv-report RUN_DIR... [--out DIR] [--paper results/paper | none] [--no-figures] [--sweep]``,
or ``easyinv-report RUN_DIR... --check`` for the completeness of sharded or interrupted runs.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from easyinv.completeness import check_runs, format_check, incomplete_note
from easyinv.records import RECORD_FIELDS, SOURCE_COLUMNS, read_records

__all__ = [
    "DEFAULT_PAPER_DIR",
    "load_paper",
    "compare_tables",
    "markdown_table",
    "main",
    "mean_ci",
    "summarize",
    "table1",
    "table2",
    "with_labels",
    "write_report",
    "write_table",
]

log = logging.getLogger(__name__)

DEFAULT_PAPER_DIR = Path(__file__).resolve().parent.parent / "results" / "paper"
QUALITY = ("lpips", "ssim", "psnr")
METRICS = (*QUALITY, "latent_mse")
LOWER_IS_BETTER = {"lpips": True, "ssim": False, "psnr": False, "latent_mse": True, "time_s": True}
PAPER_ORDER = ("ddim", "renoise", "fixed_point", "easyinv")  # the paper's row order; others follow by name
CEILING = "vae_only"  # encode + decode only: the best any inversion can do, listed last
PRECISION_ORDER = ("fp32", "fp16", "bf16")
PRECISION_ALIASES = {"float32": "fp32", "full": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16"}
GROUP_KEYS = ("dataset", "model", "label", "precision", "device")
DAGGER_NOTE = ("LPIPS from a random or unverified VGG trunk (metrics.lpips.random_trunk): not comparable with "
               "published LPIPS; no difference computed.")


# --------------------------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------------------------


def mean_ci(values: Iterable[float], level: float = 0.95) -> tuple[float, float, int]:
    """Mean, half width of the t-based ``level`` confidence interval, and n, over the non-missing values.

    Half width = t_{(1+level)/2, n-1} · s / √n with s the sample standard deviation (ddof 1); NaN when n < 2.
    An infinite value (PSNR of a pixel-identical reconstruction) makes the mean infinite and the interval NaN.
    """
    x = np.asarray(pd.to_numeric(pd.Series(list(values), dtype="object"), errors="coerce"), dtype=float)
    x = x[~np.isnan(x)]
    n = int(x.size)
    if n == 0:
        return math.nan, math.nan, 0
    if not np.isfinite(x).all():
        return float(x.mean()), math.nan, n
    if n == 1:
        return float(x[0]), math.nan, 1
    half = float(stats.t.ppf((1 + level) / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return float(x.mean()), half, n


def _ratio(num: pd.Series, den: pd.Series) -> float:
    valid = num.notna() & den.notna() & (den > 0)
    total = float(den[valid].sum())
    return float(num[valid].sum()) / total if total > 0 else math.nan


def with_labels(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``label``: ``method_label`` (or ``method``), made unique per configuration within a table cell.

    When one label covers several config hashes at the same dataset/model/precision/device (a sweep that kept one
    label), the swept keys that differ are appended, e.g. ``easyinv (method.eta=0.3)``; failing that, the hash.
    """
    df = df.copy()
    df["label"] = df["method_label"].where(df["method_label"].notna(), df["method"]).astype(str)
    extras = _extra_columns(df)
    cell = ["dataset", "model", "precision", "device", "label"]
    for _, sub in df.groupby(cell, dropna=False, sort=False):
        if sub["config_hash"].nunique(dropna=False) <= 1:
            continue
        varying = [c for c in extras if sub[c].nunique(dropna=False) > 1]
        for digest, rows in sub.groupby("config_hash", dropna=False, sort=False):
            first = rows.iloc[0]
            parts = [f"{c}={first[c]}" for c in varying] or [str(digest)[:7]]
            df.loc[rows.index, "label"] = f"{first['label']} ({', '.join(parts)})"
    return df


def _extra_columns(df: pd.DataFrame) -> list[str]:
    """Free record keys that describe a configuration: constant within every config hash (so not ``prompt``)."""
    free = [c for c in df.columns if c not in RECORD_FIELDS and c not in (*SOURCE_COLUMNS, "label")]
    per_config = df.groupby("config_hash", dropna=False)
    return sorted(c for c in free if (per_config[c].nunique(dropna=False) <= 1).all())


def summarize(df: pd.DataFrame, by: Sequence[str] = GROUP_KEYS) -> pd.DataFrame:
    """One row per group of records: counts by status, mean/CI/n of each metric and time, NFE, ms/NFE, overhead.

    - quality (``lpips``, ``ssim``, ``psnr``, ``latent_mse``): per-image values of ``ok`` rows;
    - ``time_s``: ``t_total`` of ``ok`` rows that are not warm-up;
    - ``ms_per_nfe`` = 1000 · Σ unet_seconds / Σ nfe over those timed rows (NFE-weighted, not a mean of ratios);
    - ``non_unet_share`` = 1 − Σ unet_seconds / Σ (t_invert + t_reconstruct): the share of the inversion and
      reconstruction walks spent outside UNet calls (method arithmetic, blending, regularisation, syncs);
    - ``lpips_comparable``: every ``ok`` LPIPS value came from torchvision's pretrained trunk.
    """
    if "label" in by and "label" not in df.columns:
        df = with_labels(df)
    rows = []
    for key, g in df.groupby(list(by), dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        ok = g[g["status"] == "ok"]
        timed = ok[~ok["warmup"].astype(bool)]
        row: dict[str, Any] = dict(zip(by, key, strict=True))
        row["method"] = g["method"].dropna().iloc[0] if g["method"].notna().any() else None
        row["method_label"] = g["method_label"].dropna().iloc[0] if g["method_label"].notna().any() else row["method"]
        row["config_hash"] = ",".join(sorted({str(h) for h in g["config_hash"].dropna()}))
        row["n_images"] = len(g)
        row["n_ok"] = len(ok)
        for status in ("skipped", "nonfinite", "error"):
            row[f"n_{status}"] = int((g["status"] == status).sum())
        row["n_degenerate"] = int((ok["flag"] == "degenerate").sum())  # ok rows, metrics kept, but flat images
        row["n_retried"] = int(ok["retried"].notna().sum())  # ok only after the precision fallback
        for metric in METRICS:
            row[f"{metric}_mean"], row[f"{metric}_ci95"], row[f"{metric}_n"] = mean_ci(ok[metric])
        measured = ok["lpips"].notna()
        row["lpips_comparable"] = bool(measured.any() and ok.loc[measured, "lpips_comparable"].all())
        row["time_s_mean"], row["time_s_ci95"], row["time_s_n"] = mean_ci(timed["t_total"])
        row["nfe_mean"] = float(ok["nfe"].astype("float64").mean()) if ok["nfe"].notna().any() else math.nan
        ms = 1000 * _ratio(timed["unet_seconds"], timed["nfe"].astype("float64"))
        row["ms_per_nfe"] = ms if math.isfinite(ms) else float(timed["ms_per_nfe"].mean())
        walk = timed["t_invert"] + timed["t_reconstruct"]
        row["non_unet_share"] = 1 - _ratio(timed["unet_seconds"].where(walk.notna()), walk)
        rows.append(row)
    return pd.DataFrame(rows)


def _sort_key(method: Any, precision: Any) -> tuple[int, int]:
    name = str(method)
    rank = PAPER_ORDER.index(name) if name in PAPER_ORDER else (len(PAPER_ORDER) + (2 if name == CEILING else 1))
    prec = _norm_precision(precision)
    return rank, PRECISION_ORDER.index(prec) if prec in PRECISION_ORDER else len(PRECISION_ORDER)


def _norm_precision(value: Any) -> str:
    text = str(value).lower()
    return PRECISION_ALIASES.get(text, text)


def _ordered(summary: pd.DataFrame, precision_first: bool) -> pd.DataFrame:
    ranks = [_sort_key(m, p) for m, p in zip(summary["method"], summary["precision"], strict=True)]
    summary = summary.assign(_m=[r[0] for r in ranks], _p=[r[1] for r in ranks])
    order = ["dataset", "model", "_p", "_m", "label"] if precision_first else ["dataset", "model", "_m", "label", "_p"]
    summary = summary.sort_values([*order, "device"], kind="stable", na_position="last")
    return summary.drop(columns=["_m", "_p"]).reset_index(drop=True)


# --------------------------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------------------------


def load_paper(paper_dir: str | Path | None) -> dict[str, pd.DataFrame]:
    """``{"table1": ..., "table2": ...}`` from ``paper_dir`` (empty when it is None or lacks the files)."""
    if paper_dir is None:
        return {}
    tables = {}
    for name in ("table1", "table2"):
        path = Path(paper_dir) / f"{name}.csv"
        if path.is_file():
            t = pd.read_csv(path)
            t["method"] = t["method"].str.lower()
            t["precision"] = t["precision"].map(_norm_precision)
            tables[name] = t
        else:
            log.info("no published numbers at %s", path)
    return tables


def _join_paper(summary: pd.DataFrame, paper: pd.DataFrame | None, on_precision: bool) -> pd.DataFrame:
    """Published numbers beside ours, matched on ``method_label`` (lowercased), the paper's model [and precision].

    Δ = ours − paper. Rows measured on another model (the Gaussian demo, SD-XL, tiny models) get no paper numbers:
    a difference between unlike settings would read as a result; the notes list the published numbers instead.
    """
    out = summary.copy()
    out.attrs["paper"] = paper
    key = out["method_label"].astype(str).str.lower()
    for col in ("lpips", "ssim", "psnr", "time_s"):
        out[f"paper_{col}"] = math.nan
    if paper is not None:
        for i, name in key.items():
            match = paper[paper["method"] == name]
            if "model" in match.columns:
                match = match[match["model"] == str(out.at[i, "model"])]
            if on_precision:
                match = match[match["precision"] == _norm_precision(out.at[i, "precision"])]
            if len(match):
                for col in ("lpips", "ssim", "psnr", "time_s"):
                    out.at[i, f"paper_{col}"] = float(match.iloc[0][col])
    for col in ("lpips", "ssim", "psnr", "time_s"):
        out[f"diff_{col}"] = out[f"{col}_mean"] - out[f"paper_{col}"]
    out.loc[~out["lpips_comparable"], "diff_lpips"] = math.nan
    return out


def table1(df: pd.DataFrame, paper: Mapping[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """Table 1: one row per method configuration (dataset, model, label, precision, device), paper numbers beside."""
    summary = _ordered(summarize(df), precision_first=True)
    return _join_paper(summary, (paper or {}).get("table1"), on_precision=False)


def table2(df: pd.DataFrame, paper: Mapping[str, pd.DataFrame] | None = None) -> pd.DataFrame | None:
    """Table 2: configurations measured in more than one precision, side by side; None when there are none."""
    summary = summarize(df)
    other = ["dataset", "model", "label", "device"]
    counts = summary.groupby(other, dropna=False)["precision"].transform("nunique")
    summary = summary[counts > 1]
    if summary.empty:
        return None
    return _join_paper(_ordered(summary, precision_first=False), (paper or {}).get("table2"), on_precision=True)


# --------------------------------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------------------------------

DECIMALS = {"lpips": 3, "ssim": 3, "psnr": 3, "latent_mse": 5, "time_s": 2}
HEADERS = {"lpips": "LPIPS ↓", "ssim": "SSIM ↑", "psnr": "PSNR ↑", "latent_mse": "latent MSE ↓",
           "time_s": "Time/img (s)"}


@dataclass(frozen=True)
class _Style:
    """How cells are spelled in one output format."""

    latex: bool

    @property
    def pm(self) -> str:
        return r" $\pm$ " if self.latex else " ± "

    @property
    def dagger(self) -> str:
        return r"$^\dagger$" if self.latex else " †"

    @property
    def missing(self) -> str:
        return "--" if self.latex else "—"

    def escape(self, text: str) -> str:
        """Plain text → LaTeX (special characters and the few symbols we print); unchanged for Markdown."""
        if not self.latex:
            return text
        table = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$", "{": r"\{",
                 "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "†": r"$^\dagger$",
                 "−": "$-$", "↓": r"$\downarrow$", "↑": r"$\uparrow$", "Δ": r"$\Delta$", "—": "--"}
        return "".join(table.get(ch, ch) for ch in text)


MARKDOWN = _Style(latex=False)
LATEX = _Style(latex=True)


def _num(value: float, decimals: int, style: _Style, signed: bool = False) -> str:
    if value is not None and math.isinf(value):
        return ("+" if signed and value > 0 else "-" if value < 0 else "") + (r"$\infty$" if style.latex else "∞")
    if value is None or not math.isfinite(value):
        return style.missing
    return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"


def _cell(row: pd.Series, metric: str, style: _Style) -> str:
    d = DECIMALS[metric]
    mean, ci = row[f"{metric}_mean"], row[f"{metric}_ci95"]
    text = _num(mean, d, style)
    if math.isfinite(mean) and math.isfinite(ci):
        text += style.pm + _num(ci, d, style)
    if metric == "lpips" and math.isfinite(mean) and not row["lpips_comparable"]:
        text += style.dagger
    return text


def _failures(row: pd.Series) -> str:
    kinds = (("nonfinite", "nonfinite"), ("degenerate", "degenerate"), ("error", "error"), ("skipped", "skipped"),
             ("retried", "ok after fp32 retry"))
    parts = [f"{int(row[f'n_{k}'])} {text}" for k, text in kinds if row.get(f"n_{k}", 0)]
    return ", ".join(parts) or "0"


def _display(table: pd.DataFrame, style: _Style) -> pd.DataFrame:
    """The printed form: identity columns that vary, value ± CI cells, paper numbers and differences."""
    cols: dict[str, list[str]] = {}
    varying = [k for k in ("dataset", "model", "precision", "device") if table[k].nunique(dropna=False) > 1]
    cols["Method"] = [style.escape(str(v)) for v in table["label"]]
    for key in varying:
        cols[key.capitalize()] = [style.escape(str(v)) for v in table[key]]
    cols["n"] = [str(int(v)) for v in table["n_ok"]]
    for metric in ("lpips", "ssim", "psnr", "time_s"):
        cols[style.escape(HEADERS[metric])] = [_cell(r, metric, style) for _, r in table.iterrows()]
    cols["NFE"] = [_num(v, 1, style) for v in table["nfe_mean"]]
    cols["ms/NFE"] = [_num(v, 2, style) for v in table["ms_per_nfe"]]
    cols[style.escape("non-UNet %")] = [_num(100 * v, 1, style) for v in table["non_unet_share"]]
    cols["Failures"] = [_failures(r) for _, r in table.iterrows()]
    if table[[f"paper_{m}" for m in ("lpips", "ssim", "psnr", "time_s")]].notna().any().any():
        for metric in ("lpips", "ssim", "psnr", "time_s"):
            d = DECIMALS[metric] if metric != "time_s" else 0
            cols[f"Paper {metric.upper() if metric != 'time_s' else 'time (s)'}"] = [
                _num(v, d, style) for v in table[f"paper_{metric}"]]
        for metric in ("lpips", "ssim", "psnr", "time_s"):
            name = {"time_s": "time"}.get(metric, metric.upper())
            cols[style.escape(f"Δ {name}")] = [_num(v, DECIMALS[metric], style, signed=True)
                                               for v in table[f"diff_{metric}"]]
    return pd.DataFrame(cols)


def _markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join(":---" if i == 0 else "---:" for i in range(len(frame.columns))) + "|"
    cells = frame.astype(object).where(frame.notna(), "—").astype(str)
    body = ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False, name=None)]
    return "\n".join([header, rule, *body])


def _caption(table: pd.DataFrame, title: str) -> list[str]:
    fixed = [f"{k}: {table[k].iloc[0]}" for k in ("dataset", "model", "precision", "device")
             if table[k].nunique(dropna=False) == 1 and pd.notna(table[k].iloc[0])]
    return [title, "; ".join(fixed)]


def _notes(table: pd.DataFrame, paper_setting: str) -> list[str]:
    notes = ["Mean ± half width of the t-based 95 % CI over images; PSNR averaged per image. Time: mean recorded "
             "t_total per image over ok images, warm-up excluded. ms/NFE: UNet time per NFE. non-UNet %: share of "
             "invert + reconstruct time outside UNet calls. Failures: images without metrics, by status (nonfinite, "
             "error, skipped), ok images flagged degenerate (flat reconstruction of a textured image), and ok images "
             "that needed the fp32 retry."]
    paper = table.attrs.get("paper")
    if table[[c for c in table.columns if c.startswith("paper_")]].notna().any().any():
        notes.append(f"Paper: {paper_setting}. Δ = ours − paper.")
    elif paper is not None and len(paper):
        published = "; ".join(
            f"{r.label}{f' ({r.precision})' if 'precision' in paper.columns else ''}: LPIPS {r.lpips:.3f}, "
            f"SSIM {r.ssim:.3f}, PSNR {r.psnr:.3f}, {r.time_s:g} s" for r in paper.itertuples())
        notes.append(f"No row was measured in the paper's setting ({paper_setting}), so no paper columns; "
                     f"published: {published}.")
    if (table["lpips_mean"].notna() & ~table["lpips_comparable"]).any():
        notes.append(f"† {DAGGER_NOTE}")
    return notes


PAPER_SETTINGS = {
    "table1": "EasyInv (arXiv 2408.05159v1) Table 1, SD-1.4, fp16, 2,298 COCO images, RTX 3090",
    "table2": "EasyInv (arXiv 2408.05159v1) Table 2, EasyInv on SD-1.4 in fp32 and fp16",
}
CSV_COLUMNS = (
    "dataset", "model", "method", "method_label", "label", "precision", "device", "config_hash", "n_images", "n_ok",
    "n_skipped", "n_nonfinite", "n_error", "n_degenerate", "n_retried",
    *[f"{m}_{s}" for m in METRICS for s in ("mean", "ci95", "n")],
    "lpips_comparable", "time_s_mean", "time_s_ci95", "time_s_n", "nfe_mean", "ms_per_nfe", "non_unet_share",
    *[f"{kind}_{m}" for kind in ("paper", "diff") for m in ("lpips", "ssim", "psnr", "time_s")],
)


_TITLES = {"table1": "Table 1: inversion methods", "table2": "Table 2: precision"}


def markdown_table(table: pd.DataFrame, name: str = "table1") -> str:
    """The Markdown text of ``<name>.md`` for a table1/table2 frame (caption, table, notes): notebooks show it."""
    caption = _caption(table, _TITLES.get(name, name))
    notes = _notes(table, PAPER_SETTINGS.get(name, "published numbers"))
    warning = table.attrs.get("incomplete")
    md = [f"## {caption[0]}", "", caption[1], "", *([f"**{warning}**", ""] if warning else []),
          _markdown(_display(table, MARKDOWN)), ""]
    md += [f"{n}  " if i < len(notes) - 1 else n for i, n in enumerate(notes)]
    return "\n".join(md) + "\n"


def write_table(table: pd.DataFrame, out_dir: str | Path, name: str) -> dict[str, Path]:
    """``<name>.md``, ``<name>.tex`` and ``<name>.csv`` (all columns, 6 decimals) for a table1/table2 frame."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    title, setting = _TITLES.get(name, name), PAPER_SETTINGS.get(name, "published numbers")
    caption, notes = _caption(table, title), _notes(table, setting)
    paths = {"md": out_dir / f"{name}.md", "tex": out_dir / f"{name}.tex", "csv": out_dir / f"{name}.csv"}
    paths["md"].write_text(markdown_table(table, name), encoding="utf-8")
    shown = _display(table, LATEX)
    latex = shown.to_latex(index=False, escape=False, column_format="l" + "r" * (shown.shape[1] - 1))
    warning = [table.attrs["incomplete"]] if table.attrs.get("incomplete") else []
    visible_notes = " ".join(LATEX.escape(n) for n in [*warning, *notes])
    tex = [f"% {caption[0]}; {caption[1]}", latex.rstrip(), rf"\par{{\footnotesize {visible_notes}}}"]
    paths["tex"].write_text("\n".join(tex) + "\n", encoding="utf-8")
    csv = table[[c for c in CSV_COLUMNS if c in table.columns]]
    csv.to_csv(paths["csv"], index=False, float_format="%.6f", lineterminator="\n")
    return paths


# --------------------------------------------------------------------------------------------------------------------
# Comparing with a committed reference table
# --------------------------------------------------------------------------------------------------------------------

ROW_KEYS = ("dataset", "model", "label", "precision")
COMPARED = {"n_ok": 0, "nfe_mean": 1, "lpips_mean": DECIMALS["lpips"], "ssim_mean": DECIMALS["ssim"],
            "psnr_mean": DECIMALS["psnr"]}


def compare_tables(new_csv: str | Path, reference_csv: str | Path) -> list[str]:
    """Differences between two ``table1.csv`` in the columns that must not move — n, NFE and the quality means as
    the table prints them (LPIPS, SSIM, PSNR to 3 decimals) — row by row; timing is left out. [] = they match."""
    new, ref = pd.read_csv(new_csv), pd.read_csv(reference_csv)
    key = lambda df: df[list(ROW_KEYS)].astype(str).agg(" / ".join, axis=1)  # noqa: E731
    new.index, ref.index = key(new), key(ref)
    diffs = [f"{row}: missing from the new table" for row in ref.index.difference(new.index)]
    diffs += [f"{row}: not in the reference table" for row in new.index.difference(ref.index)]
    for row in ref.index.intersection(new.index):
        for column, decimals in COMPARED.items():
            a, b = float(new.at[row, column]), float(ref.at[row, column])
            same = (math.isnan(a) and math.isnan(b)) or a == b or round(a, decimals) == round(b, decimals)
            if not same:
                diffs.append(f"{row}: {column} {a:.{decimals}f} (reference {b:.{decimals}f})")
    return diffs


# --------------------------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------------------------


def write_report(
    run_dirs: str | Path | Iterable[str | Path],
    out_dir: str | Path,
    paper_dir: str | Path | None = DEFAULT_PAPER_DIR,
    figures: bool = True,
    sweep: bool | None = None,
    items: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Read every run's records and write Table 1 (+ Table 2 with ≥2 precisions, + the sweep) and the figures into
    ``out_dir``. Returns ``{"table1_md": path, ..., "fig_<stem>": path}``.

    ``sweep``: None writes the sweep table, heatmaps and curves when a configuration key varies; True demands them
    (ValueError when nothing varies); False leaves them out.
    """
    from easyinv.sweeps import sweep_table, swept_keys, write_sweep  # sweeps build on this module: import lazily

    run_dirs = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    df = read_records(run_dirs)
    if df.empty:
        raise ValueError(f"no records under {[str(d) for d in run_dirs]}")
    written: dict[str, Path] = {}
    if "protocol" in df.columns:  # editing jobs' rows get the editing table (easyinv.editing.report)
        from easyinv.editing.report import is_editing, write_editing_report

        editing = is_editing(df)
        if editing.any():
            written.update(write_editing_report(df[editing], out_dir, paper_dir=paper_dir, figures=figures,
                                                run_dirs=run_dirs))
        df = df[~editing].drop(columns="protocol")
        if df.empty:
            return written
    keys = swept_keys(df) if sweep is not False else []
    if sweep and not keys:  # checked before anything is written
        raise ValueError(f"no configuration key varies in the records under {[str(d) for d in run_dirs]}: each "
                         "dataset/model/method/precision was run with one configuration, so there is no sweep")
    paper = load_paper(paper_dir)
    incomplete = incomplete_note(check_runs(run_dirs), run_dirs)
    if incomplete:
        log.warning("%s", incomplete)
    t1 = table1(df, paper)
    t1.attrs["incomplete"] = incomplete
    for kind, path in write_table(t1, out_dir, "table1").items():
        written[f"table1_{kind}"] = path
    t2 = table2(df, paper)
    if t2 is not None:
        t2.attrs["incomplete"] = incomplete
    if t2 is None:
        log.info("Table 2 skipped: no configuration was measured in more than one precision")
    else:
        written.update({f"table2_{kind}": path for kind, path in write_table(t2, out_dir, "table2").items()})
    table = sweep_table(df, keys) if keys else None
    if table is not None:
        written.update(write_sweep(table, out_dir))
    if figures:
        from easyinv.figures import write_figures, write_sweep_figures  # figures import this module: import lazily

        made = write_figures(df, run_dirs, Path(out_dir) / "figures", items=items)
        if table is not None:
            made += write_sweep_figures(table, Path(out_dir) / "figures")
        for path in made:
            written[f"fig_{path.stem}"] = path
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``easyinv-report``: tables (and figures) from finished or interrupted runs."""
    parser = argparse.ArgumentParser(prog="easyinv-report", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path,
                        help="run directories (searched for records*.jsonl, every shard's)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: FIRST_RUN_DIR/report)")
    parser.add_argument("--paper", default=str(DEFAULT_PAPER_DIR), help="published numbers dir, or 'none'")
    parser.add_argument("--no-figures", action="store_true", help="tables only")
    parser.add_argument("--sweep", action="store_true",
                        help="require a sweep: write sweep.md/.csv, best_configs.json, heatmaps and curves, and fail "
                             "if no configuration key varies (default: written whenever one varies)")
    parser.add_argument("--items", nargs="+", default=None, metavar="ID",
                        help="image ids for the qualitative grid (default: the first few with saved PNGs)")
    parser.add_argument("--check", action="store_true",
                        help="only check completeness: per configuration, the counts of ok/skipped/nonfinite/error/"
                             "missing rows across every shard's records file against the item list in run.json; "
                             "exit 1 when a row is missing or duplicated (or the item list is unknown)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.check:
        try:
            results = check_runs(args.run_dirs)
        except FileNotFoundError as e:
            raise SystemExit(f"easyinv-report: {e}") from None
        print(format_check(results, args.run_dirs))
        return 0 if results and all(r.complete for r in results) else 1
    out = args.out or args.run_dirs[0] / "report"
    paper = None if args.paper.lower() == "none" else args.paper
    try:
        written = write_report(args.run_dirs, out, paper_dir=paper, figures=not args.no_figures,
                               sweep=True if args.sweep else None, items=args.items)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"easyinv-report: {e}") from None
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
