"""Figure plumbing shared by every figure of the report layer: matplotlib ``Figure`` objects without pyplot state
(Agg), saving without a timestamp, reading the PNGs a job saved (``easyinv.run.files`` names them), and the labels
and order in which methods appear.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from easyinv.report.columns import PAPER_ORDER, Metric
from easyinv.report.summary import with_labels
from easyinv.run.files import recon_png_path, ref_png_path, safe_name

__all__ = [
    "DPI",
    "figure_labels",
    "first_file",
    "labels_in_order",
    "load_png",
    "metric_bounds",
    "new_figure",
    "plot_title",
    "save_figure",
    "saved_reconstruction",
    "saved_references",
]

DPI = 100


def plot_title(frame: pd.DataFrame, metric: Metric, values: str | None = None) -> str:
    """A metric's title in a plot (``PSNR (dB) ↑``), with ``† random trunk`` where ``frame``'s rows with a value in
    ``values`` (default: the metric's record column) are not all comparable with published ones (its ``comparable``
    column)."""
    values = values or metric.name
    title = metric.title
    flag = metric.comparable
    measured = frame[values].notna() if values in frame else None
    if flag is not None and measured is not None and flag in frame and not frame.loc[measured, flag].all():
        title += " † random trunk"
    return title


def metric_bounds(ax: Any, metric: Metric, axis: str = "y") -> None:
    """The declared plot bounds of ``metric`` (``plot_lower_bound``, ``plot_upper_bound``) on an axis."""
    if metric.plot_lower_bound is None and metric.plot_upper_bound is None:
        return
    limits = {"bottom" if axis == "y" else "left": metric.plot_lower_bound,
              "top" if axis == "y" else "right": metric.plot_upper_bound}
    (ax.set_ylim if axis == "y" else ax.set_xlim)(**{k: v for k, v in limits.items() if v is not None})


def load_png(path: Path | None) -> np.ndarray | None:
    if path is None or not path.is_file():
        return None
    return np.asarray(Image.open(path).convert("RGB"))


def first_file(paths: Iterable[Path]) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


def saved_references(dirs: Sequence[Path], items: Iterable[str], max_items: int) -> dict[str, np.ndarray]:
    """The saved reference images of the first ``max_items`` of ``items`` that have one, in order."""
    refs: dict[str, np.ndarray] = {}
    for item in items:
        found = first_file(ref_png_path(d, item) for d in dirs)
        if found is not None:
            refs[item] = load_png(found)
        if len(refs) == max_items:
            break
    return refs


def saved_reconstruction(
    own: Sequence[Path], others: Sequence[Path], method_label: str, item_id: str
) -> np.ndarray | None:
    """A saved reconstruction: ``recon/<label>/<item>.png``, or flat ``recon/<item>.png`` in the record's own run
    dir (a run dir holds one configuration, so the label level is optional there)."""
    labelled = (recon_png_path(d, method_label, item_id) for d in [*own, *others])
    flat = (Path(d) / "recon" / f"{safe_name(item_id)}.png" for d in own)
    return load_png(first_file(itertools.chain(labelled, flat)))


def figure_labels(df: pd.DataFrame) -> pd.DataFrame:
    """The tables' labels, plus model and precision where a figure mixes several (``easyinv · fp16``)."""
    df = with_labels(df)
    for key in ("model", "precision"):
        if df[key].nunique(dropna=False) > 1:
            df["label"] = df["label"] + " · " + df[key].astype(object).where(df[key].notna(), "?").astype(str)
    return df


def labels_in_order(df: pd.DataFrame, column: str = "label") -> list[str]:
    """Labels in the tables' order: the paper's methods, the others by name, the VAE-only ceiling last."""
    firsts = df.groupby(column, sort=False)["method"].first()

    def rank(label: str) -> tuple[int, str]:
        method = str(firsts[label])
        base = PAPER_ORDER.index(method) if method in PAPER_ORDER else len(PAPER_ORDER) + (method == "vae_only")
        return base, label

    return sorted(firsts.index.astype(str), key=rank)


def new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save_figure(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None})
    return path
