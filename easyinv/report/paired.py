"""Paired comparisons: per image, a method minus a baseline, on the images both finished.

Every method runs on the same images, so whether a small gap between two rows is real is a paired question. For
each metric and each non-baseline row of a table this module gives one family of statistics, all from the Wilcoxon
signed-rank test of the per-image differences d (method − baseline):

- ``delta``: the Hodges–Lehmann shift, the median of the n(n+1)/2 Walsh averages (dᵢ + dⱼ)/2, i ≤ j: the shift
  of the typical image (the pseudo-median), which a few images far off cannot drag;
- ``lo``, ``hi``: its ``level`` confidence interval, the set of shifts θ the signed-rank test of d − θ does not
  reject, read off the sorted Walsh averages;
- ``p``: the same test at θ = 0, so that ``lo ≤ 0 ≤ hi`` exactly when ``p ≥ 1 − level`` (by construction, not
  by luck: both come from one p-value function of the count of positive Walsh averages).

The test: T⁺(θ) = #{Walsh averages > θ}. Null distribution: the exact one for n ≤ 50 differences that are all
distinct (coverage of the interval ≥ ``level`` at any n, for continuous symmetric differences); otherwise the
normal one, mean n(n+1)/4 and variance n(n+1)(2n+1)/24 − Σ(t³ − t)/48 over groups of t equal differences, without
continuity correction (scipy's ``wilcoxon`` gives the same p where no difference is 0 and no two are of equal size).
Walsh averages equal to θ (zero differences, two differences of equal size and opposite sign) are counted on the
side of no effect: the p-value is the largest over the ways of breaking those ties, so the interval is closed.

Also: ``win``, the share of pairs where the method is better (ties count half); ``mean`` with a seeded BCa paired
bootstrap interval (``mean_lo``, ``mean_hi``; ``bootstrap`` resamples), in the CSV only; Holm's correction of
``p`` across the rows of one table cell (``p_holm``, ``significant``). An image with a value on one side only is
left out and counted.

PSNR is capped per image at the quantisation ceiling of its 8-bit image (:func:`psnr_ceiling`): one grey level off
at one pixel channel, so an exact reconstruction (PSNR ∞) counts as that ceiling and every difference is finite.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats

from easyinv.run.files import MANIFEST_FILE

__all__ = [
    "DEFAULT",
    "DEFAULT_SIDE",
    "PAIR_STATS",
    "PairedSettings",
    "check_baseline",
    "holm",
    "image_sides",
    "paired_columns",
    "paired_difference",
    "paired_stats",
    "psnr_ceiling",
    "psnr_ceilings",
    "signed_rank",
]

# the CSV's pair_<metric>_<stat> columns; report.html reads them by these names
PAIR_STATS = ("delta", "lo", "hi", "p", "p_holm", "win", "n", "left_out", "significant", "mean", "mean_lo", "mean_hi")
EXACT_MAX_N = 50  # the exact null distribution up to here (as scipy's wilcoxon), for distinct differences
DEFAULT_SIDE = 1024  # image side when neither a record nor its run.json says it: the largest configured model's


@dataclass(frozen=True)
class PairedSettings:
    """The ``report.*`` keys of the paired comparisons; ``baseline=None`` turns them off.

    The defaults here are the report's defaults, wherever a report is written: ``easyinv-report``'s flags and the
    end-of-run report (``easyinv.callbacks``) take them from this class, and ``configs/config.yaml``'s ``report:``
    keys, which Hydra needs spelled out to accept overrides, must equal them (``tests/test_report_defaults.py``).

    ``baseline``: the method (label) every reconstruction row is compared with; ``edit_baseline``: the protocol of
    the editing tables; ``bootstrap``: resamples of the mean's BCa interval (CSV); ``alpha``: the Holm-adjusted
    level of the mark; ``seed``: the bootstrap's generator, the same for every comparison so a table re-reports byte
    for byte; ``level``: of the Hodges–Lehmann interval; ``require``: the keys (``baseline``, ``edit_baseline``)
    whose value must name a row, an error otherwise (given to ``easyinv-report``), rather than no Δ columns (the
    default ``ddim`` on runs without DDIM).
    """

    baseline: str | None = "ddim"
    edit_baseline: str | None = "ddim+free+p2p"
    bootstrap: int = 10_000
    alpha: float = 0.05
    seed: int = 0
    level: float = 0.95
    require: frozenset[str] = frozenset()

    @classmethod
    def from_options(cls, options: Mapping[str, Any], ignore: Iterable[str] = ()) -> PairedSettings:
        """From a config's ``report`` section: its keys that name fields here, the rest at their defaults; a key
        that is neither a field nor in ``ignore`` (``html``) is a ValueError naming it."""
        names = [f.name for f in fields(cls) if f.name != "require"]
        unknown = sorted(set(options) - set(names) - set(ignore))
        if unknown:
            raise ValueError(f"report: unknown keys {unknown}; allowed: {', '.join([*names, *ignore])}")
        return cls(**{name: options[name] for name in names if name in options})

    def __post_init__(self) -> None:
        if isinstance(self.bootstrap, bool) or not isinstance(self.bootstrap, int | np.integer) or self.bootstrap < 1:
            raise ValueError(f"report.bootstrap (--bootstrap) must be a whole number of resamples ≥ 1, "
                             f"got {self.bootstrap!r}")
        for name, value in (("alpha", self.alpha), ("level", self.level)):
            if not isinstance(value, int | float) or not 0 < value < 1:
                raise ValueError(f"report.{name} (--{name}) must be a number strictly between 0 and 1, got {value!r}")


DEFAULT = PairedSettings()


# --------------------------------------------------------------------------------------------------------------------
# PSNR's cap


def psnr_ceiling(side: float) -> float:
    """PSNR (dB, data range 1) of a ``side`` × ``side`` RGB image that is off by one grey level (1/255) at one
    channel of one pixel: 20·log₁₀(255) + 10·log₁₀(3·side²); the highest finite PSNR of an 8-bit image of that size
    (107.09 dB at 512², 89.03 dB at 64²)."""
    return 20 * math.log10(255) + 10 * math.log10(3 * float(side) ** 2)


@functools.lru_cache(maxsize=256)
def _manifest_side(run_dir: str) -> float | None:
    path = Path(run_dir) / MANIFEST_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for model in (info.get("model"), (info.get("config") or {}).get("model")):
        if isinstance(model, Mapping) and isinstance(model.get("resolution"), int | float):
            return float(model["resolution"])
    return None


def image_sides(records: pd.DataFrame) -> pd.Series:
    """Each record's image side in pixels (images are square at the model's resolution): the record's own
    ``model.resolution`` (a swept resolution), else ``model.resolution`` in its run's ``run.json``, else
    :data:`DEFAULT_SIDE`."""
    side = pd.Series(math.nan, index=records.index, dtype="float64")
    if "model.resolution" in records.columns:
        side = pd.to_numeric(records["model.resolution"], errors="coerce").astype("float64")
    if "run_dir" in records.columns and side.isna().any():
        from_run = records["run_dir"].map(lambda d: _manifest_side(str(d)) if isinstance(d, str | Path) else None)
        side = side.fillna(pd.to_numeric(from_run, errors="coerce").astype("float64"))
    return side.fillna(float(DEFAULT_SIDE))


def psnr_ceilings(records: pd.DataFrame) -> list[tuple[float, float]]:
    """(image side, :func:`psnr_ceiling`) of every image size among the ``ok`` records, for a table's notes."""
    sides = image_sides(records[records["status"] == "ok"]).unique()
    return [(float(s), psnr_ceiling(s)) for s in sorted(sides)]


def _is_psnr(metric: str) -> bool:
    return metric == "psnr" or metric.startswith("psnr_")


# --------------------------------------------------------------------------------------------------------------------
# Differences and their statistics


def paired_difference(method: pd.Series, baseline: pd.Series) -> tuple[np.ndarray, int]:
    """Method − baseline on the index labels (image ids) where both have a finite value, and how many labels have a
    value on one side only (a non-finite value counts as none: cap PSNR first, see :func:`psnr_ceiling`)."""
    a = pd.to_numeric(method, errors="coerce").astype("float64")
    b = pd.to_numeric(baseline, errors="coerce").astype("float64")
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    both = a.index.intersection(b.index)
    left_out = len(a.index.union(b.index)) - len(both)
    return a.loc[both].to_numpy() - b.loc[both].to_numpy(), int(left_out)


@functools.lru_cache(maxsize=64)
def _exact_counts(n: int) -> np.ndarray:
    """Number of sign patterns of ranks 1..n with each T⁺ = 0..n(n+1)/2."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1.0
    for k in range(1, n + 1):
        counts[k:] = counts[k:] + counts[:-k].copy()
    counts.setflags(write=False)
    return counts


def _pvalues(diff: np.ndarray) -> np.ndarray:
    """Two-sided p-value of T⁺ = t for every t = 0..M: a function unimodal around M/2 (the mode's p is 1)."""
    n = diff.size
    m = n * (n + 1) // 2
    _, ties = np.unique(diff, return_counts=True)
    if n <= EXACT_MAX_N and (ties == 1).all():
        counts = _exact_counts(n)
        cdf = np.cumsum(counts) / 2.0**n  # P(T ≤ t)
        sf = np.cumsum(counts[::-1])[::-1] / 2.0**n  # P(T ≥ t)
        return np.minimum(1.0, 2 * np.minimum(cdf, sf))
    var = n * (n + 1) * (2 * n + 1) / 24 - float(((ties**3 - ties) / 48).sum())
    z = np.abs(np.arange(m + 1) - m / 2) / math.sqrt(var)
    return np.minimum(1.0, 2 * special.ndtr(-z))


def signed_rank(diff: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Hodges–Lehmann shift (``delta``), its ``level`` interval (``lo``, ``hi``; ±∞ where the test cannot reject
    any shift at this n, n < 6 at 95 %) and the two-sided signed-rank ``p`` of shift 0, from one p-value function:
    ``lo ≤ 0 ≤ hi`` ⇔ ``p ≥ 1 − level``. ``diff``: finite, non-empty."""
    d = np.asarray(diff, dtype="float64")
    n = d.size
    m = n * (n + 1) // 2
    i, j = np.triu_indices(n)
    walsh = (d[i] + d[j]) / 2  # O(n²) memory: 2.6 M averages for 2,298 images
    del i, j
    pvals = _pvalues(d)
    accepted = np.flatnonzero(pvals >= 1 - level)  # T⁺ values whose shift is not rejected: t_a..t_b
    t_a, t_b = int(accepted[0]), int(accepted[-1])
    ranks = sorted({m // 2, (m - 1) // 2, m - t_b - 1, m - t_a} & set(range(m)))
    walsh.partition(ranks)
    out = {"delta": float(np.median(walsh[[(m - 1) // 2, m // 2]])),
           "lo": float(walsh[m - t_b - 1]) if m - t_b >= 1 else -math.inf,
           "hi": float(walsh[m - t_a]) if t_a >= 1 else math.inf}
    above, at_least = int((walsh > 0).sum()), int((walsh >= 0).sum())  # T⁺(0), with the ties at 0 on either side
    candidates = {min(max(c, above), at_least) for c in (math.floor(m / 2), math.ceil(m / 2))}
    out["p"] = float(max(pvals[c] for c in candidates))
    return out


def _bca_mean(diff: np.ndarray, resamples: int, seed: int, level: float) -> tuple[float, float]:
    """BCa paired-bootstrap interval of the mean difference: ``scipy.stats.bootstrap`` (seeded, in batches of 500
    resamples so 2,298 images stay small in memory); a single pair has none, constant differences their value."""
    n, mean = diff.size, float(diff.mean())
    if n < 2 or np.ptp(diff) == 0:
        return (mean, mean) if n >= 2 else (math.nan, math.nan)
    result = stats.bootstrap((diff,), np.mean, n_resamples=resamples, method="BCa", confidence_level=level,
                             rng=np.random.default_rng(seed), batch=500)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def paired_stats(diff: np.ndarray, lower_is_better: bool, settings: PairedSettings = DEFAULT) -> dict[str, Any]:
    """``delta``, ``lo``, ``hi``, ``p`` (:func:`signed_rank`), ``win``, ``n``, ``mean``, ``mean_lo``, ``mean_hi``
    of one comparison; NaN where there is no pair. ``diff``: finite per-image differences (method − baseline)."""
    diff = np.asarray(diff, dtype="float64")
    if not np.isfinite(diff).all():
        raise ValueError("paired_stats: differences must be finite (PSNR is capped at psnr_ceiling first)")
    n = int(diff.size)
    out: dict[str, Any] = {s: math.nan for s in ("delta", "lo", "hi", "p", "win", "mean", "mean_lo", "mean_hi")}
    out["n"] = n
    if n == 0:
        return out
    out.update(signed_rank(diff, settings.level))
    better = diff < 0 if lower_is_better else diff > 0
    out["win"] = float((better.sum() + 0.5 * (diff == 0).sum()) / n)
    out["mean"] = float(diff.mean())
    out["mean_lo"], out["mean_hi"] = _bca_mean(diff, settings.bootstrap, settings.seed, settings.level)
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


def check_baseline(names: Iterable[Any], baseline: str | None, settings: PairedSettings, key: str = "baseline") -> None:
    """A ValueError naming the choices when ``key`` is in ``settings.require`` and ``baseline`` is none of
    ``names``."""
    known = sorted({str(v) for v in names if not pd.isna(v)})
    if key in settings.require and baseline is not None and str(baseline) not in known:
        raise ValueError(f"report.{key} {baseline!r} names nothing in the records (there: {', '.join(known)}); "
                         "'none' for no paired columns")


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
    capped: Callable[[str], bool] = _is_psnr,
) -> pd.DataFrame:
    """``pair_<metric>_<stat>`` columns (``PAIR_STATS``) and ``pair_baseline`` for every row of ``table``.

    A row is compared with the row of its ``cell`` (the identity columns it shares with its baseline) whose
    ``member`` column (failing that, its ``baseline_column``, e.g. ``method`` beside ``label``) equals
    ``baseline``; values are the ``ok`` records' per-image ``metrics`` (name → lower is better), the ``capped``
    ones (PSNR) at most :func:`psnr_ceiling` of the record's :func:`image_sides`, times ``scale``. Holm's
    correction runs across the compared rows of one cell, per metric. Rows without a baseline in their cell, and
    the baseline, get NaN.
    """
    scale = dict(scale or {})
    ok = records[records["status"] == "ok"].reset_index(drop=True)
    columns = {f"pair_{m}_{s}": [math.nan] * len(table) for m in metrics for s in PAIR_STATS}
    columns["pair_baseline"] = [None] * len(table)
    ceilings = image_sides(ok).map(psnr_ceiling) if any(capped(m) for m in metrics) else None

    def select(frame: pd.DataFrame, key: tuple) -> pd.DataFrame:
        return frame[np.logical_and.reduce([_equal(frame[c], v) for c, v in zip((*cell, member), key, strict=True)])]

    def values(key: tuple, metric: str) -> pd.Series:
        rows = select(ok, key)
        series = pd.to_numeric(rows[metric], errors="coerce").astype("float64")
        if ceilings is not None and capped(metric):
            series = series.clip(upper=ceilings.loc[rows.index])
        series = series * scale.get(metric, 1.0)
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
                for stat, value in result.items():
                    columns[f"pair_{metric}_{stat}"][pos] = value
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
