"""EasyInv's Table 1 (methods) and Table 2 (precision) from records, beside the published numbers, as Markdown,
LaTeX and CSV; and the comparison of a new ``table1.csv`` with a committed reference.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from easyinv.report.columns import (
    CEILING,
    DAGGER_NOTE,
    PAPER_ORDER,
    PRECISION_ORDER,
    TIME,
    Metric,
    declaration,
    metrics,
    norm_precision,
    paired_metrics,
    shown_pairs,
    table1_metrics,
)
from easyinv.report.paired import PAIR_STATS, PairedSettings, check_baseline, paired_columns, psnr_ceilings
from easyinv.report.styles import LATEX, MARKDOWN, Style, markdown_grid, metric_cell, number, numbers, pair_counts
from easyinv.report.summary import summarize, with_labels

__all__ = [
    "csv_columns",
    "PAIRED_NOTE",
    "paired_note",
    "PAPER_SETTINGS",
    "PUBLISHED_RECONSTRUCTION",
    "compare_tables",
    "display",
    "join_published",
    "load_paper",
    "markdown_table",
    "pair_baseline",
    "pair_cell",
    "pairs_cell",
    "table1",
    "table2",
    "write_table",
]

log = logging.getLogger(__name__)


def _sort_key(method: Any, precision: Any) -> tuple[int, int]:
    name = str(method)
    rank = PAPER_ORDER.index(name) if name in PAPER_ORDER else (len(PAPER_ORDER) + (2 if name == CEILING else 1))
    prec = norm_precision(precision)
    return rank, PRECISION_ORDER.index(prec) if prec in PRECISION_ORDER else len(PRECISION_ORDER)


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
            t["precision"] = t["precision"].map(norm_precision)
            tables[name] = t
        else:
            log.info("no published numbers at %s", path)
    published = [pd.read_csv(Path(paper_dir) / f"{name}.csv") for name in PUBLISHED_RECONSTRUCTION
                 if (Path(paper_dir) / f"{name}.csv").is_file()]
    if published:
        tables["published"] = pd.concat(published, ignore_index=True)
    return tables


def _join_paper(summary: pd.DataFrame, paper: pd.DataFrame | None, on_precision: bool) -> pd.DataFrame:
    """Published numbers beside ours, matched on ``method_label`` (lowercased), the paper's model [and precision].

    Δ = ours − paper. Rows measured on another model (the Gaussian demo, SD-XL, tiny models) get no paper numbers:
    a difference between unlike settings would read as a result; the notes list the published numbers instead.
    """
    out = summary.copy()
    out.attrs["paper"] = paper
    key = out["method_label"].astype(str).str.lower()
    shown = [m.name for m in (*table1_metrics(), TIME)]
    for col in shown:
        out[f"paper_{col}"] = math.nan
    if paper is not None:
        for i, name in key.items():
            match = paper[paper["method"] == name]
            if "model" in match.columns:
                match = match[match["model"] == str(out.at[i, "model"])]
            if on_precision:
                match = match[match["precision"] == norm_precision(out.at[i, "precision"])]
            if len(match):
                for col in shown:  # a metric the paper does not report stays empty
                    out.at[i, f"paper_{col}"] = float(match.iloc[0].get(col, math.nan))
    for col in shown:
        out[f"diff_{col}"] = out[f"{col}_mean"] - out[f"paper_{col}"]
    for metric in table1_metrics():
        if metric.comparable is not None:
            out.loc[~out[metric.comparable], f"diff_{metric.name}"] = math.nan
    return out


def _directions() -> dict[str, bool]:
    """``{metric: lower is better}`` of the paired metrics (their ``pair_*`` columns)."""
    return {m.name: m.lower_is_better for m in paired_metrics()}


def table1(df: pd.DataFrame, paper: Mapping[str, pd.DataFrame] | None = None,
           paired: PairedSettings | None = None) -> pd.DataFrame:
    """Table 1: one row per method configuration (dataset, model, label, precision, device), paper numbers beside;
    with ``paired`` (and a baseline), each row's per-image differences to the baseline method of its cell."""
    df = with_labels(df) if "label" not in df.columns else df
    summary = _ordered(summarize(df), precision_first=True)
    joined = _join_paper(summary, (paper or {}).get("table1"), on_precision=False)
    table = join_published(joined, (paper or {}).get("published"))
    if paired is None or paired.baseline is None:
        return table
    check_baseline([*df["label"], *df["method"]], paired.baseline, paired)
    pairs = paired_columns(df, table, ["dataset", "model", "precision", "device"], "label", paired.baseline,
                           _directions(), paired, baseline_column="method")
    return _with_pairs(table, pairs, df)


# other papers' reconstruction rows (results/paper/<name>.csv: method, model, dataset, label, steps, nfe, lpips, ssim,
# psnr, source, table, setting, provenance), listed under Table 1 of runs on their model
PUBLISHED_RECONSTRUCTION = ("fireflow_table3",)


def join_published(table: pd.DataFrame, published: pd.DataFrame | None) -> pd.DataFrame:
    """Other papers' reconstruction rows beside Table 1: the rows for a model in ``table`` are kept in
    ``attrs["published"]`` (the notes list them with their setting), and a row's numbers fill the paper columns of a
    configuration with the same ``method_label`` (which carries a changed step count), model and dataset only."""
    out = table.copy()
    out.attrs = dict(table.attrs)
    rows = None if published is None else published[published["model"].isin(out["model"].astype(str))]
    out.attrs["published"] = rows if rows is not None and len(rows) else None
    matched = []
    for i in out.index if rows is not None else ():
        match = rows[(rows["method"].str.lower() == str(out.at[i, "method_label"]).lower())
                     & (rows["model"] == str(out.at[i, "model"])) & (rows["dataset"] == str(out.at[i, "dataset"]))]
        quality = [m.name for m in table1_metrics()]
        if len(match) and out.loc[i, [f"paper_{m}" for m in quality]].isna().all():
            for col in quality:
                out.at[i, f"paper_{col}"] = float(match.iloc[0].get(col, math.nan))
                out.at[i, f"diff_{col}"] = out.at[i, f"{col}_mean"] - out.at[i, f"paper_{col}"]
            matched.append(i)
    out.attrs["published_matched"] = matched
    return out


def table2(df: pd.DataFrame, paper: Mapping[str, pd.DataFrame] | None = None,
           paired: PairedSettings | None = None) -> pd.DataFrame | None:
    """Table 2: configurations measured in more than one precision, side by side; None when there are none. With
    ``paired``, each precision's per-image differences to the same configuration in the reference precision (fp32
    when it ran, else the first of ``PRECISION_ORDER``)."""
    df = with_labels(df) if "label" not in df.columns else df
    summary = summarize(df)
    other = ["dataset", "model", "label", "device"]
    counts = summary.groupby(other, dropna=False)["precision"].transform("nunique")
    summary = summary[counts > 1]
    if summary.empty:
        return None
    table = _join_paper(_ordered(summary, precision_first=False), (paper or {}).get("table2"), on_precision=True)
    if paired is None or paired.baseline is None:
        return table
    names = {norm_precision(v): v for v in table["precision"].dropna().unique()}
    reference = next((names[p] for p in PRECISION_ORDER if p in names), None)
    if reference is None:
        return table
    pairs = paired_columns(df, table, other, "precision", str(reference), _directions(), paired)
    return _with_pairs(table, pairs, df)


def _with_pairs(table: pd.DataFrame, pairs: pd.DataFrame, records: pd.DataFrame) -> pd.DataFrame:
    out = pd.concat([table, pairs], axis=1)
    out.attrs = {**table.attrs, "psnr_ceilings": psnr_ceilings(records)}
    return out


# --------------------------------------------------------------------------------------------------------------------
# Formatting


# --------------------------------------------------------------------------------------------------------------------


def _failures(row: pd.Series) -> str:
    kinds = (("nonfinite", "nonfinite"), ("degenerate", "degenerate"), ("error", "error"), ("skipped", "skipped"),
             ("retried", "ok after fp32 retry"))
    parts = [f"{int(row[f'n_{k}'])} {text}" for k, text in kinds if row.get(f"n_{k}", 0)]
    return ", ".join(parts) or "0"


def pair_cell(row: pd.Series, metric: str, style: Style) -> str:
    """``+0.512 [+0.401, +0.623]* (wins 91 %)``: the Hodges–Lehmann shift, its Wilcoxon interval, * where the
    Holm-adjusted signed-rank p is below alpha, and the share of images where the row is better."""
    delta = row[f"pair_{metric}_delta"]
    if pd.isna(delta):
        return style.missing
    lo, hi = row[f"pair_{metric}_lo"], row[f"pair_{metric}_hi"]
    shown = numbers([delta, lo, hi], declaration(metric).decimals, style, signed=True)
    text = shown[0]
    if not (pd.isna(lo) or pd.isna(hi)):
        text += f" [{shown[1]}, {shown[2]}]"
    if row[f"pair_{metric}_significant"] == 1:
        text += "*"
    win = row.get(f"pair_{metric}_win", math.nan)
    if pd.notna(win):
        text += style.escape(f" (wins {100 * win:.0f} %)")
    return text


def pairs_cell(row: pd.Series, compared: tuple[Metric, ...], style: Style) -> str:
    """The pairs behind a row's Δ cells: ``n`` or ``n (k left out)`` when every metric has the same, else per
    metric (:func:`~easyinv.report.styles.pair_counts`)."""
    if row.get("pair_baseline") is None or pd.isna(row.get("pair_baseline")):
        return style.missing
    return pair_counts([(m.label, row[f"pair_{m.name}_n"], row[f"pair_{m.name}_left_out"]) for m in compared],
                       style)


def paper_name(metric: Metric) -> str:
    """A metric's name in the ``Paper X`` header: its label (time: with its unit)."""
    return f"{metric.label} ({metric.unit})" if metric is TIME else metric.label


def pair_baseline(table: pd.DataFrame) -> str | None:
    """The baseline the table's Δ columns compare with (None: no paired columns)."""
    if "pair_baseline" not in table.columns or not table["pair_baseline"].notna().any():
        return None
    return str(table["pair_baseline"].dropna().iloc[0])


def display(table: pd.DataFrame, style: Style = MARKDOWN) -> pd.DataFrame:
    """The printed form of a table1/table2 frame (the HTML report shows the same cells)."""
    return _display(table, style)


def _display(table: pd.DataFrame, style: Style) -> pd.DataFrame:
    """The printed form: identity columns that vary, value ± CI cells, paper numbers and differences, then the
    paired differences to the baseline."""
    cols: dict[str, list[str]] = {}
    varying = [k for k in ("dataset", "model", "precision", "device") if table[k].nunique(dropna=False) > 1]
    cols["Method"] = [style.escape(str(v)) for v in table["label"]]
    for key in varying:
        cols[key.capitalize()] = [style.escape(str(v)) for v in table[key]]
    cols["n"] = [str(int(v)) for v in table["n_ok"]]
    shown = (*table1_metrics(), TIME)
    for metric in shown:
        cols[style.escape(metric.heading)] = [metric_cell(r, metric.name, style) for _, r in table.iterrows()]
    cols["NFE"] = [number(v, 1, style) for v in table["nfe_mean"]]
    cols["ms/NFE"] = [number(v, 2, style) for v in table["ms_per_nfe"]]
    cols[style.escape("non-UNet %")] = [number(100 * v, 1, style) for v in table["non_unet_share"]]
    cols["Failures"] = [_failures(r) for _, r in table.iterrows()]
    if table[[f"paper_{m.name}" for m in shown]].notna().any().any():
        for metric in shown:
            d = 0 if metric is TIME else metric.decimals  # the paper gives whole seconds
            cols[style.escape(f"Paper {paper_name(metric)}")] = [
                number(v, d, style) for v in table[f"paper_{metric.name}"]]
        for metric in shown:
            cols[style.escape(f"Δ {metric.label}")] = [number(v, metric.decimals, style, signed=True)
                                                       for v in table[f"diff_{metric.name}"]]
    baseline = pair_baseline(table)
    if baseline is not None:
        compared = shown_pairs()
        cols[style.escape(f"Pairs vs {baseline}")] = [pairs_cell(r, compared, style) for _, r in table.iterrows()]
        for metric in compared:
            cols[style.escape(f"Δ {metric.label} vs {baseline}")] = [
                pair_cell(r, metric.name, style) for _, r in table.iterrows()]
    return pd.DataFrame(cols)


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
    own = table.drop(index=table.attrs.get("published_matched", []))
    if own[[c for c in own.columns if c.startswith("paper_")]].notna().any().any():
        notes.append(f"Paper: {paper_setting}. Δ = ours − paper.")
    elif paper is not None and len(paper):
        published = "; ".join(
            f"{r.label}{f' ({r.precision})' if 'precision' in paper.columns else ''}: LPIPS {r.lpips:.3f}, "
            f"SSIM {r.ssim:.3f}, PSNR {r.psnr:.3f}, {r.time_s:g} s" for r in paper.itertuples())
        notes.append(f"No row was measured in the paper's setting ({paper_setting}), so no paper columns; "
                     f"published: {published}.")
    if any((table[f"{m.name}_mean"].notna() & ~table[m.comparable]).any()
           for m in table1_metrics() if m.comparable is not None):
        notes.append(f"† {DAGGER_NOTE}")
    published = table.attrs.get("published")
    if published is not None:
        listed = "; ".join(f"{r.label} ({r.steps} steps, {r.nfe} NFE): LPIPS {r.lpips:.4f}, SSIM {r.ssim:.4f}, "
                           f"PSNR {r.psnr:.2f} [{r.source}, {r.table}, {r.setting}, {r.provenance}]"
                           for r in published.itertuples())
        joined = len(table.attrs.get("published_matched", []))
        notes.append(f"Published reconstruction rows on this model, in paper columns only for a row of the same "
                     f"method, step count, model and dataset ({joined} here): {listed}.")
    baseline = pair_baseline(table)
    if baseline is not None:
        notes.append(paired_note(table, baseline))
    return notes


PAIRED_NOTE = ("Δ vs {baseline}: per image, row − {baseline} on the images both finished (Pairs: their number; left "
               "out: images recorded on either side without a value on both), PSNR capped per image at its 8-bit "
               "ceiling (one grey level off at one pixel channel; {ceiling}). Shown: the Hodges–Lehmann shift (median "
               "of the Walsh averages: the typical image's difference) [95 % interval of the Wilcoxon signed-rank "
               "test, per comparison: exact for n ≤ 50 distinct differences; ±∞ below 6 pairs]; * where that test's "
               "two-sided p, Holm-adjusted across the rows compared with the same baseline, is below "
               "report.alpha (unadjusted, p < 0.05 exactly when the interval excludes 0); wins: the share of images "
               "where the row is better, ties half. p and the Holm-adjusted p are in each Δ cell's tooltip in "
               "report.html; the CSV also has the mean difference with a BCa bootstrap interval.")


def paired_note(table: pd.DataFrame, baseline: str) -> str:
    """:data:`PAIRED_NOTE` for ``table``, with the PSNR ceilings its comparisons used."""
    caps = table.attrs.get("psnr_ceilings") or []
    ceiling = ", ".join(f"{c:.2f} dB at {s:g}×{s:g}" for s, c in caps) or "20·log₁₀255 + 10·log₁₀(3·H·W) dB"
    return PAIRED_NOTE.format(baseline=baseline, ceiling=ceiling)


PAPER_SETTINGS = {
    "table1": "EasyInv (arXiv 2408.05159v1) Table 1, SD-1.4, fp16, 2,298 COCO images, RTX 3090",
    "table2": "EasyInv (arXiv 2408.05159v1) Table 2, EasyInv on SD-1.4 in fp32 and fp16",
}
def csv_columns() -> tuple[str, ...]:
    """The columns of ``table1.csv`` (and a sweep's CSV), in order, from the declared metrics."""
    names = [m.name for m in metrics()]
    shown = [m.name for m in (*table1_metrics(), TIME)]
    return (
        "dataset", "model", "method", "method_label", "label", "precision", "device", "config_hash", "n_images",
        "n_ok", "n_skipped", "n_nonfinite", "n_error", "n_degenerate", "n_retried",
        *[f"{m}_{s}" for m in names for s in ("mean", "ci95", "n")],
        *[m.comparable for m in metrics() if m.comparable is not None],
        "time_s_mean", "time_s_ci95", "time_s_n", "nfe_mean", "ms_per_nfe", "non_unet_share",
        *[f"{kind}_{m}" for kind in ("paper", "diff") for m in shown],
        "pair_baseline", *[f"pair_{m.name}_{s}" for m in paired_metrics() for s in PAIR_STATS],
    )


_TITLES = {"table1": "Table 1: inversion methods", "table2": "Table 2: precision"}


def markdown_table(table: pd.DataFrame, name: str = "table1") -> str:
    """The Markdown text of ``<name>.md`` for a table1/table2 frame (caption, table, notes): notebooks show it."""
    caption = _caption(table, _TITLES.get(name, name))
    notes = _notes(table, PAPER_SETTINGS.get(name, "published numbers"))
    warning = table.attrs.get("incomplete")
    md = [f"## {caption[0]}", "", caption[1], "", *([f"**{warning}**", ""] if warning else []),
          markdown_grid(_display(table, MARKDOWN)), ""]
    md += [f"{n}  " if i < len(notes) - 1 else n for i, n in enumerate(notes)]
    return "\n".join(md) + "\n"


def write_table(table: pd.DataFrame, out_dir: str | Path, name: str) -> dict[str, Path]:
    """``<name>.md``, ``<name>.tex`` and ``<name>.csv`` (all columns, full precision) for a table1/table2 frame."""
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
    csv = table[[c for c in csv_columns() if c in table.columns]]
    csv.to_csv(paths["csv"], index=False, lineterminator="\n")  # shortest repr that reads back the same float
    return paths


# --------------------------------------------------------------------------------------------------------------------
# Comparing with a committed reference table


# --------------------------------------------------------------------------------------------------------------------

ROW_KEYS = ("dataset", "model", "label", "precision")


def compared_columns() -> dict[str, int]:
    """The columns :func:`compare_tables` checks and the decimals they are printed in: n, NFE, the Table-1 metrics."""
    return {"n_ok": 0, "nfe_mean": 1, **{f"{m.name}_mean": m.decimals for m in table1_metrics()}}



def compare_tables(new_csv: str | Path, reference_csv: str | Path) -> list[str]:
    """Differences between two ``table1.csv`` in the columns that must not move — n, NFE and the quality means as
    the table prints them (LPIPS, SSIM, PSNR to 3 decimals) — row by row; timing is left out, and so is a metric
    the reference table predates. [] = they match."""
    new, ref = pd.read_csv(new_csv), pd.read_csv(reference_csv)
    key = lambda df: df[list(ROW_KEYS)].astype(str).agg(" / ".join, axis=1)  # noqa: E731
    new.index, ref.index = key(new), key(ref)
    diffs = [f"{row}: missing from the new table" for row in ref.index.difference(new.index)]
    diffs += [f"{row}: not in the reference table" for row in new.index.difference(ref.index)]
    for row in ref.index.intersection(new.index):
        for name, decimals in compared_columns().items():
            if name not in ref.columns:
                continue
            if name not in new.columns:
                diffs.append(f"{row}: {name} missing from the new table")
                continue
            a, b = float(new.at[row, name]), float(ref.at[row, name])
            same = (math.isnan(a) and math.isnan(b)) or a == b or round(a, decimals) == round(b, decimals)
            if not same:
                diffs.append(f"{row}: {name} {a:.{decimals}f} (reference {b:.{decimals}f})")
    return diffs
