"""RF-Inversion's controlled editing (Rout et al., ICLR 2025; flow-matching.md §4.2): sample from the inversion's
z_T with the target prompt along the velocity pulled toward the source latent y0 for the first sampling steps.

Sampling step n goes σ → σ' (Δ = σ' − σ < 0) along v̂ = v(X; c) + η_n·((X − y0)/σ − v(X; c)), the bracket being
dx/dσ of the straight path to y0, with η_n = ``eta`` for ``int(start·T) ≤ n < int(stop·T)``, 0 otherwise (t := σ,
so η = 1 over every step lands on y0 exactly). Any inversion feeds it (the paper's: ``method=rf_inversion``, the
controlled forward ODE with prompt "" at FLUX guidance 0); the source branch is the same walk with the source prompt,
so equal prompts give edit = reconstruction. No hook.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from easyinv.editing.editor import EditBatch, EditResult
from easyinv.editing.flow_editor import FlowEditor
from easyinv.inversion import Denoiser, FiniteWatch, Grid
from easyinv.steps import eta_schedule, rf_inversion_reverse_step

__all__ = ["RFInversionEditor", "controlled_sample"]


def controlled_sample(eps: Denoiser, z_T: Tensor, y0: Tensor, grid: Grid, eta: float, start: float,  # noqa: N803
                      stop: float, watch: FiniteWatch | None = None) -> Tensor:
    """RF-Inversion's controlled reverse ODE from ``z_T`` over a flow ``grid`` toward ``y0``, η in the sampling steps
    [int(start·T), int(stop·T)) (``baselines.rf_inversion``'s step and window, so method and editor agree)."""
    z = z_T
    etas = eta_schedule(grid.T, eta, start, stop)
    for n, i in enumerate(reversed(range(grid.T))):
        here, there = grid.alpha_tgt[i], grid.alpha_src[i]
        z = rf_inversion_reverse_step(z, eps(z, grid.timesteps[i]), y0, here, there, etas[n])
        if watch is not None:
            watch.see(z, n + 1)
    return z


@dataclass(frozen=True)
class RFInversionEditor(FlowEditor):
    """RF-Inversion's editing knobs: η (0.9) over the sampling steps [int(start·T), int(stop·T)) (0, 7/28), the
    edit's guidance (FLUX 3.5), the inversion's prompt "" and guidance 0 (the paper's forward ODE)."""

    name: str = "rf_inversion"
    num_steps: int | None = 28
    eta: float = 0.9
    start: float = 0.0
    stop: float = 0.25
    guidance_scale: float = 3.5
    invert_guidance: float = 0.0
    inversion_prompt: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= float(self.eta) <= 1.0:
            raise ValueError(f"edit.eta must be in [0, 1], got {self.eta}")
        if not 0.0 <= float(self.start) <= float(self.stop) <= 1.0:
            raise ValueError(f"edit.start and edit.stop must satisfy 0 <= start <= stop <= 1, got {self.start}, "
                             f"{self.stop}")

    def edit(self, batch: EditBatch) -> EditResult:
        B, grid = len(batch.source_prompts), batch.grid  # noqa: N806
        inversion, den_inv, watch_inv = self.invert(batch, grid)
        window = int(float(self.start) * grid.T), int(float(self.stop) * grid.T)  # recorded as eta_steps
        branches = []
        for phase, prompts, w in (("source", self.prompts(self.source_prompt, batch.source_prompts), self.source_w),
                                  ("edit", list(batch.target_prompts), float(self.guidance_scale))):
            den = self.denoisers(batch, prompts, w)
            watch = FiniteWatch(B, batch.z0.device)
            with batch.timer(phase):
                z = controlled_sample(den.for_phase(), inversion.z_T, batch.z0, grid, float(self.eta),
                                      float(self.start), float(self.stop), watch=watch)
            branches.append((z, den, watch))
        (z_src, den_src, _), (z_tgt, den_tgt, watch_tgt) = branches
        return EditResult(inversion=inversion, z_source=z_src, z_target=z_tgt,
                          nfe_invert=den_inv.nfe("invert").cpu(), nfe_offsets=torch.zeros(B, dtype=torch.long),
                          nfe_edit=den_tgt.nfe("reconstruct").cpu(),
                          network_seconds=den_inv.seconds + den_src.seconds + den_tgt.seconds,
                          invert_nonfinite=watch_inv.steps(), edit_nonfinite=watch_tgt.steps(),
                          fields={"eta_steps": f"{window[0]}-{window[1]}"},
                          row_fields=[{"nfe_source": int(k)} for k in den_src.nfe("reconstruct").cpu()])
