"""EDICT (Wallace, Gokul & Naik, CVPR 2023; more-methods.md §3): two coupled latent sequences whose every step is an
affine map with an exact algebraic inverse, so the round trip returns z_0 up to round-off for any ε.

Sampling step k+1 → k (n = T−1−k, both ε at the step's timestep τ_{k+1}): for even n (or without leapfrog)
x' = D(x, ε(y)), y' = D(y, ε(x')); for odd n the roles swap; then mix x'' = p x' + (1−p) y', y'' = (1−p) x'' + p y'.
Inversion undoes the mix, then the two updates in reverse order. It starts from x_0 = y_0 = z_0, keeps the pair
(x_T, y_T) (state ``y_T``) and reconstructs x_0. NFE per step: 2 in each direction (×2 under CFG). The official code
ran in float64 (``precision.latent=float64`` here); the x − y difference grows by p⁻² per inversion step.
Exactness needs the same ε both ways, so the inversion uses the reconstruction's guidance
(``guidance.reconstruct``; the official codes used one w for both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from easyinv.inversion import Denoisers, FiniteWatch, Grid, Inversion, ddim_step
from easyinv.method_checks import check_no_blend, check_num_steps

# check_no_blend lives in easyinv.method_checks; re-exported here
__all__ = ["EDICT", "check_no_blend"]


@dataclass(frozen=True)
class EDICT:
    """Exact inversion by coupled transformations; ``mix`` is the paper's p (0.93)."""

    unsupported_paths: ClassVar[dict[str, str]] = {}
    needs_cfg: ClassVar[str | None] = None
    exact: ClassVar[bool] = True

    name: str = "edict"
    num_steps: int = 50
    mix: float = 0.93
    leapfrog: bool = True
    blend: None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_steps", check_num_steps(self.num_steps))
        if not 0.5 < float(self.mix) <= 1.0:
            raise ValueError(f"method.mix must be in (0.5, 1], got {self.mix}")
        check_no_blend(self.name, self.blend)

    def nfe_per_image(self, T: int) -> tuple[int, int]:  # noqa: N803
        return 2 * T, 2 * T

    def _swapped(self, k: int, T: int) -> bool:  # noqa: N803
        return self.leapfrog and (T - 1 - k) % 2 == 1

    def invert(
        self, den: Denoisers, z0: Tensor, grid: Grid, seeds: tuple[int, ...], watch: FiniteWatch | None
    ) -> Inversion:
        eps, p, T = den.at(den.guidance["reconstruct"]), float(self.mix), grid.T  # noqa: N806
        x = y = z0
        trajectory = [z0]
        for k in range(T):
            t, a_lo, a_hi = grid.timesteps[k], grid.alpha_src[k], grid.alpha_tgt[k]
            y_ = (y - (1 - p) * x) / p  # un-mix, newest first
            x_ = (x - (1 - p) * y_) / p
            if self._swapped(k, T):
                x = ddim_step(x_, eps(y_, t), a_lo, a_hi)
                y = ddim_step(y_, eps(x, t), a_lo, a_hi)
            else:
                y = ddim_step(y_, eps(x_, t), a_lo, a_hi)
                x = ddim_step(x_, eps(y, t), a_lo, a_hi)
            trajectory.append(x)
            if watch is not None:
                watch.see(x + y, k + 1)
        return Inversion(z_T=x, trajectory=trajectory, nfe=den.nfe("invert"), state={"y_T": y})

    def reconstruct(self, den: Denoisers, inversion: Inversion, grid: Grid, watch: FiniteWatch | None) -> Tensor:
        eps, p, T = den.for_phase(), float(self.mix), grid.T  # noqa: N806
        x, y = inversion.z_T, inversion.state["y_T"]
        for n, k in enumerate(reversed(range(T)), start=1):
            t, a_lo, a_hi = grid.timesteps[k], grid.alpha_src[k], grid.alpha_tgt[k]
            if self._swapped(k, T):
                y_ = ddim_step(y, eps(x, t), a_hi, a_lo)
                x_ = ddim_step(x, eps(y_, t), a_hi, a_lo)
            else:
                x_ = ddim_step(x, eps(y, t), a_hi, a_lo)
                y_ = ddim_step(y, eps(x_, t), a_hi, a_lo)
            x = p * x_ + (1 - p) * y_
            y = (1 - p) * x + p * y_
            if watch is not None:
                watch.see(x + y, n)
        return x
