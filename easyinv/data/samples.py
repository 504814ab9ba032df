"""The bundled demo set: a few freely licensed photographs plus synthetic probes, usable with no download.

The probes (``scripts/make_probes.py``) include the mostly-white images on which the EasyInv paper reports ReNoise
returning black reconstructions. This is a folder dataset over the package's ``samples/`` directory, listing the
chosen subfolders in the order given by ``include``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from easyinv.data.base import Item
from easyinv.data.folder import FolderDataset, list_images

SAMPLES_DIR = Path(__file__).with_name("samples")
PARTS = ("photos", "probes")


class SamplesDataset(FolderDataset):
    """Photos, then probes (by default); ids look like ``photos/astronaut.png``."""

    def __init__(self, *, include: Sequence[str] = PARTS, name: str = "samples", **common: Any) -> None:
        self.include = [str(part) for part in include]
        unknown = [part for part in self.include if part not in PARTS]
        if unknown or not self.include or len(set(self.include)) != len(self.include):
            raise ValueError(f"dataset.include must be a non-empty list drawn from {PARTS}, got {self.include}")
        super().__init__(root=SAMPLES_DIR, name=name, **common)

    def _list_items(self) -> list[Item]:
        items = []
        for part in self.include:
            for path in list_images(self.root / part, self.extensions):
                items.append(self._item(path, path.relative_to(self.root).as_posix()))
        return items

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(root="easyinv/data/samples", include=self.include)
        return info
