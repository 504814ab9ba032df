"""Paired comparisons: per image, a method minus a baseline, on the images both finished.

Every method runs on the same images, so whether a small gap between two means is real is a paired question. For
each metric and each non-baseline row of a table this module gives the mean per-image difference (method −
baseline), a seeded percentile paired-bootstrap CI, the two-sided Wilcoxon signed-rank p-value (scipy, its default
``zero_method="wilcox"``: zero differences are dropped), the win rate (share of images where the method is better,
ties count half) and Holm's correction across the rows of one table cell. An image with a value on one side only
is left out and counted.

Infinite values (the PSNR of a pixel-identical reconstruction) are kept: two equal values differ by 0 (∞ − ∞ too),
an infinite difference makes the mean infinite and the CI undefined, and the Wilcoxon test, which only needs the
order of the differences, ranks infinite differences above every finite one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["DEFAULT", "PAIR_STATS", "PairedSettings", "holm", "paired_columns", "paired_difference", "paired_stats"]

PAIR_STATS = ("delta", "lo", "hi", "p", "p_holm", "win", "n", "left_out", "significant")


@dataclass(frozen=True)
class PairedSettings:
    """The ``report.*`` keys of the paired comparisons; ``baseline=None`` turns them off.

    ``baseline``: the method (label) every reconstruction row is compared with; ``edit_baseline``: the protocol of
    the editing tables; ``bootstrap``: resamples of the CI; ``alpha``: the Holm-corrected level of the mark;
    ``seed``: the bootstrap's generator, the same for every comparison so a table re-reports byte for byte.
    """

    baseline: str | None = "ddim"
    edit_baseline: str | None = "ddim+free+p2p"
    bootstrap: int = 10_000
    alpha: float = 0.05
    seed: int = 0
    level: float = 0.95


def paired_difference(method: pd.Series, baseline: pd.Series) -> tuple[np.ndarray, int]:
    """Method − baseline on the index labels (image ids) where both have a value, and how many labels have a value on
    one side only. Equal values differ by 0 (so do two infinite PSNRs)."""
    a = pd.to_numeric(method, errors="coerce").astype("float64")
    b = pd.to_numeric(baseline, errors="coerce").astype("float64")
    has_a, has_b = a.dropna().index, b.dropna().index
    both = has_a.intersection(has_b)
    left_out = len(has_a.union(has_b)) - len(both)
    x, y = a.loc[both].to_numpy(), b.loc[both].to_numpy()
    with np.errstate(invalid="ignore"):
        diff = np.where(x == y, 0.0, x - y)
    return diff, int(left_out)


def _bootstrap_means(diff: np.ndarray, resamples: int, seed: int, chunk: int = 500) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = diff.size
    means = np.empty(resamples)
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        means[start:stop] = diff[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    return means


def _wilcoxon_p(diff: np.ndarray) -> float:
    if not np.any(diff != 0):
        return math.nan  # no non-zero difference: nothing to test
    finite = diff[np.isfinite(diff)]
    if finite.size < diff.size:  # the test uses order only: infinite differences rank above every finite one
        big = 2 * (np.abs(finite).max() if finite.size else 1.0) + 1
        diff = np.where(np.isfinite(diff), diff, np.sign(diff) * big)
    return float(stats.wilcoxon(diff, alternative="two-sided").pvalue)


DEFAULT = PairedSettings()


def paired_stats(diff: np.ndarray, lower_is_better: bool, settings: PairedSettings = DEFAULT) -> dict[str, Any]:
    """Mean difference, percentile-bootstrap CI (``lo``, ``hi``), Wilcoxon p, win rate and n of one comparison.

    The CI is the (1 ± level)/2 quantiles of the means of ``settings.bootstrap`` resamples of the pairs with
    replacement (seeded); it is NaN with fewer than 2 pairs or an infinite difference.
    """
    diff = np.asarray(diff, dtype="float64")
    n = int(diff.size)
    out: dict[str, Any] = {"delta": math.nan, "lo": math.nan, "hi": math.nan, "p": math.nan, "win": math.nan, "n": n}
    if n == 0:
        return out
    with np.errstate(invalid="ignore"):
        out["delta"] = float(diff.mean())
    better = diff < 0 if lower_is_better else diff > 0
    out["win"] = float((better.sum() + 0.5 * (diff == 0).sum()) / n)
    if n >= 2 and np.isfinite(diff).all():
        means = _bootstrap_means(diff, settings.bootstrap, settings.seed)
        tail = (1 - settings.level) / 2
        out["lo"], out["hi"] = (float(q) for q in np.quantile(means, [tail, 1 - tail]))
    out["p"] = _wilcoxon_p(diff)
    return out


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN entries stay NaN and do not count towards m).

    Sorted ascending p₍₁₎ ≤ … ≤ p₍ₘ₎: adjusted p₍ᵢ₎ = max_{j≤i} min(1, (m − j + 1) · p₍ⱼ₎).
    """
    p = np.asarray(pvalues, dtype="float64")
    out = np.full(p.shape, math.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    running = 0.0
    for rank, i in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def paired_columns(
    records: pd.DataFrame,
    table: pd.DataFrame,
    cell: Sequence[str],
    member: str,
    baseline: str,
    metrics: Mapping[str, bool],
    settings: PairedSettings,
    scale: Mapping[str, float] | None = None,
    baseline_column: str | None = None,
) -> pd.DataFrame:
    """``pair_<metric>_<stat>`` columns (``PAIR_STATS``) and ``pair_baseline`` for every row of ``table``.

    A row is compared with the row of its ``cell`` (the identity columns it shares with its baseline) whose
    ``member`` column (failing that, its ``baseline_column``, e.g. ``method`` beside ``label``) equals
    ``baseline``; values are the ``ok`` records' per-image ``metrics`` (name → lower is better), times ``scale``.
    Holm's correction runs across the compared rows of one cell, per metric. Rows without a baseline in their
    cell, and the baseline, get NaN.
    """
    scale = dict(scale or {})
    ok = records[records["status"] == "ok"]
    columns = {f"pair_{m}_{s}": [math.nan] * len(table) for m in metrics for s in PAIR_STATS}
    columns["pair_baseline"] = [None] * len(table)

    def select(frame: pd.DataFrame, key: tuple) -> pd.DataFrame:
        return frame[np.logical_and.reduce([_equal(frame[c], v) for c, v in zip((*cell, member), key, strict=True)])]

    def values(key: tuple, metric: str) -> pd.Series:
        rows = select(ok, key)
        series = pd.to_numeric(rows[metric], errors="coerce").astype("float64") * scale.get(metric, 1.0)
        return series.groupby(rows["item_id"].to_numpy()).mean()

    cells = [table[c].map(str).to_numpy(dtype=object) for c in cell]  # a missing value ("nan") is a cell too
    for _, positions in pd.Series(range(len(table))).groupby(cells, sort=False, dropna=False):
        rows = table.iloc[positions.to_numpy()]
        base = rows[rows[member].astype(str) == str(baseline)]
        if base.empty and baseline_column:
            base = rows[rows[baseline_column].astype(str) == str(baseline)]
        if base.empty:
            continue
        base_key = tuple(base.iloc[0][[*cell, member]])
        compared = [int(p) for p in positions if table.index[p] != base.index[0]]  # by row, so NaN keys are safe
        for metric, lower in metrics.items():
            if metric not in ok.columns:
                continue
            base_values = values(base_key, metric)
            ps = []
            for pos in compared:
                key = tuple(table.iloc[pos][[*cell, member]])
                diff, _ = paired_difference(values(key, metric), base_values)
                # every image recorded on either side (a failure too) that is not a pair is left out and counted
                either = set(select(records, key)["item_id"]) | set(select(records, base_key)["item_id"])
                left_out = len(either) - diff.size
                result = paired_stats(diff, lower, settings)
                for stat in ("delta", "lo", "hi", "p", "win", "n"):
                    columns[f"pair_{metric}_{stat}"][pos] = result[stat]
                columns[f"pair_{metric}_left_out"][pos] = left_out
                ps.append(result["p"])
            for pos, adjusted in zip(compared, holm(ps), strict=True):
                columns[f"pair_{metric}_p_holm"][pos] = adjusted
                columns[f"pair_{metric}_significant"][pos] = (
                    float(adjusted < settings.alpha) if not math.isnan(adjusted) else math.nan)
        for pos in compared:
            columns["pair_baseline"][pos] = str(base.iloc[0][member])
    return pd.DataFrame(columns, index=table.index)


def _equal(column: pd.Series, value: Any) -> np.ndarray:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return column.isna().to_numpy()
    return (column == value).to_numpy()
