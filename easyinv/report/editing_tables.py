"""The editing table: PnPInversion's seven Table-1 metrics per protocol, overall and per edit type, beside the
published rows where the protocol and model match.

Per-image values are stored unscaled in the records; the table scales them as the paper prints them (structure
distance ×10³, background LPIPS ×10³, MSE ×10⁴, SSIM ×10²). Means exclude NaN rows per column (a whole-image mask
has no background), so every metric carries its own n (editing.md §2.3). Values from random DINO / CLIP / LPIPS
models (``edit_metrics.random_for_tests``) carry a † and get no difference to the paper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from easyinv.data.piebench import EDIT_TYPES
from easyinv.report.columns import DEFAULT_PAPER_DIR, EDIT_METRICS, Metric
from easyinv.report.editing_figures import edit_strip
from easyinv.report.paired import PairedSettings, check_baseline, paired_columns, psnr_ceilings
from easyinv.report.styles import LATEX, MARKDOWN, Style, markdown_grid, number, numbers, pair_counts
from easyinv.report.summary import mean_ci

__all__ = ["EDIT_METRICS", "editing_table", "is_editing", "load_paper_edits", "write_editing_report"]

# the columns, as declared in easyinv.metrics (EDIT_METRICS: record key, label, scale as printed, direction,
# decimals, the comparability flag in the records)
GROUP = ("dataset", "model", "protocol", "precision")
PAPER_FILE = "piebench_table1.csv"
PAPER_FILES = (PAPER_FILE, "piebench_flow.csv")  # PnPInversion's Table 1; the flow editors' papers (with NFE)


def is_editing(df: pd.DataFrame) -> pd.Series:
    """Rows written by an editing job (they name a protocol)."""
    return df["protocol"].notna() if "protocol" in df.columns else pd.Series(False, index=df.index)


def load_paper_edits(paper_dir: str | Path | None = DEFAULT_PAPER_DIR) -> pd.DataFrame | None:
    """PnPInversion's Table 1 (and EasyInv's secondary rows) and the flow editors' published rows, or None."""
    paths = [Path(paper_dir) / name for name in PAPER_FILES] if paper_dir is not None else []
    frames = [pd.read_csv(p) for p in paths if p.is_file()]
    return pd.concat(frames, ignore_index=True) if frames else None


def _paper_match(paper: pd.DataFrame, row: pd.Series) -> pd.DataFrame:
    """Published rows of the same protocol (a label's ``[edit overrides]`` left aside) and model, and, where the
    paper gives one, the same NFE per image: one protocol published at two step counts (FireFlow 8 and 15) is two
    settings, told apart by what they cost."""
    head, _, editor = str(row["protocol"]).rpartition("+")
    protocol = f"{head}+{editor.split('[', 1)[0]}"
    match = paper[(paper["protocol"] == protocol) & (paper["model"] == row["model"])]
    if "nfe" in match and len(match):
        nfe = pd.to_numeric(match["nfe"], errors="coerce")
        match = match[nfe.isna() | (nfe == round(float(row.get("nfe_mean", math.nan)), 6))]
    return match


def _flag(ok: pd.DataFrame, column: str | None) -> bool:
    if column is None:
        return True
    return bool(column in ok and len(ok) and ok[column].fillna(False).astype(bool).all())


def summarize_edits(df: pd.DataFrame, by: Sequence[str] = GROUP) -> pd.DataFrame:
    """One row per protocol group: counts by status, mean / 95 % CI / n of each metric over ok, non-NaN rows (in the
    printed scale), the source branch's reconstruction PSNR, NFE and time per image."""
    rows = []
    for key, g in df.groupby(list(by), dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        ok = g[g["status"] == "ok"]
        row: dict[str, Any] = dict(zip(by, key, strict=True))
        row["n_images"], row["n_ok"] = len(g), len(ok)
        for status in ("skipped", "nonfinite", "error"):
            row[f"n_{status}"] = int((g["status"] == status).sum())
        for declared in EDIT_METRICS:
            metric = declared.name
            values = ok[metric].astype("float64") * declared.scale if metric in ok else pd.Series(dtype="float64")
            row[f"{metric}_mean"], row[f"{metric}_ci95"], row[f"{metric}_n"] = mean_ci(values)
            row[f"{metric}_comparable"] = _flag(ok, declared.comparable)
        row["psnr_mean"], row["psnr_ci95"], row["psnr_n"] = mean_ci(ok.get("psnr", []))
        row["nfe_mean"] = float(ok["nfe"].astype("float64").mean()) if len(ok) else math.nan
        timed = ok[~ok["warmup"].fillna(False).astype(bool)]
        row["time_s_mean"], row["time_s_ci95"], row["time_s_n"] = mean_ci(timed["t_total"])
        rows.append(row)
    return pd.DataFrame(rows)


def editing_table(df: pd.DataFrame, paper: pd.DataFrame | None = None, by_type: bool = False,
                  paired: PairedSettings | None = None) -> pd.DataFrame:
    """The editing table (overall, or per ``edit_type`` with ``by_type``), paper values joined on protocol and
    model (overall only: the paper gives no per-type numbers); with ``paired`` (and an ``edit_baseline``), every
    protocol's per-image differences to the baseline protocol on the same images, in the printed scale."""
    by = (*GROUP, "edit_type") if by_type else GROUP
    table = summarize_edits(df, by)
    if paired is not None and paired.edit_baseline is not None and paired.baseline is not None:
        check_baseline(df["protocol"], paired.edit_baseline, paired, key="edit_baseline")
        cell = [c for c in by if c != "protocol"]
        pairs = paired_columns(df, table, cell, "protocol", paired.edit_baseline,
                               {m.name: m.lower_is_better for m in EDIT_METRICS}, paired,
                               scale={m.name: m.scale for m in EDIT_METRICS})
        table = pd.concat([table, pairs], axis=1)
        table.attrs["psnr_ceilings"] = psnr_ceilings(df)
    for declared in EDIT_METRICS:
        table[f"paper_{declared.name}"] = math.nan
    table["paper_source"] = None
    if paper is not None and not by_type:
        for i, row in table.iterrows():
            match = _paper_match(paper, row)
            if len(match):
                for declared in EDIT_METRICS:
                    table.at[i, f"paper_{declared.name}"] = float(match.iloc[0].get(declared.name, math.nan))
                table.at[i, "paper_source"] = str(match.iloc[0]["source"])
    return table


def _cell(row: pd.Series, metric: Metric, style: Style) -> str:
    mean, ci, d = row[f"{metric.name}_mean"], row[f"{metric.name}_ci95"], metric.decimals
    text = number(mean, d, style)
    if math.isfinite(mean) and math.isfinite(ci):
        text += style.pm + number(ci, d, style)
    if math.isfinite(mean) and not row[f"{metric.name}_comparable"]:
        text += style.dagger
    return text


def _failures(row: pd.Series) -> str:
    parts = [f"{int(row[f'n_{k}'])} {k}" for k in ("nonfinite", "error", "skipped") if row.get(f"n_{k}", 0)]
    return ", ".join(parts) or "0"


def display(table: pd.DataFrame, style: Style = MARKDOWN) -> pd.DataFrame:
    """The printed form: protocol (and edit type), n, the eight metrics ± CI (Table 1's seven and the source
    image's CLIP score), reconstruction PSNR, NFE, time, failures; then the paper's values and ours − paper where a
    row matched."""
    cols: dict[str, list[str]] = {"Protocol": [style.escape(str(v)) for v in table["protocol"]]}
    if "edit_type" in table:
        cols["Edit type"] = [style.escape(_type_name(v)) for v in table["edit_type"]]
    for key in ("dataset", "model", "precision"):
        if table[key].nunique(dropna=False) > 1:
            cols[key.capitalize()] = [style.escape(str(v)) for v in table[key]]
    cols["n"] = [str(int(v)) for v in table["n_ok"]]
    for declared in EDIT_METRICS:
        cols[style.escape(declared.heading)] = [_cell(r, declared, style) for _, r in table.iterrows()]
    cols[style.escape("Recon PSNR ↑")] = [number(v, 2, style) for v in table["psnr_mean"]]
    cols["NFE"] = [number(v, 0, style) for v in table["nfe_mean"]]
    cols["Time/img (s)"] = [number(v, 2, style) for v in table["time_s_mean"]]
    cols["Failures"] = [_failures(r) for _, r in table.iterrows()]
    matched = table["paper_source"].notna()
    published = [m for m in EDIT_METRICS if table[f"paper_{m.name}"].notna().any()]
    if matched.any():
        for declared in published:
            cols[style.escape(f"Paper {declared.label}")] = [number(v, declared.decimals, style)
                                                            for v in table[f"paper_{declared.name}"]]
        for declared in published:
            metric = declared.name
            diffs = [(r[f"{metric}_mean"] - r[f"paper_{metric}"]) if r[f"{metric}_comparable"] else math.nan
                     for _, r in table.iterrows()]
            cols[style.escape(f"Δ {declared.label}")] = [number(v, declared.decimals, style, signed=True)
                                                        for v in diffs]
    if "pair_baseline" in table.columns and table["pair_baseline"].notna().any():
        baseline = str(table["pair_baseline"].dropna().iloc[0])
        cols[style.escape(f"Pairs vs {baseline}")] = [_pairs(r, style) for _, r in table.iterrows()]
        for declared in EDIT_METRICS:
            cols[style.escape(f"Δ {declared.label} vs {baseline}")] = [_pair_delta(r, declared, style)
                                                                      for _, r in table.iterrows()]
    return pd.DataFrame(cols)


def _pairs(row: pd.Series, style: Style) -> str:
    if pd.isna(row["pair_baseline"]):
        return style.missing
    return pair_counts([(m.label, row[f"pair_{m.name}_n"], row[f"pair_{m.name}_left_out"]) for m in EDIT_METRICS],
                       style)


def _pair_delta(row: pd.Series, metric: Metric, style: Style) -> str:
    """The compact form: the Hodges–Lehmann shift, * where the Holm-adjusted signed-rank p is below alpha."""
    text = numbers([row[f"pair_{metric.name}_delta"]], metric.decimals, style, signed=True)[0]
    return text + ("*" if row[f"pair_{metric.name}_significant"] == 1 else "")


def _type_name(value: Any) -> str:
    try:
        kind = int(value)
    except (TypeError, ValueError):
        return "—"
    return f"{kind} {EDIT_TYPES.get(kind, '?')}"


def _notes(table: pd.DataFrame, paper: pd.DataFrame | None) -> list[str]:
    notes = ["Means over ok images with a value (NaN rows left out per column: a mask covering the whole image has "
             "no background), ± half the t-based 95 % confidence interval. Structure distance ×10³, background "
             "LPIPS ×10³, MSE ×10⁴, SSIM ×10² as PnPInversion prints them; Recon PSNR: the source branch against "
             "the source image."]
    if not all(table[f"{m.name}_comparable"].all() for m in EDIT_METRICS):
        notes.append("† computed with random DINO / CLIP / LPIPS weights (edit_metrics.random_for_tests): not "
                     "comparable with published numbers; no difference computed.")
    if "pair_baseline" in table.columns and table["pair_baseline"].notna().any():
        baseline = table["pair_baseline"].dropna().iloc[0]
        caps = ", ".join(f"{c:.2f} dB at {s:g}×{s:g}" for s, c in table.attrs.get("psnr_ceilings", []))
        notes.append(f"Δ vs {baseline}: per image, protocol − {baseline} on the images both have a value for (in the "
                     "printed scale, BG PSNR capped per image at the 8-bit ceiling of the whole image: one grey level "
                     f"off at one pixel channel{'; ' + caps if caps else ''}; Pairs: per metric where the metrics "
                     "differ, left out: images without a value on both sides), the Hodges–Lehmann shift (median of "
                     "the Walsh averages: the typical image's difference); * where the two-sided Wilcoxon "
                     "signed-rank p, Holm-adjusted across the protocols compared, is below report.alpha. In the "
                     "CSV (and report.html's Δ tooltips): the shift's 95 % interval (from the same test: it excludes "
                     "0 exactly when the unadjusted p < 0.05), p-values, win rates (the share of images where the "
                     "protocol is better, ties half) and the mean difference with its BCa bootstrap interval.")
    if paper is not None and not table["paper_source"].notna().any():
        notes.append("No row matches a published protocol on its model (the published rows are SD-1.4 / SD-1.5, "
                     "FLUX.1-dev and SD3 on all 700 images; see results/paper/"
                     f"{' and '.join(PAPER_FILES)}).")
    return notes


def write_editing_report(df: pd.DataFrame, out_dir: str | Path, paper_dir: str | Path | None = DEFAULT_PAPER_DIR,
                         figures: bool = True, run_dirs: Sequence[str | Path] = (),
                         paired: PairedSettings | None = None) -> dict[str, Path]:
    """``editing.md/.csv/.tex`` (overall), ``editing_by_type.md/.csv`` and the qualitative strip figure."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paper = load_paper_edits(paper_dir)
    written: dict[str, Path] = {}
    overall = editing_table(df, paper, paired=paired)
    per_type = editing_table(df, None, by_type=True, paired=paired)
    for name, table in (("editing", overall), ("editing_by_type", per_type)):
        table.to_csv(out / f"{name}.csv", index=False)  # full precision
        written[f"{name}_csv"] = out / f"{name}.csv"
        title = "PIE-Bench editing" + (" per edit type" if name.endswith("type") else "")
        text = [f"## {title}", "", markdown_grid(display(table)), "", *[f"- {n}" for n in _notes(table, paper)], ""]
        (out / f"{name}.md").write_text("\n".join(text))
        written[f"{name}_md"] = out / f"{name}.md"
    (out / "editing.tex").write_text(display(overall, LATEX).to_latex(index=False, escape=False))
    written["editing_tex"] = out / "editing.tex"
    if figures:
        path = edit_strip(df, run_dirs, out / "figures" / "editing_strip.png")
        if path is not None:
            written["fig_editing_strip"] = path
    return written
