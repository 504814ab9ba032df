"""What every editor config holds besides its own knobs, and the one call the editing job makes of it.

An editor (``configs/edit/*.yaml``) is a frozen dataclass deriving from :class:`Editor`. The editing job hands it an
:class:`EditBatch` (the encoded images, the protocol's inversion method and grid, the prompts, a way to bind
denoisers) and gets an :class:`EditResult` back (both branches' latents and what they cost); it never asks which
editor it has. How an editor edits is its own: the attention editors of Stable Diffusion (P2P, MasaCtrl:
``attention_editor.py``) sample both branches together under a controller, the flow editors (V injection, Uni-Edit,
RF-Inversion, FlowEdit) walk the grid themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from easyinv.inversion import Denoisers, Grid, Inversion, PhaseTimer

__all__ = ["SOURCE_POLICIES", "UINT8_MODES", "EditBatch", "EditResult", "Editor"]

SOURCE_POLICIES = ("free", "direct_offsets", "ref_latents")
UINT8_MODES = ("truncate", "round")


@dataclass
class EditBatch:
    """One batch as the editing job gives it to an editor.

    ``model`` is the loaded :class:`~easyinv.models.base.InversionModel`; ``method`` the protocol's inversion method
    and ``grid`` its grid; ``z0`` the encoded sources ``(B, C, h, w)``; ``source_prompts`` / ``target_prompts`` the
    items' own prompts (an editor picks what each branch gets, :meth:`Editor.prompts`); ``blend_words`` PIE-Bench's
    per item; ``denoisers(prompts, guidance)`` binds the model's denoisers to prompts with a guidance per phase
    (``{"invert": w, "reconstruct": w}``), counted per image like the reconstruction job's; ``timer`` is the job's
    per-phase clock (an editor times its "invert" and "edit" phases with it).
    """

    model: Any
    method: Any
    grid: Grid
    z0: Tensor
    seeds: tuple[int, ...]
    source_prompts: list[str]
    target_prompts: list[str]
    blend_words: list[Any]
    denoisers: Callable[[list[str], dict[str, float]], Denoisers]
    timer: PhaseTimer


@dataclass
class EditResult:
    """What an editor returns: the source branch (the reconstruction the record measures) and the edit, NFE per
    image of the inversion, of DirectInversion's offset pass and of the edit, the network time of the whole batch,
    the first non-finite step per image of the inversion and of the edit (-1: none), per-image notes and record
    fields every row of the batch gets (e.g. a V cache's size, the source pass's NFE of the flow editors)."""

    inversion: Inversion
    z_source: Tensor
    z_target: Tensor
    nfe_invert: Tensor
    nfe_offsets: Tensor
    nfe_edit: Tensor
    network_seconds: float
    invert_nonfinite: list[int]
    edit_nonfinite: list[int]
    notes: list[dict[str, Any]] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    row_fields: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Editor:
    """``source``: the source-branch policy (``easyinv.editing.walk``). ``inversion_prompt`` / ``source_prompt``:
    "source" for the item's source prompt, any other string as it is (MasaCtrl: ""). ``invert_guidance``: guidance
    of the inversion (PnPInversion: conditional only, 1; FLUX: the guidance input). ``uint8``: how decoded images
    become pixels ("truncate" as PnPInversion saves them, or "round" as diffusers does). ``num_steps``: the editor's
    own step count, which then replaces ``method.num_steps`` (the flow editors' protocols fix T); null keeps the
    method's."""

    name: str = "editor"
    source: str = "free"
    guidance_scale: float = 7.5
    inversion_prompt: str = "source"
    source_prompt: str = "source"
    invert_guidance: float = 1.0
    uint8: str = "truncate"
    num_steps: int | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCE_POLICIES:
            raise ValueError(f"edit.source must be one of {', '.join(SOURCE_POLICIES)}, got {self.source!r}")
        if self.uint8 not in UINT8_MODES:
            raise ValueError(f"edit.uint8 must be one of {', '.join(UINT8_MODES)}, got {self.uint8!r}")
        if self.guidance_scale < 0 or self.invert_guidance < 0:
            raise ValueError(f"edit.guidance_scale and edit.invert_guidance must be >= 0, got {self.guidance_scale} "
                             f"and {self.invert_guidance}")
        if self.num_steps is not None and (isinstance(self.num_steps, bool) or int(self.num_steps) != self.num_steps
                                           or self.num_steps < 1):
            raise ValueError(f"edit.num_steps must be an integer >= 1 or null, got {self.num_steps}")

    def prompts(self, which: str, item_prompts: Sequence[str]) -> list[str]:
        """The prompts of one branch: the items' own for "source", else the configured string for every item."""
        return list(item_prompts) if which == "source" else [str(which)] * len(item_prompts)

    def unsupported(self, model_cfg: Any, method: Any) -> str | None:
        """Why this editor cannot run with this model (its config node) and inversion method, or None."""
        return None

    def edit(self, batch: EditBatch) -> EditResult:
        """Invert (or not) and edit one batch."""
        raise NotImplementedError
