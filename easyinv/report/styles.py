"""How a cell is spelled in Markdown and in LaTeX: numbers with fixed decimals, ± intervals, daggers, missing values,
and a DataFrame as a Markdown table. Fixed decimals make an unchanged run re-report byte for byte.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from easyinv.report.columns import DECIMALS

__all__ = ["LATEX", "MARKDOWN", "Style", "markdown_grid", "metric_cell", "number"]


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
                 "−": "$-$", "↓": r"$\downarrow$", "↑": r"$\uparrow$", "Δ": r"$\Delta$", "—": "--"}
        return "".join(table.get(ch, ch) for ch in text)


MARKDOWN = Style(latex=False)
LATEX = Style(latex=True)


def number(value: float, decimals: int, style: Style, signed: bool = False) -> str:
    if value is not None and math.isinf(value):
        return ("+" if signed and value > 0 else "-" if value < 0 else "") + (r"$\infty$" if style.latex else "∞")
    if value is None or not math.isfinite(value):
        return style.missing
    return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"


def metric_cell(row: pd.Series, metric: str, style: Style) -> str:
    d = DECIMALS[metric]
    mean, ci = row[f"{metric}_mean"], row[f"{metric}_ci95"]
    text = number(mean, d, style)
    if math.isfinite(mean) and math.isfinite(ci):
        text += style.pm + number(ci, d, style)
    if metric == "lpips" and math.isfinite(mean) and not row["lpips_comparable"]:
        text += style.dagger
    return text


def markdown_grid(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join(":---" if i == 0 else "---:" for i in range(len(frame.columns))) + "|"
    cells = frame.astype(object).where(frame.notna(), "—").astype(str)
    body = ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False, name=None)]
    return "\n".join([header, rule, *body])
