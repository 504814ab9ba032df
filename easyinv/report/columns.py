"""The bottom of the report layer: which metrics a table has, how each is named, printed and ranked.

The metrics are declared once, in ``easyinv.metrics`` (a :class:`~easyinv.metrics.Metric` each: label, header,
decimals, direction, Table-1 column, paired comparisons); every table, sweep, figure, CSV and report.html column of
a reconstruction run reads them through the functions here, at the time it is written, so a metric declared later
(a test's, a plug-in's) is in every output. ``TIME`` is the time column, with the same kind of declaration. Also
here: the paper's row order and the precision names.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from easyinv.locations import PAPER_DIR
from easyinv.metrics import EDIT_METRICS, Metric, declared

__all__ = [
    "CEILING",
    "DAGGER_NOTE",
    "DEFAULT_PAPER_DIR",
    "EDIT_METRICS",
    "GROUP_KEYS",
    "LOWER_IS_BETTER",
    "PAPER_ORDER",
    "PRECISION_ALIASES",
    "PRECISION_ORDER",
    "TIME",
    "Metric",
    "declaration",
    "metrics",
    "norm_precision",
    "paired_metrics",
    "shown_pairs",
    "table1_metrics",
]

DEFAULT_PAPER_DIR = PAPER_DIR  # published numbers (CSV): results/paper/ of the checkout, or the wheel's copy
PAPER_ORDER = ("ddim", "renoise", "fixed_point", "easyinv")  # the paper's row order; others follow by name
CEILING = "vae_only"  # encode + decode only: the best any inversion can do, listed last
PRECISION_ORDER = ("fp32", "fp16", "bf16")
PRECISION_ALIASES = {"float32": "fp32", "full": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16"}
GROUP_KEYS = ("dataset", "model", "label", "precision", "device")
DAGGER_NOTE = ("LPIPS from a random or unverified VGG trunk (metrics.lpips.random_trunk): not comparable with "
               "published LPIPS; no difference computed.")
# time per image (t_total of ok, non-warm-up rows): a column of every table, after the metrics
TIME = Metric("time_s", "time", higher_is_better=False, decimals=2, unit="s", table1=True, header="Time/img (s)")


def metrics() -> tuple[Metric, ...]:
    """Every declared reconstruction metric, in the tables' order (each has CSV columns)."""
    return declared()


def table1_metrics() -> tuple[Metric, ...]:
    """The metrics that are Table-1 columns (and a sweep table's), in order."""
    return tuple(m for m in declared() if m.table1)


def paired_metrics() -> tuple[Metric, ...]:
    """The metrics compared per image with a baseline (``pair_<name>_*`` CSV columns)."""
    return tuple(m for m in declared() if m.paired)


def shown_pairs() -> tuple[Metric, ...]:
    """The paired metrics that are Table-1 columns: each gets a ``Δ <label> vs <baseline>`` column."""
    return tuple(m for m in declared() if m.paired and m.table1)


def declaration(name: str) -> Metric:
    """The declaration of a reconstruction metric, ``time_s`` or an editing metric, by record key."""
    for metric in (*declared(), TIME, *EDIT_METRICS):
        if metric.name == name:
            return metric
    raise KeyError(f"no metric or column {name!r} is declared")


class _LowerIsBetter(Mapping[str, bool]):
    """``{name: lower is better}`` of the declared metrics and time, read from the declarations on each access."""

    def _all(self) -> dict[str, bool]:
        return {m.name: m.lower_is_better for m in (*declared(), TIME)}

    def __getitem__(self, key: str) -> bool:
        return self._all()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


LOWER_IS_BETTER: Mapping[str, bool] = _LowerIsBetter()


def norm_precision(value: Any) -> str:
    """``float16`` / ``half`` / ``fp16`` → ``fp16`` (the paper's and the precision group's names agree)."""
    text = str(value).lower()
    return PRECISION_ALIASES.get(text, text)
