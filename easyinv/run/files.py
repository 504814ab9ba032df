"""Where a run keeps its files: the records files and manifest of a job directory, and the PNG / ``.pt`` paths of its
references, reconstructions, edits and stored latents, and of the report's cached thumbnails.

Jobs write through these functions and reports, figures and the completeness check read through them, so writer and
reader cannot disagree. Nothing here plots or computes; it only names paths (and writes a PNG losslessly).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "MANIFEST_FILE",
    "RECORDS_FILE",
    "RECORDS_GLOB",
    "edit_png_path",
    "latents_path",
    "recon_png_path",
    "records_file_name",
    "ref_png_path",
    "safe_name",
    "save_png",
    "saved_steps",
    "step_png_path",
    "thumb_path",
]

RECORDS_FILE = "records.jsonl"
RECORDS_GLOB = "records*.jsonl"  # one file per writer: records.jsonl, records.shard-<i>-of-<n>.jsonl
MANIFEST_FILE = "run.json"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_STEP_PNG = re.compile(r"(.+)\.step(\d+)\.png")  # step_png_path's file names


def records_file_name(index: int = 0, count: int = 1) -> str:
    """``records.jsonl`` for a single writer, ``records.shard-<index>-of-<count>.jsonl`` for one of many."""
    return RECORDS_FILE if count == 1 else f"records.shard-{index}-of-{count}.jsonl"


def safe_name(item_id: str) -> str:
    """A file-name stem for an item id or label: ``[A-Za-z0-9._-]`` kept, other runs become ``_``.

    When anything had to change (``val2017/0001.jpg`` → ``val2017_0001.jpg-<8 hex>``) a hash of the original id is
    appended, so two ids never share a file; ids that are already safe are used as they are.
    """
    text = str(item_id)
    name = _UNSAFE.sub("_", text).strip("._")[:100] or "item"
    if name != text:
        name = f"{name}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:8]}"
    return name


def ref_png_path(run_dir: str | Path, item_id: str) -> Path:
    """Where a job saves the preprocessed reference (source) image of ``item_id``."""
    return Path(run_dir) / "ref" / f"{safe_name(item_id)}.png"


def recon_png_path(run_dir: str | Path, method_label: str, item_id: str) -> Path:
    """Where a job saves the uint8 reconstruction of ``item_id`` by ``method_label`` (an editing job: its protocol)."""
    return Path(run_dir) / "recon" / safe_name(method_label) / f"{safe_name(item_id)}.png"


def edit_png_path(run_dir: str | Path, protocol: str, item_id: str) -> Path:
    """Where the editing job saves the edited image of ``item_id`` under ``protocol``."""
    return Path(run_dir) / "edit" / safe_name(protocol) / f"{safe_name(item_id)}.png"


def latents_path(run_dir: str | Path, method_label: str, item_id: str) -> Path:
    """Where a job stores the reconstruction-trajectory latents of ``item_id`` kept by ``save_latents``."""
    return Path(run_dir) / "latents" / safe_name(method_label) / f"{safe_name(item_id)}.pt"


def step_png_path(run_dir: str | Path, method_label: str, item_id: str, step: int) -> Path:
    """Where a job saves the decoded latent after reconstruction step ``step`` (0 = z_T, T = the result)."""
    return Path(run_dir) / "steps" / safe_name(method_label) / f"{safe_name(item_id)}.step{int(step)}.png"


def thumb_path(run_dir: str | Path, png: str | Path) -> Path:
    """Where the report caches the small JPEG of a PNG the run saved: ``thumbs/`` mirrors the PNG's place in the run
    dir (``recon/ddim/x.png`` → ``thumbs/recon/ddim/x.jpg``), so it is made once and found again by any report."""
    run_dir, png = Path(run_dir), Path(png)
    try:
        rel = png.relative_to(run_dir)
    except ValueError:
        rel = Path("other") / f"{safe_name(str(png))}.png"
    return run_dir / "thumbs" / rel.with_suffix(".jpg")


def saved_steps(run_dir: str | Path, method_label: str) -> dict[str, dict[int, Path]]:
    """The step PNGs saved under ``run_dir`` for ``method_label``: ``{safe_name(item): {step: path}}``."""
    found: dict[str, dict[int, Path]] = {}
    for png in (Path(run_dir) / "steps" / safe_name(method_label)).glob("*.step*.png"):
        match = _STEP_PNG.fullmatch(png.name)
        if match:
            found.setdefault(match.group(1), {})[int(match.group(2))] = png
    return found


def save_png(image_u8: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 (H, W, 3) array as a lossless PNG (never JPEG: it would bias every metric)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(image_u8, dtype=np.uint8)).save(path, format="PNG")
    return path
