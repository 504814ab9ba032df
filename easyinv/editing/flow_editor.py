"""What the flow-model editors share (V injection, Uni-Edit, RF-Inversion, FlowEdit; flow-matching.md §4).

MM-DiT transformers have no cross-attention, so these editors either need no hook at all or hook one tensor of the
attention (V injection). Each samples its own branches: the target branch is the edit; the source branch, sampled
from the same inversion with the source prompt, is the reconstruction the record measures (PSNR / SSIM / LPIPS of
the source). The flow repositories run no source branch: its NFE is recorded apart (``nfe_source``) and left out of
``nfe``, which is the protocol's cost as the papers count it (inversion + edit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from easyinv.editing.editor import EditBatch, Editor
from easyinv.inversion import Denoisers, FiniteWatch, Grid, Inversion, invert_with, reconstruct_with

__all__ = ["FlowEditor", "Sampled"]


@dataclass
class Sampled:
    """A branch sampled by a flow editor: its final latent, its denoisers (for NFE and time) and its watch."""

    z: Tensor
    den: Denoisers
    watch: FiniteWatch


@dataclass(frozen=True)
class FlowEditor(Editor):
    """A flow editor. ``source_guidance``: guidance of the source branch (null: ``guidance_scale``, the edit's)."""

    source_guidance: float | None = None
    paths: ClassVar[tuple[str, ...]] = ("flow",)  # the model paths the editor's maths holds on

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.source_guidance is not None and self.source_guidance < 0:
            raise ValueError(f"edit.source_guidance must be >= 0 or null, got {self.source_guidance}")

    def unsupported(self, model_cfg: Any, method: Any) -> str | None:
        path = str(model_cfg.get("path", "vp"))
        if path not in self.paths:
            return f"its update is written for {' or '.join(self.paths)} models, and this one is on the {path} path"
        return None

    @property
    def source_w(self) -> float:
        return float(self.guidance_scale if self.source_guidance is None else self.source_guidance)

    def invert(self, batch: EditBatch, grid: Grid, watch: FiniteWatch | None = None,
               observer: Callable[[int | float], None] | None = None) -> tuple[Inversion, Denoisers, FiniteWatch]:
        """The protocol's inversion over ``grid`` with the editor's inversion prompt and guidance (``watch`` and
        ``observer`` see its steps and its network calls' times, for an editor's hooks)."""
        prompts = self.prompts(self.inversion_prompt, batch.source_prompts)
        w = float(self.invert_guidance)
        den = batch.denoisers(prompts, {"invert": w, "reconstruct": w})
        den.observer = observer
        watch = watch if watch is not None else FiniteWatch(len(prompts), batch.z0.device)
        with batch.timer("invert"):
            inversion = invert_with(batch.method, den, batch.z0, grid, batch.seeds, watch=watch)
        return inversion, den, watch

    def denoisers(self, batch: EditBatch, prompts: list[str], guidance: float) -> Denoisers:
        """Denoisers of a sampling branch (counted in the reconstruct phase)."""
        den = batch.denoisers(prompts, {"invert": guidance, "reconstruct": guidance})
        den.phase = "reconstruct"
        return den

    def sample_source(self, batch: EditBatch, inversion: Inversion, grid: Grid) -> Sampled:
        """The source branch: the method's own reconstruction from the inversion with the source prompt."""
        den = self.denoisers(batch, self.prompts(self.source_prompt, batch.source_prompts), self.source_w)
        watch = FiniteWatch(len(batch.source_prompts), batch.z0.device)
        with batch.timer("source"):
            z = reconstruct_with(batch.method, den, inversion, grid, watch=watch)
        return Sampled(z, den, watch)
