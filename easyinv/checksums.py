"""File checksums: the identity of an input file (a COCO image, a manifest, a weight file) in records and manifests.

At the bottom of the package so that data, metrics and the run layer can all name a file by its content.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["file_sha256"]


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, read in 1 MiB blocks: the identity of a COCO image, a manifest or an LPIPS trunk."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fp:
        for block in iter(lambda: fp.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
