"""V injection (RF-Solver-Edit, Wang et al., ICML 2025; FireFlow, Deng et al., ICML 2025; flow-matching.md §4.3-4):
the value features of FLUX's single-stream blocks, cached while inverting, replace the target pass's own in its first
``inject`` sampling steps.

The cache is filled through a forward hook on each chosen block's value projection (``attn.to_v``, text and image
tokens, as the released code replaces the whole V), so diffusers' attention processor runs unchanged and a passive
run is bitwise a plain one. A network call is matched to its counterpart by the walk's step (sampling step n reads
inversion step T − 1 − n), by whether the call sits on a grid level or between two (a midpoint), and by its order
among such calls; so RF-Solver's two evaluations per step, FireFlow's reused midpoint and Euler's single evaluation
all pair up, and a sampling call whose counterpart the inversion never made keeps its own V. The cache lives on the
network's device (``cache_on: cpu`` moves it to host memory); its size is recorded per image (``v_cache_bytes``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from easyinv.editing.editor import EditBatch, EditResult
from easyinv.editing.flow_editor import FlowEditor
from easyinv.inversion import FiniteWatch, Grid, reconstruct_with

__all__ = ["StepClock", "VCache", "VInjectEditor", "value_hooks"]

CACHE_PLACES = ("device", "cpu")


class VCache:
    """The value features of an inversion, keyed by (inversion step, level or midpoint, order, block).

    ``mode``: "off" (hooks pass everything through), "record" (inversion: keep the V of the steps that feed the
    first ``inject`` sampling steps) or "inject" (sampling: replace V in those steps). ``step`` is set by a
    :class:`StepClock`; :meth:`call` is told the time of every network call (the denoisers' observer).
    """

    def __init__(self, grid: Grid, inject: int, on_cpu: bool = False):
        self.T, self.inject, self.on_cpu = grid.T, int(inject), on_cpu
        self.level_times = frozenset(float(t) for t in (grid.time0, *grid.timesteps))
        self.store: dict[tuple[int, str, int, int], Tensor] = {}
        self.mode = "off"
        self.step = 0
        self._key: tuple[int, str, int] | None = None
        self._seen: dict[tuple[int, str], int] = {}
        self.injected = 0

    def start(self, mode: str) -> None:
        self.mode, self.step, self._key, self._seen = mode, 0, None, {}

    def call(self, t: int | float) -> None:
        kind = "level" if float(t) in self.level_times else "mid"
        order = self._seen.get((self.step, kind), 0)
        self._seen[self.step, kind] = order + 1
        self._key = (self.step, kind, order)

    def value(self, block: int, v: Tensor) -> Tensor | None:
        """What the hook of ``block`` returns for the value projection ``v`` (None: keep it)."""
        if self.mode == "off" or self._key is None:
            return None
        step, kind, order = self._key
        if self.mode == "record":
            if self.T - 1 - step < self.inject:
                self.store[step, kind, order, block] = v.detach().to("cpu" if self.on_cpu else v.device, copy=True)
            return None
        if step >= self.inject:
            return None
        cached = self.store.get((self.T - 1 - step, kind, order, block))
        if cached is None:
            return None
        if cached.shape != v.shape:
            raise ValueError(f"V injection: cached V of shape {tuple(cached.shape)} for a call of shape "
                             f"{tuple(v.shape)}: the inversion and the edit must evaluate the same rows")
        self.injected += 1
        return cached.to(v.device, v.dtype)

    def nbytes(self) -> int:
        return sum(t.nelement() * t.element_size() for t in self.store.values())


class StepClock(FiniteWatch):
    """A :class:`FiniteWatch` that also tells the cache which step of the walk is running."""

    def __init__(self, batch_size: int, cache: VCache, device: torch.device | str = "cpu"):
        super().__init__(batch_size, device)
        self.cache = cache

    def see(self, z: Tensor, step: int) -> None:
        super().see(z, step)
        self.cache.step = step


def single_blocks(transformer: torch.nn.Module) -> Sequence[torch.nn.Module]:
    blocks = getattr(transformer, "single_transformer_blocks", None)
    if blocks is None:
        raise ValueError("V injection needs FLUX's single-stream blocks (transformer.single_transformer_blocks)")
    return blocks


@contextmanager
def value_hooks(transformer: torch.nn.Module, blocks: Sequence[int], cache: VCache) -> Iterator[None]:
    """Forward hooks on the value projections of the chosen single-stream blocks, removed on exit."""
    stack = single_blocks(transformer)
    handles = []
    try:
        for index in blocks:
            attn = stack[index].attn
            if getattr(attn, "fused_projections", False):
                raise ValueError("V injection hooks attn.to_v: unfuse the QKV projections first")
            handles.append(attn.to_v.register_forward_hook(
                lambda _m, _i, out, index=index: cache.value(index, out)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class VInjectEditor(FlowEditor):
    """V injection's knobs: ``blocks`` (single-stream block indices; null = 20 … 37 of FLUX.1-dev's 38, clipped to
    the model), ``inject`` (sampling steps with injected V), ``num_steps`` T, guidance 1 (inversion) / 2 (edit);
    defaults RF-Solver-Edit's PIE-Bench run (15 steps, inject 2). FireFlow's: 8 steps, inject 1."""

    name: str = "v_inject"
    num_steps: int | None = 15
    inject: int = 2
    blocks: tuple[int, ...] | None = None
    cache_on: str = "device"
    guidance_scale: float = 2.0
    invert_guidance: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.inject < 0:
            raise ValueError(f"edit.inject must be >= 0, got {self.inject}")
        if self.cache_on not in CACHE_PLACES:
            raise ValueError(f"edit.cache_on must be one of {', '.join(CACHE_PLACES)}, got {self.cache_on!r}")
        if self.blocks is not None:
            object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))

    def unsupported(self, model_cfg: Any, method: Any) -> str | None:
        if model_cfg.get("family") != "flux":
            return "it replaces V in FLUX's single-stream blocks, which only FLUX.1 has"
        return super().unsupported(model_cfg, method)

    def chosen_blocks(self, transformer: torch.nn.Module) -> tuple[int, ...]:
        count = len(single_blocks(transformer))
        if self.blocks is None:
            return tuple(range(min(20, count - 1), count))
        bad = [b for b in self.blocks if not 0 <= b < count]
        if bad:
            raise ValueError(f"edit.blocks {bad} outside this model's {count} single-stream blocks (0..{count - 1})")
        return self.blocks

    def edit(self, batch: EditBatch) -> EditResult:
        B, grid, device = len(batch.source_prompts), batch.grid, batch.z0.device  # noqa: N806
        transformer = batch.model.transformer
        cache = VCache(grid, min(int(self.inject), grid.T), on_cpu=self.cache_on == "cpu")
        blocks = self.chosen_blocks(transformer)
        with value_hooks(transformer, blocks, cache):
            cache.start("record")
            inversion, den_inv, watch_inv = self.invert(batch, grid, watch=StepClock(B, cache, device),
                                                        observer=cache.call)
            cache.start("off")
            source = self.sample_source(batch, inversion, grid)
            cache.start("inject")
            den_t = self.denoisers(batch, list(batch.target_prompts), float(self.guidance_scale))
            den_t.observer = cache.call
            watch = StepClock(B, cache, device)
            with batch.timer("edit"):
                z_tgt = reconstruct_with(batch.method, den_t, inversion, grid, watch=watch)
            cache.start("off")
        fields = {"v_cache_bytes": cache.nbytes() // max(B, 1), "v_blocks": ",".join(str(b) for b in blocks),
                  "v_injected_calls": cache.injected // max(len(blocks), 1)}
        return EditResult(inversion=inversion, z_source=source.z, z_target=z_tgt,
                          nfe_invert=den_inv.nfe("invert").cpu(), nfe_offsets=torch.zeros(B, dtype=torch.long),
                          nfe_edit=den_t.nfe("reconstruct").cpu(),
                          network_seconds=den_inv.seconds + source.den.seconds + den_t.seconds,
                          invert_nonfinite=watch_inv.steps(), edit_nonfinite=watch.steps(), fields=fields,
                          row_fields=[{"nfe_source": int(k)} for k in source.den.nfe("reconstruct").cpu()])
