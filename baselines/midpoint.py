"""RF-Solver (Wang et al., ICML 2025) and FireFlow (Deng et al., ICML 2025): the explicit midpoint rule on a flow grid,
in both directions (flow-matching.md §4 items 3–4).

One step from level σ to σ' (h = σ' − σ, signed: > 0 inverting, < 0 sampling) with start velocity v₀:

    v_m = v(z + (h/2)·v₀, σ + h/2),   z' = z + h·v_m.

RF-Solver evaluates v₀ = v(z, σ) at every step: 2 NFE per step in each direction. Its paper writes the step as a
"second-order Taylor" update z + h·v₀ + ½h²·(v_m − v₀)/(h/2), which is algebraically this midpoint rule.
FireFlow (``reuse: true``) takes the previous step's midpoint velocity as v₀ (a real v₀ only at the first step of
each direction), so a direction costs T + 1 NFE. The velocity is the protocol's for the phase (``den.for_phase()``;
the papers invert at FLUX guidance 1). Both walk the grid themselves (the carried velocity is the state between
steps) and reconstruct with the same rule, fresh at its first step.

The midpoint level is off the grid: its network time comes from :meth:`Grid.time_at` (σ·1 on the closed-form model,
1000·σ on SD3 and FLUX); every step between two levels is the core's Euler step (:func:`ddim_step`), rounded as the
scheduler rounds σ' − σ. EasyInv's blend (``+method/blend=easyinv``) composes through :class:`BlendWalk` with the
shared walk's meaning: under ``released`` the step starts from the blended latent while a fresh v₀ is taken on the
unblended one. That composition is this harness's, not either paper's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from easyinv.inversion import Blender, BlendWalk, Denoiser, Denoisers, FiniteWatch, Grid, Inversion, Level, ddim_step
from easyinv.method_checks import check_num_steps

__all__ = ["Midpoint", "midpoint_level", "midpoint_step"]

FLOW_ONLY = ("the midpoint level needs the network time of a noise level between two grid levels, which a flow "
             "grid's constant time/sigma scale gives and SD's integer timesteps do not")


def midpoint_level(a_from: Level, a_to: Level) -> Level:
    """The flow level halfway between two levels, σ + (σ' − σ)/2 (in float64)."""
    return Level.flow(a_from.sigma + (a_to.sigma - a_from.sigma) / 2)


def midpoint_step(
    eps: Denoiser,
    z: Tensor,
    a_from: Level,
    a_to: Level,
    grid: Grid,
    *,
    v_start: Tensor | None = None,
    z_query: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One midpoint step of ``z`` ``(B, C, H, W)`` from flow level ``a_from`` to ``a_to`` (either direction).

    ``v_start``: the start velocity to use (FireFlow's carried midpoint velocity); None evaluates v(``z_query``, σ)
    (``z_query`` defaults to ``z``; EasyInv's released blend predicts on the unblended latent). Network times come
    from ``grid.time_at``. Returns (z', v_m): the new latent and the midpoint velocity, which FireFlow carries on.
    Costs 1 NFE with ``v_start``, 2 without.
    """
    mid = midpoint_level(a_from, a_to)
    v0 = v_start if v_start is not None else eps(z if z_query is None else z_query, grid.time_at(a_from.sigma))
    v_mid = eps(ddim_step(z, v0, a_from, mid), grid.time_at(mid.sigma))
    return ddim_step(z, v_mid, a_from, a_to), v_mid


@dataclass(frozen=True)
class Midpoint:
    """Midpoint inversion and reconstruction; ``reuse`` false is RF-Solver (2T NFE per direction), true FireFlow
    (T + 1 per direction)."""

    # read by the job before any weight loads (easyinv.run.job_parts.check_method_on_model)
    unsupported_paths: ClassVar[dict[str, str]] = {"vp": FLOW_ONLY}
    needs_cfg: ClassVar[str | None] = None
    exact: ClassVar[bool] = False

    name: str = "rf_solver"
    num_steps: int = 15
    reuse: bool = False  # FireFlow: the step-start velocity is the previous step's midpoint velocity
    blend: Blender | None = None  # EasyInv's blend over the inversion walk (ours); None: the paper's method

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_steps", check_num_steps(self.num_steps))
        if not isinstance(self.reuse, bool):
            raise ValueError(f"method.reuse must be true or false, got {self.reuse!r}")

    def nfe_per_image(self, T: int) -> tuple[int, int] | None:  # noqa: N803
        return (T + 1, T + 1) if self.reuse else (2 * T, 2 * T)

    def invert(
        self, den: Denoisers, z0: Tensor, grid: Grid, seeds: tuple[int, ...], watch: FiniteWatch | None
    ) -> Inversion:
        eps, walk = den.for_phase(), BlendWalk(self.blend, grid.T)
        z, carried = z0, None
        trajectory = [z0]
        for i in range(grid.T):
            z_in = walk.step_input(i, z)
            z_next, v_mid = midpoint_step(eps, z_in, grid.alpha_src[i], grid.alpha_tgt[i], grid,
                                          v_start=carried, z_query=z)
            carried = v_mid if self.reuse else None
            z = walk.step_output(i, z_next, z)
            trajectory.append(z)
            if watch is not None:
                watch.see(z, i + 1)
        return Inversion(z_T=z, trajectory=trajectory, nfe=den.nfe("invert"))

    def reconstruct(self, den: Denoisers, inversion: Inversion, grid: Grid, watch: FiniteWatch | None) -> Tensor:
        eps = den.for_phase()
        z, carried = inversion.z_T, None
        for n, i in enumerate(reversed(range(grid.T)), start=1):
            z, v_mid = midpoint_step(eps, z, grid.alpha_tgt[i], grid.alpha_src[i], grid, v_start=carried)
            carried = v_mid if self.reuse else None
            if watch is not None:
                watch.see(z, n)
        return z
