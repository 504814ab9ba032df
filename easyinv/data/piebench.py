"""PIE-Bench (PnPInversion, ICLR 2024): 700 images in 10 edit types, read from a user's local copy.

Layout (editing.md §1): ``<root>/mapping_file.json`` (an object keyed by a 12-digit id) and
``<root>/annotation_images/<image_path>``. Each entry has ``image_path``, ``original_prompt`` and ``editing_prompt``
(square brackets mark the edited words; every reference script deletes the bracket characters), an
``editing_instruction``, ``editing_type_id`` ("0" … "9"), ``blended_word`` ("src tgt" or "") and ``mask``, a
run-length list decoded by :func:`decode_mask`. The data is distributed by its authors on request and is never
bundled here; tests use a generated mini PIE-Bench in the same format.

As a reconstruction dataset the prompt policy ``caption`` uses the source prompt (brackets stripped); the editing
fields ride along in ``Item.meta`` for the editing benchmark.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from easyinv.data.base import Dataset, DatasetNotFoundError, Item, SkipItem
from easyinv.data.images import open_rgb, resize_square

__all__ = [
    "EDIT_TYPES", "PieBenchDataset", "box_runs", "decode_mask", "mini_piebench", "strip_brackets",
    "write_mini_piebench",
]

MASK_SIZE = 512
EDIT_TYPES = {
    0: "random", 1: "change_object", 2: "add_object", 3: "delete_object", 4: "change_attribute_content",
    5: "change_attribute_pose", 6: "change_attribute_color", 7: "change_attribute_material",
    8: "change_background", 9: "change_style",
}


def strip_brackets(prompt: str) -> str:
    """``"a [cat] sitting"`` → ``"a cat sitting"``: plain deletion of both bracket characters, as the scripts do."""
    return prompt.replace("[", "").replace("]", "")


def decode_mask(runs: Sequence[int], size: int = MASK_SIZE, border: bool = True) -> np.ndarray:
    """PIE-Bench's run-length mask → bool ``(size, size)``, True = the region to edit.

    ``runs`` is ``[start₀, length₀, start₁, length₁, …]`` over the image flattened row-major; each run sets
    ``length`` pixels from ``start``, clipped to the end. With ``border`` (the reference's rule, needed to reproduce
    its numbers) the outermost row and column on every side are set too. An odd-length list is an error.
    """
    values = [int(v) for v in runs]
    if len(values) % 2:
        raise ValueError(f"mask: run-length list of odd length {len(values)}")
    flat = np.zeros(size * size, dtype=bool)
    for start, length in zip(values[0::2], values[1::2], strict=True):
        if start < 0 or length < 0:
            raise ValueError(f"mask: negative start or length ({start}, {length})")
        flat[start : min(start + length, flat.size)] = True
    mask = flat.reshape(size, size)
    if border:
        mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = True
    return mask


class PieBenchDataset(Dataset):
    """A local PIE-Bench folder; ``edit_types`` filters by type, ``per_type`` keeps the first N ids (sorted) of
    each type, ``ids`` picks items by id. Entries with missing fields or files become skipped rows with a reason."""

    def __init__(
        self,
        *,
        root: str | Path,
        name: str = "piebench",
        mapping: str = "mapping_file.json",
        images: str = "annotation_images",
        edit_types: Sequence[int] | None = None,
        per_type: int | None = None,
        ids: Sequence[str] | None = None,
        mask_border: bool = True,
        **common: Any,
    ) -> None:
        super().__init__(name=name, **common)
        self.root = Path(root).expanduser()
        self.mapping_path = self.root / mapping
        self.images_dir = self.root / images
        if not self.mapping_path.is_file():
            raise DatasetNotFoundError(
                f"PIE-Bench mapping file not found: {self.mapping_path} (set dataset.root to your PIE-Bench folder; "
                "the data is distributed by the PnPInversion authors on request)")
        if not self.images_dir.is_dir():
            raise DatasetNotFoundError(f"PIE-Bench images folder not found: {self.images_dir}")
        self.brackets = "stripped"  # every reference script deletes the bracket characters (recorded per edit row)
        self.edit_types = None if edit_types is None else sorted({int(t) for t in edit_types})
        if self.edit_types is not None and not set(self.edit_types) <= set(EDIT_TYPES):
            raise ValueError(f"dataset.edit_types must be within 0..9, got {list(edit_types or [])}")
        if per_type is not None and (not isinstance(per_type, int) or per_type < 1):
            raise ValueError(f"dataset.per_type must be null or an integer >= 1, got {per_type!r}")
        self.per_type = per_type
        self.ids = None if ids is None else [str(i) for i in ids]
        self.mask_border = bool(mask_border)

    def _list_items(self) -> list[Item]:
        try:
            mapping = json.loads(self.mapping_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"PIE-Bench mapping file {self.mapping_path} is not readable JSON: {err}") from err
        if not isinstance(mapping, dict):
            raise ValueError(f"PIE-Bench mapping file {self.mapping_path}: expected an object keyed by image id")
        items = [self._item(str(key), entry) for key, entry in sorted(mapping.items())]
        if self.edit_types is not None:
            items = [it for it in items if it.meta.get("edit_type") in self.edit_types]
        if self.ids is not None:
            wanted = set(self.ids)
            items = [it for it in items if it.id in wanted]
        if self.per_type is not None:
            seen: dict[Any, int] = {}
            kept = []
            for it in items:
                key = it.meta.get("edit_type")
                if seen.get(key, 0) < self.per_type:
                    kept.append(it)
                    seen[key] = seen.get(key, 0) + 1
            items = kept
        return items

    def _item(self, key: str, entry: Any) -> Item:
        meta: dict[str, Any] = {"piebench_id": key}
        if not isinstance(entry, dict):
            meta["problem"] = "mapping entry is not an object"
            return Item(key, self.images_dir / key, "", meta)
        missing = [f for f in ("image_path", "original_prompt", "editing_prompt", "editing_type_id", "mask")
                   if f not in entry]
        path = self.images_dir / str(entry.get("image_path", key))
        source, target = str(entry.get("original_prompt", "")), str(entry.get("editing_prompt", ""))
        words = str(entry.get("blended_word", "") or "").split(" ")
        meta.update(
            image_path=str(entry.get("image_path", "")),
            source_prompt=strip_brackets(source), target_prompt=strip_brackets(target),
            source_prompt_raw=source, target_prompt_raw=target,
            instruction=str(entry.get("editing_instruction", "")),
            blend_words=(words[0], words[1]) if len(words) >= 2 and words[0] else None,
        )
        try:
            meta["edit_type"] = int(entry.get("editing_type_id"))
        except (TypeError, ValueError):
            meta["edit_type"] = None
            missing.append("editing_type_id (not an integer)")
        if missing:
            meta["problem"] = f"mapping entry lacks {', '.join(missing)}"
        elif not isinstance(entry["mask"], list) or len(entry["mask"]) % 2:
            meta["problem"] = "mask is not a run-length list of even length"
        else:
            meta["mask_runs"] = [int(v) for v in entry["mask"]]
        prompt = meta["source_prompt"] if self.prompt == "caption" else ""
        return Item(key, path, prompt, meta)

    def edit_mask(self, item: Item) -> np.ndarray:
        """The item's edit mask, bool 512×512 (True = edit region), with the border rule if configured."""
        return decode_mask(item.meta["mask_runs"], border=self.mask_border)

    def load(self, item: Item, size: int) -> np.ndarray:
        """The image at ``size``; an image that is not 512×512 (the masks' grid) is skipped with its size."""
        if item.meta.get("problem"):
            raise SkipItem(item.meta["problem"])
        img = open_rgb(item.path, self.preprocess)
        if img.size != (MASK_SIZE, MASK_SIZE):
            raise SkipItem(f"PIE-Bench image is {img.size[0]}x{img.size[1]}, expected 512x512")
        return np.array(resize_square(img, size, self.preprocess), dtype=np.uint8)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(root=str(self.root), edit_types=self.edit_types, per_type=self.per_type,
                    mask_border=self.mask_border)
        return info


# -- a generated mini PIE-Bench for the offline editing demo ----------------------------------------------------------

# (photo, id, type, source prompt, target prompt, blended words, mask box (y0, y1, x0, x1) on the 512 grid or None
# for the whole image). Prompts follow PIE-Bench's style: brackets mark the edited words.
_MINI = (
    ("chelsea", "111000000000", 1, "a tabby [cat] sitting and looking at the camera",
     "a tabby [dog] sitting and looking at the camera", "cat dog", (96, 480, 112, 400)),
    ("coffee", "121000000000", 1, "a cup of [coffee] on a wooden table", "a cup of [tea] on a wooden table",
     "coffee tea", (120, 400, 96, 416)),
    ("astronaut", "422000000000", 4, "a portrait of a [smiling] astronaut in an orange spacesuit",
     "a portrait of a [frowning] astronaut in an orange spacesuit", "smiling frowning", (64, 288, 160, 352)),
    ("rocket", "824000000000", 8, "a rocket lifting off [from a launch pad]", "a rocket lifting off [from the moon]",
     "", (0, 512, 0, 160)),
    ("grace_hopper", "922000000000", 9, "a [photo] of an elderly woman in a navy uniform",
     "a [watercolor painting] of an elderly woman in a navy uniform", "", None),
)
_MINI_FORMAT = "1"
_FOLDERS = {0: "0_random_140", 1: "1_change_object_80", 2: "2_add_object_80", 3: "3_delete_object_80",
            4: "4_change_attribute_content_40", 5: "5_change_attribute_pose_40", 6: "6_change_attribute_color_40",
            7: "7_change_attribute_material_40", 8: "8_change_background_80", 9: "9_change_style_80"}


def box_runs(box: tuple[int, int, int, int] | None, size: int = MASK_SIZE) -> list[int]:
    """A rectangle ``(y0, y1, x0, x1)`` (None: the whole image) as PIE-Bench's run-length list, one run per row."""
    if box is None:
        return [0, size * size]
    y0, y1, x0, x1 = box
    return [v for y in range(y0, y1) for v in (y * size + x0, x1 - x0)]


def write_mini_piebench(root: str | Path) -> Path:
    """Write a five-image PIE-Bench in the real layout from the bundled photos (edit types 1, 1, 4, 8, 9; two without
    blend words, one whole-image style edit): what ``experiment=editing_demo`` runs on, offline. Never real
    PIE-Bench files. Written into a temporary folder and renamed, so a killed run leaves no half fixture."""
    import shutil
    import tempfile

    from PIL import Image

    root = Path(root)
    photos = Path(__file__).resolve().parent / "samples" / "photos"
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".mini-piebench-", dir=root.parent))
    mapping = {}
    for photo, key, kind, source, target, words, box in _MINI:
        folder = _FOLDERS[kind]
        rel = f"{folder}/{key}.jpg"
        img = Image.open(photos / f"{photo}.png").convert("RGB")
        side = min(img.size)
        left, top = (img.size[0] - side) // 2, (img.size[1] - side) // 2
        img = img.crop((left, top, left + side, top + side)).resize((MASK_SIZE, MASK_SIZE), Image.Resampling.BICUBIC)
        (tmp / "annotation_images" / folder).mkdir(parents=True, exist_ok=True)
        img.save(tmp / "annotation_images" / rel, quality=95)
        mapping[key] = {"image_path": rel, "original_prompt": source, "editing_prompt": target,
                        "editing_instruction": f"change '{strip_brackets(source)}' to '{strip_brackets(target)}'",
                        "editing_type_id": str(kind), "blended_word": words, "mask": box_runs(box)}
    (tmp / "mapping_file.json").write_text(json.dumps(mapping, indent=1))
    (tmp / ".mini-piebench").write_text(_MINI_FORMAT)
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)
    return root


def mini_piebench(*, root: str | Path, **kwargs: Any) -> PieBenchDataset:
    """The generated mini PIE-Bench at ``root`` (written on first use, rewritten when its format changes)."""
    root = Path(root).expanduser()
    marker = root / ".mini-piebench"
    if not marker.is_file() or marker.read_text() != _MINI_FORMAT:
        write_mini_piebench(root)
    return PieBenchDataset(root=root, **kwargs)
