"""The qualitative editing figure in the style of EasyInv's Fig. 6: per image the source, then for each protocol the
source branch's reconstruction and the edit, with the two prompts written above the row."""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from easyinv.report.plotting import first_file, load_png, new_figure, save_figure, saved_references
from easyinv.run.files import edit_png_path, recon_png_path

__all__ = ["edit_strip"]

log = logging.getLogger(__name__)


def edit_strip(df: pd.DataFrame, run_dirs: Sequence[str | Path], out_path: str | Path,
               item_ids: Sequence[str] | None = None, max_items: int = 4) -> Path | None:
    """Rows = images (the first ``max_items`` with a saved source), columns = source, then reconstruction and edit
    per protocol; a tile whose PNG is missing (a failed or unsaved row) says so. None when nothing was saved."""
    rows = df[df["protocol"].notna()]
    dirs = list(dict.fromkeys([*map(Path, run_dirs), *map(Path, rows["run_dir"].dropna().unique())]))
    protocols = sorted(rows["protocol"].astype(str).unique())
    candidates = item_ids if item_ids is not None else sorted(rows["item_id"].dropna().astype(str).unique())
    sources = saved_references(dirs, candidates, max_items)
    if not sources or not protocols:
        log.info("editing strip skipped: no saved source/edit PNGs (run with save_png=true)")
        return None
    ncols = 1 + 2 * len(protocols)
    fig = new_figure(1.6 * ncols + 0.4, 1.9 * len(sources) + 0.3)
    axes = fig.subplots(len(sources), ncols, squeeze=False)
    for r, (item, source) in enumerate(sources.items()):
        meta = rows[rows["item_id"] == item].iloc[0]
        axes[r][0].imshow(source)
        prompts = f"{meta.get('source_prompt', '')} → {meta.get('target_prompt', '')}"
        axes[r][0].set_title(textwrap.shorten(item, 20), fontsize=6)
        axes[r][0].set_ylabel(textwrap.fill(prompts, 28), fontsize=5)
        for p, protocol in enumerate(protocols):
            for k, (kind, path_of) in enumerate((("reconstruction", recon_png_path), ("edit", edit_png_path))):
                ax = axes[r][1 + 2 * p + k]
                found = first_file(path_of(d, protocol, item) for d in dirs)
                if found is not None:
                    ax.imshow(load_png(found))
                else:
                    ax.text(0.5, 0.5, "not saved\n(failed or\npng_limit)", ha="center", va="center", fontsize=6,
                            color="firebrick")
                if r == 0:
                    ax.set_title(f"{textwrap.fill(protocol, 22)}\n{kind}", fontsize=6)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return save_figure(fig, Path(out_path))
