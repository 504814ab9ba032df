"""Any folder of images, e.g. your own photos: listed recursively and sorted, so ids and order never depend on the
file system's listing order.

An item's id is its path relative to the root in POSIX form, extension included (``a.jpg`` and ``a.png`` stay
distinct). With ``prompt: caption`` a sidecar ``<stem>.txt`` beside the image supplies the prompt. Hidden files and
folders (names starting with ".", e.g. macOS ``._x.jpg``) are ignored.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from easyinv.data.base import Dataset, DatasetNotFoundError, Item

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def list_images(root: Path, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files under ``root`` (recursive, case-insensitive extensions), sorted by relative POSIX path."""
    wanted = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    found = []
    for folder, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        found.extend(Path(folder, f) for f in files if not f.startswith(".") and Path(f).suffix.lower() in wanted)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def read_caption(image: Path) -> tuple[str, str | None]:
    """The sidecar caption (whitespace normalised) and a problem string when the sidecar exists but is unreadable."""
    sidecar = image.with_suffix(".txt")
    if not sidecar.is_file():
        return "", None
    try:
        return " ".join(sidecar.read_text(encoding="utf-8").split()), None
    except (OSError, UnicodeDecodeError) as err:
        return "", f"unreadable caption file {sidecar.name}: {err}"


class FolderDataset(Dataset):
    """Images under ``root``; a missing root is an error at construction."""

    def __init__(
        self,
        *,
        root: str | Path,
        name: str = "folder",
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        **common: Any,
    ) -> None:
        super().__init__(name=name, **common)
        self.root = Path(root).expanduser()
        self.extensions = tuple(str(e) for e in extensions)
        if not self.root.is_dir():
            raise DatasetNotFoundError(f"image folder not found: {self.root} (set dataset.root)")

    def _list_items(self) -> list[Item]:
        return [
            self._item(path, path.relative_to(self.root).as_posix()) for path in list_images(self.root, self.extensions)
        ]

    def _item(self, path: Path, item_id: str) -> Item:
        """An item with the prompt policy applied; an unreadable caption is deferred to ``load`` as a skip."""
        meta: dict[str, Any] = {"file_name": item_id, "caption_source": "none"}
        prompt = ""
        if self.prompt == "caption":
            caption, problem = read_caption(path)
            if problem:
                meta["problem"] = problem
            elif caption:
                prompt, meta["caption_source"] = caption, "sidecar"
        return Item(item_id, path, prompt, meta)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(root=str(self.root), extensions=list(self.extensions))
        return info
