"""MasaCtrl (Cao et al., ICCV 2023): mutual self-attention, as PnPInversion runs it on PIE-Bench (editing.md §3.3).

From ``start_step`` on and in the transformer blocks from ``start_layer`` on (execution order; SD-1.x: 10–15 =
the decoder's 32×32 and 64×64 blocks at 512 px), every row's self-attention reads the keys and values of its
image's *source* row, in the unconditional and in the conditional half alike; cross-attention is untouched. The
source rows therefore compute exactly what they compute without control, and the target "queries" the source's
content. Only K/V change, so fused SDPA is kept everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from easyinv.editing.attention import EditController, LayerInfo
from easyinv.editing.attention_editor import AttentionEditor
from easyinv.editing.layout import RowLayout

__all__ = ["MasaCtrlController", "MasaCtrlEditor"]


def _matches(name: str, prefix: str) -> bool:
    """Whether a processor key lies under a module path (whole components: ``up_blocks.1`` ≠ ``up_blocks.10``)."""
    return name == prefix or name.startswith(prefix.rstrip(".") + ".")


class MasaCtrlController(EditController):
    """Mutual self-attention for one batch: target rows' self-attention K/V := their source rows' K/V.

    Layers: transformer blocks with execution index ≥ ``start_layer``, or, when ``layers`` is given, the blocks
    under those module paths (e.g. ``["up_blocks.2", "up_blocks.3"]``), which also works on SD-XL and tiny models.
    """

    def __init__(self, num_steps: int, start_step: int = 4, start_layer: int = 10,
                 layers: Sequence[str] | None = None) -> None:
        super().__init__(num_steps)
        _check_knobs(start_step, start_layer, layers)
        self.start_step = start_step
        self.start_layer = start_layer
        self.prefixes = None if layers is None else tuple(str(p) for p in layers)
        self._rowmap: dict[tuple[int, torch.device], Tensor] = {}

    def setup(self, layers: list[LayerInfo]) -> None:
        """Check the layer choice against the UNet: upstream indices silently select nothing on smaller UNets."""
        super().setup(layers)
        if self.prefixes is None:
            blocks = 1 + max((layer.index for layer in layers), default=-1)
            if self.start_layer >= blocks:
                raise ValueError(f"MasaCtrl start_layer={self.start_layer} is beyond this UNet's {blocks} transformer "
                                 f"blocks (indices 0..{blocks - 1}); set edit.start_layer or edit.layers")
        else:
            for prefix in self.prefixes:
                if not any(layer.kind == "self" and _matches(layer.name, prefix) for layer in layers):
                    raise ValueError(f"MasaCtrl layers: no self-attention module under {prefix!r}")

    def begin(self, layout: RowLayout) -> None:
        super().begin(layout)
        self._rowmap = {}

    def selected(self, layer: LayerInfo) -> bool:
        """Whether MasaCtrl acts in this layer (at steps ≥ ``start_step``)."""
        if layer.kind != "self":
            return False
        if self.prefixes is None:
            return layer.index >= self.start_layer
        return any(_matches(layer.name, prefix) for prefix in self.prefixes)

    def edit_kv(self, layer: LayerInfo, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        if not self.active or self.step < self.start_step or not self.selected(layer):
            return key, value
        layout = self._rows(key.shape[0])
        cache = (layout.rows, key.device)
        if cache not in self._rowmap:
            rows = torch.arange(layout.rows)
            rows[layout.target_rows] = layout.source_rows  # each half: target rows read their source row
            self._rowmap[cache] = rows.to(key.device)
        rows = self._rowmap[cache]
        return key[rows], value[rows]


def _check_knobs(start_step: int, start_layer: int, layers: Sequence[str] | None) -> None:
    if start_step < 0:
        raise ValueError(f"MasaCtrl start_step must be >= 0, got {start_step}")
    if start_layer < 0:
        raise ValueError(f"MasaCtrl start_layer must be >= 0, got {start_layer}")
    if layers is not None and (isinstance(layers, str) or not all(isinstance(p, str) and p for p in layers)):
        raise ValueError(f"MasaCtrl layers must be a list of module paths (e.g. ['up_blocks.2']) or null, "
                         f"got {layers!r}")


@dataclass(frozen=True)
class MasaCtrlEditor(AttentionEditor):
    """MasaCtrl editor settings (defaults: PnPInversion's PIE-Bench run: the source branch and the inversion use
    the empty prompt, the target the editing prompt); builds a controller per batch."""

    name: str = "masactrl"
    inversion_prompt: str = ""
    source_prompt: str = ""
    start_step: int = 4
    start_layer: int = 10
    layers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_knobs(self.start_step, self.start_layer, self.layers)
        if self.layers is not None:  # Hydra hands a ListConfig: keep the dataclass hashable and plain
            object.__setattr__(self, "layers", tuple(str(p) for p in self.layers))

    def controller(self, source_prompts: Sequence[str], target_prompts: Sequence[str],
                   blend_words: Sequence[Any] | None, tokenizer: Any, num_steps: int) -> MasaCtrlController:
        """A fresh controller for one batch (prompts, blend words and tokenizer are not used by MasaCtrl)."""
        if len(source_prompts) != len(target_prompts):
            raise ValueError(f"{len(source_prompts)} source prompts for {len(target_prompts)} target prompts")
        return MasaCtrlController(num_steps, start_step=self.start_step, start_layer=self.start_layer,
                                  layers=self.layers)
