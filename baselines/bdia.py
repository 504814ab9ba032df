"""BDIA, bidirectional integration approximation (Zhang, Lewis & Kleijn, ECCV 2024; more-methods.md §4).

One sequence, ε evaluated on each level's own latent at its own timestep (ε_k = ε(z_k, τ_k), τ_0 = 0). Sampling
k → k−1 uses the pair (z_{k+1}, z_k): z_{k−1} = γ z_{k+1} − γ D_{k→k+1}(z_k, ε_k) + D_{k→k−1}(z_k, ε_k); inversion
solves it for z_{k+1}. The first inversion step is DDIM with ε(z_0, τ_0). State: z_{T−1} beside z_T; the
reconstruction runs T−1 steps and is exact for any ε. γ = 1 is time-symmetric (the reconstruction default at
T = 50), 0.94 the editing value; γ < 1 amplifies round-off like γ^−T, which a config check bounds.
Exactness needs the same ε both ways, so the inversion uses the reconstruction's guidance
(``guidance.reconstruct``; the official codes used one w for both).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from easyinv.inversion import Denoisers, FiniteWatch, Grid, Inversion, ddim_step
from easyinv.method_checks import check_no_blend, check_num_steps

__all__ = ["BDIA", "amplification_guard"]

log = logging.getLogger(__name__)

# round-off grows like γ^-T through the inversion: beyond these factors the round trip no longer means anything
MAX_AMPLIFICATION = {torch.float64: 1e8, torch.float32: 1e2}


def amplification_guard(gamma: float, steps: int, dtype: torch.dtype | None = None) -> float:
    """γ^−T; a ValueError when it exceeds what float64 can absorb, a warning when ``dtype`` cannot."""
    factor = float(gamma) ** -int(steps)
    if factor > MAX_AMPLIFICATION[torch.float64]:
        raise ValueError(f"method.gamma={gamma} at T={steps} amplifies round-off by γ^-T = {factor:.1e}: the "
                         "inversion is numerically meaningless (use γ >= 0.9 at T = 50, or fewer steps)")
    limit = MAX_AMPLIFICATION.get(dtype) if dtype is not None else None
    if limit is not None and factor > limit:
        log.warning("BDIA: γ^-T = %.1e exceeds what %s round-off tolerates (%.0e); expect an inexact round trip",
                    factor, dtype, limit)
    return factor


@dataclass(frozen=True)
class BDIA:
    """Exact inversion by a time-reversible two-level update with mixing weight ``gamma``."""

    unsupported_paths: ClassVar[dict[str, str]] = {}
    needs_cfg: ClassVar[str | None] = None
    exact: ClassVar[bool] = True

    name: str = "bdia"
    num_steps: int = 50
    gamma: float = 1.0
    blend: None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_steps", check_num_steps(self.num_steps))
        if not 0.0 < float(self.gamma) <= 1.0:
            raise ValueError(f"method.gamma must be in (0, 1], got {self.gamma}")
        check_no_blend(self.name, self.blend)
        amplification_guard(self.gamma, self.num_steps)

    def nfe_per_image(self, T: int) -> tuple[int, int] | None:  # noqa: N803
        return T, T - 1

    def invert(
        self, den: Denoisers, z0: Tensor, grid: Grid, seeds: tuple[int, ...], watch: FiniteWatch | None
    ) -> Inversion:
        eps, g = den.at(den.guidance["reconstruct"]), float(self.gamma)
        amplification_guard(g, grid.T, z0.dtype)
        a, tau = grid.levels()
        z_prev, z = z0, ddim_step(z0, eps(z0, tau[0]), a[0], a[1])  # first step: DDIM, own timestep
        trajectory = [z0, z]
        if watch is not None:
            watch.see(z, 1)
        for k in range(1, grid.T):
            e = eps(z, tau[k])
            z_prev, z = z, (z_prev - ddim_step(z, e, a[k], a[k - 1])) / g + ddim_step(z, e, a[k], a[k + 1])
            trajectory.append(z)
            if watch is not None:
                watch.see(z, k + 1)
        return Inversion(z_T=z, trajectory=trajectory, nfe=den.nfe("invert"), state={"z_T_minus_1": z_prev})

    def reconstruct(self, den: Denoisers, inversion: Inversion, grid: Grid, watch: FiniteWatch | None) -> Tensor:
        eps, g = den.for_phase(), float(self.gamma)
        a, tau = grid.levels()
        z_next, z = inversion.z_T, inversion.state["z_T_minus_1"]
        for n, k in enumerate(range(grid.T - 1, 0, -1), start=1):
            e = eps(z, tau[k])
            z_next, z = z, g * z_next - g * ddim_step(z, e, a[k], a[k + 1]) + ddim_step(z, e, a[k], a[k - 1])
            if watch is not None:
                watch.see(z, n)
        return z
