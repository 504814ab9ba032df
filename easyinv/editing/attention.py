"""Editors as diffusers attention processors: one processor per attention module, one shared controller per batch.

An editor (Prompt-to-Prompt, MasaCtrl) only needs two hooks inside attention: rewrite keys/values before attention
(MasaCtrl) and rewrite the softmax probabilities (Prompt-to-Prompt). :class:`EditAttnProcessor` computes attention as
diffusers' own processors do and calls those hooks of an :class:`EditController`; the editing walk sets
``controller.step`` before every UNet call (diffusers drops unknown ``cross_attention_kwargs``, so state travels through
the shared object, never through call counting) and calls ``controller.after_step`` after every scheduler step.

Layers are named, not counted: :func:`attention_layers` lists the attention modules in *execution* order
(down → mid → up; ``unet.attn_processors`` lists down, up, mid) with the transformer-block index MasaCtrl counts in
(editing.md §3.3, §3.6).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from easyinv.editing.layout import RowLayout

__all__ = ["EditAttnProcessor", "EditController", "LayerInfo", "attention_layers", "install"]

_BLOCKS = {"down_blocks": ("down", 0), "mid_block": ("mid", 1), "up_blocks": ("up", 2)}


@dataclass(frozen=True)
class LayerInfo:
    """One attention module of a UNet: its processor key, self/cross, UNet part and transformer-block index.

    ``index`` counts transformer blocks in execution order (attn1 and attn2 of one block share it), the numbering
    MasaCtrl's ``start_layer`` refers to (SD-1.x: 0–5 down, 6 mid, 7–15 up).
    """

    name: str
    kind: str  # "self" | "cross"
    block: str  # "down" | "mid" | "up"
    index: int


def _order_key(name: str) -> tuple:
    """Sort key putting module paths in execution order: down blocks, mid block, up blocks, then natural order."""
    parts = name.split(".")
    if parts[0] not in _BLOCKS:
        raise ValueError(f"attention module {name!r} is outside down_blocks/mid_block/up_blocks: unknown UNet layout")
    rank = _BLOCKS[parts[0]][1]
    rest = parts[1:]
    return (rank, tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in rest))


def attention_layers(unet: torch.nn.Module) -> list[LayerInfo]:
    """All attention modules of ``unet`` in execution order, from module names and structure (no forward pass).

    Works for any UNet2DConditionModel-like tree: SD-1.x, SD-XL (several transformer layers per block) and the tiny
    test models. Each distinct parent module of an ``attn*`` module (a transformer block) gets the next index.
    """
    found: list[tuple[str, str]] = []
    for path, module in unet.named_modules():
        if path and hasattr(module, "get_processor") and hasattr(module, "set_processor"):
            kind = "cross" if getattr(module, "is_cross_attention", False) else "self"
            found.append((path, kind))
    found.sort(key=lambda item: _order_key(item[0]))
    layers: list[LayerInfo] = []
    parents: dict[str, int] = {}
    for path, kind in found:
        parent = path.rsplit(".", 1)[0]
        if parent not in parents:
            parents[parent] = len(parents)
        block = _BLOCKS[path.split(".")[0]][0]
        layers.append(LayerInfo(name=f"{path}.processor", kind=kind, block=block, index=parents[parent]))
    return layers


class EditController:
    """What a processor asks of an editor; this base class edits nothing (the no-op controller of reference runs).

    ``active = False`` keeps every kernel and layer choice (``explicit`` must not look at ``active`` or ``step``) but
    skips every edit, so a passive pass (DirectInversion's offset pass) computes the source rows bit for bit as the
    edit pass does (editing.md §3.4(5)).
    """

    def __init__(self, num_steps: int) -> None:
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        self.num_steps = num_steps
        self.step = 0
        self.active = True
        self.layout: RowLayout | None = None
        self.layers: list[LayerInfo] = []

    def setup(self, layers: list[LayerInfo]) -> None:
        """Called by :func:`install` with the UNet's layers, so a controller can validate its layer choices."""
        self.layers = list(layers)

    def begin(self, layout: RowLayout) -> None:
        """Start a walk over a batch with this row layout: forget per-walk state (stores, counters)."""
        self.layout = layout
        self.step = 0

    def explicit(self, layer: LayerInfo, n_queries: int) -> bool:
        """Whether this layer computes softmax probabilities explicitly (else fused SDPA). Independent of
        ``active`` and ``step`` so that passive and active runs share kernels."""
        return False

    def edit_kv(self, layer: LayerInfo, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Rewrite keys/values ``(rows, tokens, inner_dim)`` before the head split."""
        return key, value

    def edit_probs(self, layer: LayerInfo, probs: Tensor) -> Tensor:
        """Rewrite (or record) attention probabilities ``(rows, heads, queries, keys)`` of an explicit layer; may
        write into ``probs`` (the processor's own tensor) and return it."""
        return probs

    def after_step(self, z_source: Tensor, z_target: Tensor) -> Tensor:
        """Latent update after each scheduler step (LocalBlend); ``(B, C, h, w)`` each; returns the target."""
        return z_target

    def report(self) -> list[dict[str, Any]]:
        """Per-image notes for the records (e.g. blend words not found); one dict per image of the batch."""
        return [] if self.layout is None else [{"image": b} for b in range(self.layout.images)]

    def _rows(self, n: int) -> RowLayout:
        """The layout of the current call, checked against the number of rows the layer sees."""
        if self.layout is None:
            raise RuntimeError(f"{type(self).__name__}: call begin(layout) before the first UNet call")
        if n != self.layout.rows:
            raise ValueError(f"{type(self).__name__}: attention sees {n} rows but the layout has "
                             f"{self.layout.rows} (4 x {self.layout.images} images)")
        return self.layout


class EditAttnProcessor:
    """Attention as diffusers' ``AttnProcessor``/``AttnProcessor2_0`` compute it, with the controller's hooks.

    Softmax is explicit (``attn.get_attention_scores`` + bmm, as ``AttnProcessor``) where ``controller.explicit``
    says so, fused ``F.scaled_dot_product_attention`` (as ``AttnProcessor2_0``) elsewhere: the explicit 64×64
    self-attention of SD would cost GBs. Without edits each path reproduces its diffusers counterpart; the two
    kernels differ in rounding only.
    """

    def __init__(self, layer: LayerInfo, controller: EditController) -> None:
        self.layer = layer
        self.controller = controller

    def __call__(self, attn: Any, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, temb: Tensor | None = None, *args: Any,
                 **kwargs: Any) -> Tensor:
        ctrl = self.controller
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch, key_len, _ = hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        if ctrl.active:
            key, value = ctrl.edit_kv(self.layer, key, value)

        heads = attn.heads
        head_dim = key.shape[-1] // heads
        q = query.view(batch, -1, heads, head_dim).transpose(1, 2)  # (rows, heads, tokens, head_dim)
        k = key.reshape(batch, -1, heads, head_dim).transpose(1, 2)  # reshape: an edit may return a gathered copy
        v = value.reshape(batch, -1, heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        n_queries, n_keys = q.shape[2], k.shape[2]

        mask = attn.prepare_attention_mask(attention_mask, key_len, batch) if attention_mask is not None else None
        if ctrl.explicit(self.layer, n_queries):
            # (rows * heads, tokens, head_dim) and bmm, as AttnProcessor: same kernels, same rounding
            flat = (batch * heads, -1, head_dim)
            probs = attn.get_attention_scores(q.reshape(flat), k.reshape(flat), mask)
            if ctrl.active:
                probs = ctrl.edit_probs(self.layer, probs.view(batch, heads, n_queries, n_keys))
            out = torch.bmm(probs.reshape(batch * heads, n_queries, n_keys), v.reshape(flat))
            out = out.view(batch, heads, n_queries, head_dim)
        else:
            if mask is not None:
                mask = mask.view(batch, heads, -1, mask.shape[-1])
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False,
                                                 scale=attn.scale)
        hidden_states = out.transpose(1, 2).reshape(batch, -1, heads * head_dim).to(query.dtype)

        hidden_states = attn.to_out[0](hidden_states)  # linear projection
        hidden_states = attn.to_out[1](hidden_states)  # dropout
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


@contextmanager
def install(unet: Any, controller: EditController) -> Iterator[list[LayerInfo]]:
    """Put an :class:`EditAttnProcessor` on every attention module for the ``with`` block, then restore the
    original processors (also on error). Yields the layers in execution order."""
    original = unet.attn_processors
    layers = attention_layers(unet)
    if sorted(layer.name for layer in layers) != sorted(original):
        raise ValueError(f"found {len(layers)} attention modules by name but the UNet lists {len(original)} "
                         "processors: unknown attention layout")
    controller.setup(layers)
    unet.set_attn_processor({layer.name: EditAttnProcessor(layer, controller) for layer in layers})
    try:
        yield layers
    finally:
        unet.set_attn_processor(dict(original))  # set_attn_processor pops from the dict it is given
