"""Uni-Inv (Jiao et al., "UniEdit-Flow", ICLR 2026; flow-matching.md §4 item 5): predictor–corrector inversion.

Step k from level σ_k to σ_{k+1} (h = σ_{k+1} − σ_k) with the velocity carried from the previous step:

    ẑ = z_k + h·v_prev,   v_prev ← v(ẑ, σ_{k+1}),   z_{k+1} = z_k + h·v_prev,

the first v_prev being v(z_0, σ_0). Each step predicts the target latent with the last velocity and corrects the
step with the velocity at that prediction and the target level: T + 1 NFE for the inversion. The reconstruction is
plain Euler sampling over the same grid (the core's default reconstruction: velocity at the current latent and
level), T NFE. The velocity is the protocol's for the phase (``den.for_phase()``; UniEdit-Flow inverts FLUX at
guidance 1).

Written with the core's step (:func:`ddim_step`), the rule is path-agnostic: on the VP path it is the same
predictor–corrector with ε. EasyInv's blend (``+method/blend=easyinv``) composes through :class:`BlendWalk` as in
the shared walk (this harness's composition, not the paper's): the step starts from the blended latent; the only
fresh prediction on a latent of the walk, v(z_0, σ_0), is at iteration 0, which no blend selects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from easyinv.inversion import Blender, BlendWalk, Denoiser, Denoisers, FiniteWatch, Grid, Inversion, Level, ddim_step
from easyinv.method_checks import check_num_steps

__all__ = ["UniInv", "uni_inv_step"]


def uni_inv_step(
    eps: Denoiser, z: Tensor, v_prev: Tensor, a_from: float | Level, a_to: float | Level, time_to: int | float
) -> tuple[Tensor, Tensor]:
    """One Uni-Inv step of ``z`` ``(B, C, H, W)`` from ``a_from`` to ``a_to``: predict with ``v_prev``, evaluate the
    network there at ``time_to`` (1 NFE), step with that. Returns (z', v), v being the next step's ``v_prev``."""
    v = eps(ddim_step(z, v_prev, a_from, a_to), time_to)
    return ddim_step(z, v, a_from, a_to), v


@dataclass(frozen=True)
class UniInv:
    """Uni-Inv inversion (T + 1 NFE) with the default Euler/DDIM reconstruction (T NFE)."""

    unsupported_paths: ClassVar[dict[str, str]] = {}
    needs_cfg: ClassVar[str | None] = None
    exact: ClassVar[bool] = False

    name: str = "uni_inv"
    num_steps: int = 15  # UniEdit-Flow's default T on FLUX and SD3
    blend: Blender | None = None  # EasyInv's blend over the inversion walk (ours); None: the paper's method

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_steps", check_num_steps(self.num_steps))

    def nfe_per_image(self, T: int) -> tuple[int, int] | None:  # noqa: N803
        return T + 1, T

    def invert(
        self, den: Denoisers, z0: Tensor, grid: Grid, seeds: tuple[int, ...], watch: FiniteWatch | None
    ) -> Inversion:
        eps, walk = den.for_phase(), BlendWalk(self.blend, grid.T)
        z = z0
        v_prev = eps(z0, grid.source_time(0)) if grid.T else None
        trajectory = [z0]
        for i in range(grid.T):
            z_in = walk.step_input(i, z)
            z_next, v_prev = uni_inv_step(eps, z_in, v_prev, grid.alpha_src[i], grid.alpha_tgt[i], grid.timesteps[i])
            z = walk.step_output(i, z_next, z)
            trajectory.append(z)
            if watch is not None:
                watch.see(z, i + 1)
        return Inversion(z_T=z, trajectory=trajectory, nfe=den.nfe("invert"))
