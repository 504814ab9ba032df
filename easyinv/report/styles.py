"""How a cell is spelled in Markdown and in LaTeX: numbers with fixed decimals, ± intervals, daggers, missing values,
and a DataFrame as a Markdown table. Fixed decimals make an unchanged run re-report byte for byte.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from easyinv.report.columns import declaration

__all__ = ["LATEX", "MARKDOWN", "Style", "markdown_grid", "metric_cell", "number", "numbers", "pair_counts"]


@dataclass(frozen=True)
class Style:
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
                 "−": "$-$", "↓": r"$\downarrow$", "↑": r"$\uparrow$", "Δ": r"$\Delta$", "—": "--",
                 "≤": r"$\le$", "∞": r"$\infty$", "·": r"$\cdot$", "×": r"$\times$", "₁": r"$_1$", "₀": r"$_0$",
                 "²": r"$^2$"}
        return "".join(table.get(ch, ch) for ch in text)


MARKDOWN = Style(latex=False)
LATEX = Style(latex=True)


def number(value: float, decimals: int, style: Style, signed: bool = False) -> str:
    if value is not None and math.isinf(value):
        return ("+" if signed and value > 0 else "-" if value < 0 else "") + (r"$\infty$" if style.latex else "∞")
    if value is None or not math.isfinite(value):
        return style.missing
    return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"


def numbers(values: Sequence[float], decimals: int, style: Style, signed: bool = False) -> list[str]:
    """The numbers of one cell (an estimate and its interval), in ``decimals`` fixed decimals while the largest of
    them shows at least two significant digits that way, else each in three significant digits (``-1.1e-07``,
    ``+0.00123``), so a small difference never prints as 0.000."""
    finite = [abs(v) for v in values if v is not None and math.isfinite(v)]
    largest = max(finite, default=0.0)
    if largest == 0 or largest >= 10.0 ** (1 - decimals):
        return [number(v, decimals, style, signed) for v in values]
    spelled = []
    for v in values:
        if v is None or not math.isfinite(v) or v == 0:
            spelled.append(number(v, decimals, style, signed))
        else:
            spelled.append(f"{v:+.3g}" if signed else f"{v:.3g}")
    return spelled


def pair_counts(counts: Sequence[tuple[str, float, float]], style: Style) -> str:
    """The Pairs cell from (metric name, pairs, left out) per metric: ``n`` or ``n (k left out)`` when every metric
    has the same counts, else the counts per metric, metrics with equal counts together (``LPIPS 12 (1 left out);
    SSIM, PSNR 13``)."""
    known = [(name, int(n), int(k) if k == k else 0) for name, n, k in counts if n == n]  # NaN: no comparison
    if not known:
        return style.missing
    groups: dict[tuple[int, int], list[str]] = {}
    for name, n, k in known:
        groups.setdefault((n, k), []).append(name)

    def spell(n: int, k: int) -> str:
        return f"{n} ({k} left out)" if k else str(n)

    if len(groups) == 1:
        return spell(*next(iter(groups)))
    return "; ".join(f"{', '.join(style.escape(x) for x in names)} {spell(n, k)}" for (n, k), names in groups.items())


def metric_cell(row: pd.Series, metric: str, style: Style) -> str:
    """``mean ± CI`` in the metric's declared decimals, † where its values are not comparable with published ones."""
    declared = declaration(metric)
    d = declared.decimals
    mean, ci = row.get(f"{metric}_mean", math.nan), row.get(f"{metric}_ci95", math.nan)
    text = number(mean, d, style)
    if math.isfinite(mean) and math.isfinite(ci):
        text += style.pm + number(ci, d, style)
    flag = declared.comparable
    if flag is not None and math.isfinite(mean) and not row.get(flag, True):
        text += style.dagger
    return text


def markdown_grid(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join(":---" if i == 0 else "---:" for i in range(len(frame.columns))) + "|"
    cells = frame.astype(object).where(frame.notna(), "—").astype(str)
    body = ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False, name=None)]
    return "\n".join([header, rule, *body])
