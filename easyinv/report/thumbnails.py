"""Small JPEG thumbnails of the PNGs a run saved, made once and cached in the run directory.

The browsable report shows hundreds of images per page and tens of thousands per run; linking the full PNGs would
make a page of a full Table 1 weigh megabytes. A thumbnail is written next to the run's files
(``easyinv.run.files.thumb_path``) the first time a report asks for it and reused while it is newer than its PNG.
Thumbnails are for looking only: every metric is computed on the lossless PNGs.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from easyinv.run.files import thumb_path

__all__ = ["THUMB_SIZE", "thumbnail"]

THUMB_SIZE = 96  # longest side in pixels
QUALITY = 85


def thumbnail(png: str | Path, run_dir: str | Path, size: int = THUMB_SIZE) -> Path:
    """The cached thumbnail of ``png`` (a file inside ``run_dir``), made now if it is missing or older than the PNG.

    Written to a temporary name and renamed, so a killed report never leaves half a JPEG that later looks cached.
    """
    png = Path(png)
    out = thumb_path(run_dir, png)
    if out.is_file() and out.stat().st_mtime >= png.stat().st_mtime:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(png) as image:
        small = image.convert("RGB")
        small.thumbnail((size, size), Image.Resampling.LANCZOS)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    small.save(tmp, format="JPEG", quality=QUALITY)
    os.replace(tmp, out)
    return out
