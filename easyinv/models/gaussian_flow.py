"""A flow-matching model with a closed-form velocity: data x ~ N(μ, diag s²) pushed along the rectified-flow path.

The flow counterpart of :mod:`easyinv.models.gaussian` (same data model, pixel space, identity "VAE", ``fit_from``,
``error``), on the path x_σ = (1 − σ)·x₀ + σ·ε (flow-matching.md §5). With m_σ = (1 − σ)μ and
S_σ² = (1 − σ)²s² + σ², the optimal velocity E[ε − x₀ | x_σ = x] is

    v(x, σ) = α_σ·(x − m_σ) − μ,   α_σ = (σ − (1 − σ)s²) / S_σ²,

and along the ODE dx/dσ = v the standardised value (x − m_σ)/S_σ is constant, so the exact flow map between any two
levels is affine: Φ_{a→b}(x) = m_b + (S_b/S_a)(x − m_a) (:meth:`exact_transport`). Every flow inversion method gets
an exact reference: Φ_{0→1} is the exact inversion, Φ_{1→0} the exact reconstruction.

Levels are uniform in σ, optionally shifted as SD3's scheduler shifts them, σ' = shift·σ / (1 + (shift − 1)·σ); the
network time input is σ itself. ``error`` adds the fixed smooth perturbation of the VP model,
error·sin(ω x + φ + κ·1000σ).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from easyinv.inversion import Grid
from easyinv.models.gaussian import KAPPA, OMEGA, GaussianModel

__all__ = ["GaussianFlowModel", "flow_sigmas"]


def flow_sigmas(steps: int, shift: float = 1.0) -> list[float]:
    """Ascending levels σ_0 = 0 < … < σ_T = 1 (uniform, then shifted), as Python floats computed in float64."""
    if steps < 0:
        raise ValueError(f"method.num_steps must be >= 0, got {steps}")
    if not float(shift) > 0:
        raise ValueError(f"model.load.shift must be > 0, got {shift}")
    base = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    shifted = shift * base / (1 + (shift - 1) * base)
    return [float(s) for s in shifted]


class GaussianFlowModel(GaussianModel):
    """The closed-form Gaussian flow model (``model=gaussian_flow``); μ, s scalars or ``(3, H, W)`` tensors.

    ``sigma`` is the data's standard deviation s (the name the VP model's loader uses), not a noise level.
    """

    family = "gaussian_flow"

    def __init__(self, mu: float | Tensor = 0.0, sigma: float | Tensor = 0.5, *, shift: float = 1.0, **kwargs: Any):
        super().__init__(mu, sigma, **kwargs)
        flow_sigmas(1, shift)  # validates the shift before anything runs
        self.shift = float(shift)

    def grid(self, steps: int) -> Grid:
        if steps == 0:  # the VAE-only ceiling: no step at all
            return Grid(timesteps=(), alpha_src=(), alpha_tgt=())
        sigmas = flow_sigmas(steps, self.shift)
        return Grid.from_sigmas(sigmas, sigmas)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["schedule"] = f"rectified flow, sigma uniform in [0, 1] shifted by {self.shift:g}; time input = sigma"
        info["path"] = "flow"
        return info

    # ---- the velocity and the exact flow -----------------------------------------------------------------------

    def _path(self, like: Tensor, level: float) -> tuple[Tensor, Tensor, Tensor]:
        """m_σ, S_σ and α_σ at level σ, in ``like``'s dtype."""
        mu, s = self._params(like)
        mean = (1.0 - level) * mu
        var = ((1.0 - level) ** 2 * s**2 + level**2).clamp_min(torch.finfo(like.dtype).tiny)
        alpha = (level - (1.0 - level) * s**2) / var  # a point mass (s = 0) at σ = 0: α = 0, v = −μ, the limit
        return mean, var.sqrt(), alpha

    def expected_velocity(self, z: Tensor, level: float) -> Tensor:
        """E[ε − x₀ | x_σ = z] at level σ (exact; no error term), in ``z``'s dtype."""
        mu, _ = self._params(z)
        mean, _, alpha = self._path(z, level)
        return alpha * (z - mean) - mu

    def network(self, z: Tensor, t: float) -> Tensor:
        """v̂(z, σ) ``(B, C, H, W)`` (the time input is σ): computed in the network dtype, returned in ``z``'s."""
        x = z.to(self.net_dtype)
        out = self.expected_velocity(x, float(t))
        if self.error > 0:
            out = out + self.error * torch.sin(OMEGA * x + self._phase(tuple(z.shape[1:]), x) + KAPPA * 1000 * float(t))
        return out.to(z.dtype)

    def exact_transport(self, z: Tensor, a_from: float, a_to: float) -> Tensor:
        """Move ``z`` along the exact flow from level σ = a_from to a_to (keeps (z − m_σ)/S_σ constant)."""
        m_a, s_a, _ = self._path(z, float(a_from))
        m_b, s_b, _ = self._path(z, float(a_to))
        return m_b + (s_b / s_a) * (z - m_a)

    def exact_invert(self, z0: Tensor, grid: Grid) -> Tensor:
        """The exact z_T for the grid: z_0 at σ_0 carried to σ_T."""
        if grid.T == 0:
            return z0.clone()
        return self.exact_transport(z0, grid.alpha_src[0].sigma, grid.alpha_tgt[-1].sigma)

    def exact_reconstruct(self, z_T: Tensor, grid: Grid) -> Tensor:  # noqa: N803
        """The exact z_0 for a given z_T: the inverse map of :meth:`exact_invert`."""
        if grid.T == 0:
            return z_T.clone()
        return self.exact_transport(z_T, grid.alpha_tgt[-1].sigma, grid.alpha_src[0].sigma)
