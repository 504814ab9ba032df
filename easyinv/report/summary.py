"""Per-configuration summaries of per-image records: counts by status, mean and t-based 95 % CI of every metric,
time, NFE, ms per NFE and the share of time outside the network.

Quality metrics are averaged per image (never pooled); timing uses ``ok`` rows that are not the warm-up image.
Every table, sweep and figure summarises through :func:`summarize`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from easyinv.report.columns import GROUP_KEYS, metrics
from easyinv.run.records import RECORD_FIELDS, SOURCE_COLUMNS

__all__ = ["extra_columns", "mean_ci", "summarize", "with_labels"]


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
    extras = extra_columns(df)
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


def extra_columns(df: pd.DataFrame) -> list[str]:
    """Free record keys that describe a configuration: constant within every config hash (so not ``prompt``)."""
    fixed = {*RECORD_FIELDS, *SOURCE_COLUMNS, "label", *(m.name for m in metrics()),
             *(m.comparable for m in metrics() if m.comparable)}
    free = [c for c in df.columns if c not in fixed]
    per_config = df.groupby("config_hash", dropna=False)
    return sorted(c for c in free if (per_config[c].nunique(dropna=False) <= 1).all())


def summarize(df: pd.DataFrame, by: Sequence[str] = GROUP_KEYS) -> pd.DataFrame:
    """One row per group of records: counts by status, mean/CI/n of each metric and time, NFE, ms/NFE, overhead.

    - every declared metric (``easyinv.metrics``: ``lpips``, ``ssim``, ``psnr``, ``latent_mse``, ...): per-image
      values of ``ok`` rows (none where the records predate the metric);
    - ``time_s``: ``t_total`` of ``ok`` rows that are not warm-up;
    - ``ms_per_nfe`` = 1000 · Σ unet_seconds / Σ nfe over those timed rows (NFE-weighted, not a mean of ratios);
    - ``non_unet_share`` = 1 − Σ unet_seconds / Σ (t_invert + t_reconstruct): the share of the inversion and
      reconstruction walks spent outside UNet calls (method arithmetic, blending, regularisation, syncs);
    - a metric's ``comparable`` column (``lpips_comparable``): every ``ok`` value of it is comparable with published
      ones (LPIPS: from torchvision's pretrained trunk).
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
        for metric in metrics():
            name = metric.name
            row[f"{name}_mean"], row[f"{name}_ci95"], row[f"{name}_n"] = mean_ci(ok.get(name, []))
            if metric.comparable is not None:
                measured = ok[name].notna() if name in ok else pd.Series(False, index=ok.index)
                flags = ok.loc[measured, metric.comparable] if metric.comparable in ok else pd.Series([False])
                row[metric.comparable] = bool(measured.any() and flags.fillna(False).astype(bool).all())
        row["time_s_mean"], row["time_s_ci95"], row["time_s_n"] = mean_ci(timed["t_total"])
        row["nfe_mean"] = float(ok["nfe"].astype("float64").mean()) if ok["nfe"].notna().any() else math.nan
        ms = 1000 * _ratio(timed["unet_seconds"], timed["nfe"].astype("float64"))
        row["ms_per_nfe"] = ms if math.isfinite(ms) else float(timed["ms_per_nfe"].mean())
        walk = timed["t_invert"] + timed["t_reconstruct"]
        row["non_unet_share"] = 1 - _ratio(timed["unet_seconds"].where(walk.notna()), walk)
        rows.append(row)
    return pd.DataFrame(rows)
