"""What every editor config holds besides its own knobs: the protocol around the controller (editing.md §3.1, §6.2).

An editor (``configs/edit/*.yaml``) is a frozen dataclass deriving from :class:`Editor` with a ``controller(...)``
factory; the editing job reads these fields and never asks which editor it has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from easyinv.editing.attention import EditController

__all__ = ["SOURCE_POLICIES", "UINT8_MODES", "Editor"]

SOURCE_POLICIES = ("free", "direct_offsets", "ref_latents")
UINT8_MODES = ("truncate", "round")


@dataclass(frozen=True)
class Editor:
    """``source``: the source-branch policy (``easyinv.editing.walk``). ``inversion_prompt`` / ``source_prompt``:
    "source" for the item's source prompt, any other string as it is (MasaCtrl: ""). ``invert_guidance``: CFG of
    the inversion (PnPInversion: conditional only, 1). ``uint8``: how decoded images become pixels ("truncate" as
    PnPInversion saves them, or "round" as diffusers does)."""

    name: str = "editor"
    source: str = "free"
    guidance_scale: float = 7.5
    inversion_prompt: str = "source"
    source_prompt: str = "source"
    invert_guidance: float = 1.0
    uint8: str = "truncate"

    def __post_init__(self) -> None:
        if self.source not in SOURCE_POLICIES:
            raise ValueError(f"edit.source must be one of {', '.join(SOURCE_POLICIES)}, got {self.source!r}")
        if self.uint8 not in UINT8_MODES:
            raise ValueError(f"edit.uint8 must be one of {', '.join(UINT8_MODES)}, got {self.uint8!r}")
        if self.guidance_scale < 0 or self.invert_guidance < 0:
            raise ValueError(f"edit.guidance_scale and edit.invert_guidance must be >= 0, got {self.guidance_scale} "
                             f"and {self.invert_guidance}")

    def prompts(self, which: str, item_prompts: Sequence[str]) -> list[str]:
        """The prompts of one branch: the items' own for "source", else the configured string for every item."""
        return list(item_prompts) if which == "source" else [str(which)] * len(item_prompts)

    def controller(self, source_prompts: Sequence[str], target_prompts: Sequence[str],
                   blend_words: Sequence[Any] | None, tokenizer: Any, num_steps: int) -> EditController:
        raise NotImplementedError
