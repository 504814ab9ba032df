"""What the runner sees of a dataset: a cheap, ordered list of items, and a loader that skips instead of crashing.

Listing never decodes an image, so a run can be planned (and resumed) before any pixel or weight is read. Every
per-item problem found at load time becomes a ``SkipItem`` that the runner records as a skipped row.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from easyinv.data.images import Preprocess, SkipItem, load_image

__all__ = ["PROMPT_POLICIES", "Dataset", "DatasetNotFoundError", "Item", "SkipItem"]

PROMPT_POLICIES = ("empty", "caption")
SUBSETS = ("all", "tune", "eval")


def in_tune_split(item_id: str, fraction: float) -> bool:
    """Hash-based held-out split: an item belongs to the tuning split whatever the order, limit or machine."""
    rank = int.from_bytes(hashlib.sha256(f"tune-split:{item_id}".encode()).digest()[:8], "big") / 2**64
    return rank < fraction


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's root, folder or annotation file is missing; raised at construction, before any model loads."""


@dataclass(frozen=True)
class Item:
    """One image of a dataset, described without decoding it.

    ``id`` is unique within the dataset and stable across machines; records and per-image seeds key on it.
    ``prompt`` is already resolved by the dataset's prompt policy ("" means the empty prompt).
    """

    id: str
    path: Path
    prompt: str = ""
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


class Dataset(ABC):
    """Base class: holds the prompt policy, the ``offset``/``limit`` window and the shared preprocessing.

    Subclasses list all their items once in ``_list_items``; ``items()`` applies the window on top, so ``limit: n``
    always means "the first n items of the full, deterministic order".
    """

    name: str

    def __init__(
        self,
        *,
        name: str,
        prompt: str = "empty",
        limit: int | None = None,
        offset: int = 0,
        resize: str = "stretch",
        resample: str = "bicubic",
        min_size: int = 64,
        max_pixels: int = Preprocess.max_pixels,
        subset: str = "all",
        tune_fraction: float = 0.25,
    ) -> None:
        if prompt not in PROMPT_POLICIES:
            raise ValueError(f"dataset.prompt must be one of {PROMPT_POLICIES}, got {prompt!r}")
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise ValueError(f"dataset.limit must be null or an integer >= 0, got {limit!r}")
        if not isinstance(offset, int) or offset < 0:
            raise ValueError(f"dataset.offset must be an integer >= 0, got {offset!r}")
        if subset not in SUBSETS:
            raise ValueError(f"dataset.subset must be one of {SUBSETS}, got {subset!r}")
        if not 0.0 < tune_fraction < 1.0:
            raise ValueError(f"dataset.tune_fraction must be in (0, 1), got {tune_fraction!r}")
        self.name = name
        self.subset = subset
        self.tune_fraction = tune_fraction
        self.prompt = prompt
        self.limit = limit
        self.offset = offset
        self.preprocess = Preprocess(resize=resize, resample=resample, min_size=min_size, max_pixels=max_pixels)
        self._all: list[Item] | None = None

    @abstractmethod
    def _list_items(self) -> list[Item]:
        """Every item of the dataset, in its deterministic order, with prompts resolved."""

    def all_items(self) -> list[Item]:
        """The full list before ``offset``/``limit``, computed once."""
        if self._all is None:
            self._all = self._list_items()
            ids = [item.id for item in self._all]
            if len(set(ids)) != len(ids):
                raise ValueError(f"dataset {self.name!r}: item ids are not unique")
        return self._all

    def items(self) -> list[Item]:
        """The items this run processes: the ``subset`` of ``all_items()``, then ``[offset : offset + limit]``.

        ``subset: tune`` / ``eval`` split the items by a hash of their id (``tune_fraction`` of them tune), so a tuning
        sweep never sees the images its chosen setting is scored on.
        """
        chosen = self.all_items()
        if self.subset != "all":
            want = self.subset == "tune"
            chosen = [it for it in chosen if in_tune_split(it.id, self.tune_fraction) == want]
        stop = None if self.limit is None else self.offset + self.limit
        return chosen[self.offset : stop]

    def load(self, item: Item, size: int) -> np.ndarray:
        """Decode and preprocess one item to a ``(size, size, 3)`` uint8 RGB array; raises ``SkipItem``."""
        problem = item.meta.get("problem")
        if problem:
            raise SkipItem(problem)
        return load_image(item.path, size, self.preprocess)

    def describe(self) -> dict[str, Any]:
        """Preprocessing, prompt policy and counts, stored with the run so a table says what it was computed on."""
        selected = self.items()
        with_prompt = sum(1 for item in selected if item.prompt)
        return {
            "name": self.name,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "n_total": len(self.all_items()),
            "n_items": len(selected),
            "offset": self.offset,
            "limit": self.limit,
            "subset": self.subset,
            "tune_fraction": self.tune_fraction,
            "prompt_policy": self.prompt,
            "prompt_counts": {"caption": with_prompt, "empty": len(selected) - with_prompt},
            "preprocess": self.preprocess.describe(),
        }
