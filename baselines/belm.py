"""O-BELM, bidirectional explicit linear multistep (Wang et al., NeurIPS 2024; more-methods.md §6.1).

A two-step linear multistep scheme in ρ_k = σ_k / α_k (α_k = √ā_k, σ_k = √(1 − ā_k), h_k = ρ_k − ρ_{k−1}) whose
sampling step (z_{k+1}, z_k) → z_{k−1} is solved exactly for z_{k+1} in inversion; ε_k = ε(z_k, τ_k) on each level's
own latent (τ_0 = 0). First inversion step: DDIM with ε(z_0, τ_0). State z_{T−1} beside z_T; T−1 reconstruction
steps; exact for any ε. NFE: T + (T − 1).
Exactness needs the same ε both ways, so the inversion uses the reconstruction's guidance
(``guidance.reconstruct``; the official codes used one w for both).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

from torch import Tensor

from easyinv.inversion import Denoisers, FiniteWatch, Grid, Inversion, ddim_step
from easyinv.method_checks import check_no_blend, check_num_steps

__all__ = ["BELM", "belm_coefficients"]


@lru_cache(maxsize=64)
def belm_coefficients(levels: tuple[float, ...]) -> tuple[tuple[float, float, float], ...]:
    """Per level k = 1 … T−1, the sampling coefficients (c_{k+1}, c_k, c_ε) of
    z_{k−1} = c_{k+1} z_{k+1} + c_k z_k − c_ε ε_k (O-BELM; float64 host arithmetic)."""
    alpha = [a**0.5 for a in levels]
    rho = [(1 - a) ** 0.5 / a**0.5 for a in levels]
    out = []
    for k in range(1, len(levels) - 1):
        h_k, h_n = rho[k] - rho[k - 1], rho[k + 1] - rho[k]
        out.append((
            h_k**2 / h_n**2 * alpha[k - 1] / alpha[k + 1],
            (h_n**2 - h_k**2) / h_n**2 * alpha[k - 1] / alpha[k],
            h_k * (h_k + h_n) / h_n * alpha[k - 1],
        ))
    return tuple(out)


@dataclass(frozen=True)
class BELM:
    """Exact inversion by O-BELM's optimal two-step coefficients; no hyperparameter."""

    # read by the job before any weight loads (easyinv.run.job_parts.check_method_on_model)
    unsupported_paths: ClassVar[dict[str, str]] = {
        "flow": "its coefficients are written in rho = sigma/alpha, which is infinite at the flow path's noise end "
                "(sigma = 1, alpha = 0)",
    }
    needs_cfg: ClassVar[str | None] = None
    exact: ClassVar[bool] = True

    name: str = "belm"
    num_steps: int = 50
    blend: None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_steps", check_num_steps(self.num_steps))
        check_no_blend(self.name, self.blend)

    def nfe_per_image(self, T: int) -> tuple[int, int] | None:  # noqa: N803
        return T, T - 1

    def invert(
        self, den: Denoisers, z0: Tensor, grid: Grid, seeds: tuple[int, ...], watch: FiniteWatch | None
    ) -> Inversion:
        eps = den.at(den.guidance["reconstruct"])
        a, tau = grid.levels()
        coef = belm_coefficients(a)
        z_prev, z = z0, ddim_step(z0, eps(z0, tau[0]), a[0], a[1])
        trajectory = [z0, z]
        if watch is not None:
            watch.see(z, 1)
        for k in range(1, grid.T):
            c_next, c_k, c_eps = coef[k - 1]
            e = eps(z, tau[k])
            z_prev, z = z, (z_prev - c_k * z + c_eps * e) / c_next  # the sampling relation solved for z_{k+1}
            trajectory.append(z)
            if watch is not None:
                watch.see(z, k + 1)
        return Inversion(z_T=z, trajectory=trajectory, nfe=den.nfe("invert"), state={"z_T_minus_1": z_prev})

    def reconstruct(self, den: Denoisers, inversion: Inversion, grid: Grid, watch: FiniteWatch | None) -> Tensor:
        eps = den.for_phase()
        a, tau = grid.levels()
        coef = belm_coefficients(a)
        z_next, z = inversion.z_T, inversion.state["z_T_minus_1"]
        for n, k in enumerate(range(grid.T - 1, 0, -1), start=1):
            c_next, c_k, c_eps = coef[k - 1]
            z_next, z = z, c_next * z_next + c_k * z - c_eps * eps(z, tau[k])
            if watch is not None:
                watch.see(z, n)
        return z
