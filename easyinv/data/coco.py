"""EasyInv's Table-1 images: a seeded sample of near-square COCO-2017 images, frozen in a manifest CSV.

Selection follows the released ``choose_img.py`` rule ``0.9*w < h and 0.9*h < w`` (algorithms.md §6 item 6), but
on the annotation JSONs' sizes, so it needs no decoding. The sample is "the ``n`` eligible images with the smallest
``sha256(f"{seed}:{split}/{image_id}")``": unlike ``random.sample`` or a NumPy generator, whose streams may change
between versions, this is the same under every Python and NumPy, and a smaller ``n`` gives a subset of a larger one.
The manifest (and a JSON sidecar with the settings that made it) is rebuilt byte for byte from the same files.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from easyinv.checksums import file_sha256
from easyinv.data.base import Dataset, DatasetNotFoundError, Item, SkipItem
from easyinv.data.images import load_image

log = logging.getLogger(__name__)

SELECTION = "0.9*w < h and 0.9*h < w, on the annotation JSON's width/height"
SAMPLING = "the n eligible images with the smallest sha256('{seed}:{split}/{image_id}'), listed by (split, image_id)"
MANIFEST_COLUMNS = ("split", "image_id", "file_name", "width", "height", "caption_id", "caption", "sha256")
MANIFEST_FORMAT = 1
# Per split, the annotation files tried in order; the first that exists is used.
ANNOTATION_FILES = {
    "val2017": ("captions_val2017.json", "instances_val2017.json"),
    "test2017": ("image_info_test2017.json",),
}


@dataclass(frozen=True)
class ManifestRow:
    """One selected image; ``caption_id`` is None and ``caption`` empty where the split has no captions."""

    split: str
    image_id: int
    file_name: str
    width: int
    height: int
    caption_id: int | None
    caption: str
    sha256: str = ""


def is_near_square(width: int, height: int) -> bool:
    """The released selection rule, float arithmetic included."""
    return 0.9 * width < height and 0.9 * height < width


def annotation_file(root: Path, split: str) -> Path:
    """The first existing annotation JSON for ``split``; a clear error naming the expected path otherwise."""
    fallback = (f"captions_{split}.json", f"instances_{split}.json", f"image_info_{split}.json")
    names = ANNOTATION_FILES.get(split, fallback)
    for name in names:
        path = root / "annotations" / name
        if path.is_file():
            return path
    raise DatasetNotFoundError(
        f"COCO annotations for {split} not found: expected {root / 'annotations' / names[0]}"
        + (f" (or {', '.join(names[1:])})" if len(names) > 1 else "")
        + " - unpack the COCO annotation archives into <paths.coco>/annotations/"
    )


def read_split(root: Path, split: str) -> list[ManifestRow]:
    """Every image of a split with its deterministic caption (lowest annotation id, whitespace normalised)."""
    path = annotation_file(root, split)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco = COCO(str(path))
    rows = []
    for image_id, info in coco.imgs.items():
        captions = sorted((ann["id"], ann["caption"]) for ann in coco.imgToAnns.get(image_id, []) if "caption" in ann)
        caption_id, caption = captions[0] if captions else (None, "")
        rows.append(
            ManifestRow(
                split=split,
                image_id=int(image_id),
                file_name=str(info["file_name"]),
                width=int(info["width"]),
                height=int(info["height"]),
                caption_id=None if caption_id is None else int(caption_id),
                caption=" ".join(str(caption).split()),
            )
        )
    return sorted(rows, key=lambda r: r.image_id)


def sample_key(seed: int, row: ManifestRow) -> str:
    return hashlib.sha256(f"{seed}:{row.split}/{row.image_id}".encode()).hexdigest()


def select(rows: Iterable[ManifestRow], n: int, seed: int) -> list[ManifestRow]:
    """Keep near-square rows, sample ``n`` of them by seeded hash rank, return them sorted by (split, image_id)."""
    eligible = sorted((r for r in rows if is_near_square(r.width, r.height)), key=lambda r: (r.split, r.image_id))
    if n > len(eligible):
        raise ValueError(f"dataset.n={n} but only {len(eligible)} images are eligible (near-square)")
    chosen = sorted(eligible, key=lambda r: (sample_key(seed, r), r.split, r.image_id))[:n]
    return sorted(chosen, key=lambda r: (r.split, r.image_id))


def build_manifest(
    root: Path, splits: Sequence[str], n: int, seed: int, hash_files: bool = True
) -> tuple[list[ManifestRow], dict[str, int]]:
    """Select the sample from the annotation files; returns the rows and the eligible count per split.

    With ``hash_files`` the sha256 of each selected file that exists is recorded, so a different local copy is
    caught at load time; files not present are left with an empty hash.
    """
    every: list[ManifestRow] = []
    eligible: dict[str, int] = {}
    for split in splits:
        rows = read_split(root, split)
        eligible[split] = sum(is_near_square(r.width, r.height) for r in rows)
        log.info("COCO %s: %d images, %d near-square", split, len(rows), eligible[split])
        every.extend(rows)
    try:
        chosen = select(every, n, seed)
    except ValueError as err:
        raise ValueError(f"{err}: {eligible}") from err
    if hash_files:
        chosen = [_with_hash(root, r) for r in chosen]
    return chosen, eligible


def _with_hash(root: Path, row: ManifestRow) -> ManifestRow:
    path = root / row.split / row.file_name
    if not path.is_file():
        return row
    return replace(row, sha256=file_sha256(path))


def sidecar_path(manifest: Path) -> Path:
    return manifest.with_suffix(".json")


def manifest_spec(splits: Sequence[str], n: int, seed: int) -> dict[str, Any]:
    """The settings a manifest must match to be reused; stored in its JSON sidecar."""
    return {
        "format": MANIFEST_FORMAT,
        "splits": sorted(splits),
        "n": n,
        "seed": seed,
        "selection": SELECTION,
        "sampling": SAMPLING,
    }


def write_manifest(path: Path, rows: Sequence[ManifestRow], spec: dict[str, Any], eligible: dict[str, int]) -> None:
    """CSV with ``\\n`` line endings and a sorted-key JSON sidecar: no timestamps, so rebuilds are byte-identical."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fp:
        writer = csv.writer(fp, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        for r in rows:
            cid = "" if r.caption_id is None else str(r.caption_id)
            writer.writerow([r.split, r.image_id, r.file_name, r.width, r.height, cid, r.caption, r.sha256])
    side = dict(spec, eligible=dict(sorted(eligible.items())), hashed=any(r.sha256 for r in rows))
    sidecar_path(path).write_text(json.dumps(side, sort_keys=True, indent=2) + "\n", encoding="utf-8")


def read_manifest(path: Path) -> list[ManifestRow]:
    with path.open(encoding="utf-8", newline="") as fp:
        reader = csv.reader(fp)
        header = tuple(next(reader, ()))
        if header != MANIFEST_COLUMNS:
            raise ValueError(f"{path}: manifest header {header} != expected {MANIFEST_COLUMNS}")
        rows = []
        for line, fields in enumerate(reader, start=2):
            try:
                split, iid, name, w, h, cid, caption, sha = fields
                rows.append(ManifestRow(split, int(iid), name, int(w), int(h), int(cid) if cid else None, caption, sha))
            except ValueError as err:
                raise ValueError(f"{path}, line {line}: malformed manifest row ({err})") from err
        return rows


class CocoDataset(Dataset):
    """The Table-1 sample; builds (or reuses) its manifest at construction, before any model loads."""

    def __init__(
        self,
        *,
        root: str | Path,
        manifest: str | Path,
        splits: Sequence[str] = ("val2017", "test2017"),
        n: int = 2298,
        seed: int = 0,
        hash_files: bool = True,
        name: str = "coco2298",
        **common: Any,
    ) -> None:
        super().__init__(name=name, **common)
        self.root = Path(root).expanduser()
        self.manifest = Path(manifest).expanduser()
        self.splits = [str(s) for s in splits]
        self.n, self.seed = int(n), int(seed)
        if not self.splits or len(set(self.splits)) != len(self.splits):
            raise ValueError(f"dataset.splits must be a non-empty list without repeats, got {self.splits}")
        if self.n < 1:
            raise ValueError(f"dataset.n must be >= 1, got {self.n}")
        if not self.root.is_dir():
            raise DatasetNotFoundError(
                f"COCO root not found: {self.root} - set paths.coco (or EASYINV_COCO) to a folder holding "
                "annotations/, val2017/ and test2017/"
            )
        spec = manifest_spec(self.splits, self.n, self.seed)
        if self.manifest.is_file():
            self.rows, self.eligible = self._reuse(spec)
        else:
            self.rows, self.eligible = build_manifest(self.root, self.splits, self.n, self.seed, hash_files=hash_files)
            write_manifest(self.manifest, self.rows, spec, self.eligible)
            log.info("wrote COCO manifest %s (%d images)", self.manifest, len(self.rows))
        for split in self.splits:
            if not (self.root / split).is_dir():
                raise DatasetNotFoundError(f"COCO images for {split} not found: expected folder {self.root / split}")

    def _reuse(self, spec: dict[str, Any]) -> tuple[list[ManifestRow], dict[str, int]]:
        side = sidecar_path(self.manifest)
        if not side.is_file():
            raise ValueError(f"{self.manifest} has no settings file {side.name} beside it; delete it to rebuild")
        stored = json.loads(side.read_text(encoding="utf-8"))
        mismatched = [k for k in spec if stored.get(k) != spec[k]]
        if mismatched:
            raise ValueError(
                f"{self.manifest} was made with other settings ({', '.join(mismatched)} differ, see {side.name}); "
                "delete it to rebuild, or set dataset.manifest to another file"
            )
        rows = read_manifest(self.manifest)
        if len(rows) != self.n:
            raise ValueError(f"{self.manifest} holds {len(rows)} rows, dataset.n is {self.n}; delete it to rebuild")
        eligible = {str(k): int(v) for k, v in stored.get("eligible", {}).items()}
        log.info("COCO manifest %s: %d images; eligible per split %s", self.manifest, len(rows), eligible)
        return rows, eligible

    def _list_items(self) -> list[Item]:
        items = []
        for r in self.rows:
            use_caption = self.prompt == "caption" and bool(r.caption)
            meta = {
                "split": r.split,
                "image_id": r.image_id,
                "file_name": r.file_name,
                "width": r.width,
                "height": r.height,
                "caption_id": r.caption_id,
                "caption_source": "coco" if r.caption else "none",
                "sha256": r.sha256,
            }
            items.append(
                Item(
                    f"{r.split}/{Path(r.file_name).stem}",
                    self.root / r.split / r.file_name,
                    r.caption if use_caption else "",
                    meta,
                )
            )
        return items

    def load(self, item: Item, size: int) -> np.ndarray:
        """As ``Dataset.load``, after checking the file's sha256 against the manifest (when it holds one)."""
        try:
            data = item.path.read_bytes()
        except FileNotFoundError as err:
            raise SkipItem(f"file not found: {item.path}") from err
        except OSError as err:
            raise SkipItem(f"cannot read file: {err}") from err
        expected = item.meta.get("sha256", "")
        if expected:
            actual = hashlib.sha256(data).hexdigest()
            if actual != expected:
                raise SkipItem(f"sha256 mismatch for {item.path}: manifest {expected[:12]}..., file {actual[:12]}...")
        return load_image(data, size, self.preprocess)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            root=str(self.root),
            manifest=str(self.manifest),
            manifest_sha256=file_sha256(self.manifest),
            splits=self.splits,
            n=self.n,
            seed=self.seed,
            selection=SELECTION,
            sampling=SAMPLING,
            eligible=self.eligible,
            hashed=any(r.sha256 for r in self.rows),
        )
        return info
