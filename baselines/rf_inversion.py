"""RF-Inversion (Rout et al., ICLR 2025; `LituRout/RF-Inversion` and the diffusers community pipeline;
flow-matching.md §4 item 2): controlled ODEs toward a noise sample when inverting and toward the source when sampling.

Written in σ (dx/dσ = v; the paper's t = 1 − σ flips signs). Inversion step k, h = σ_{k+1} − σ_k > 0:

    Y += h·[v(Y, σ_k) + γ·((y1 − Y)/(1 − σ_k) − v(Y, σ_k))],

with y1 ~ N(0, I) drawn once per image from its seed (so a batch equals single runs). Sampling step i = 0 … T−1
(σ → σ', Δ = σ' − σ < 0):

    X += Δ·[v(X, σ) + η_i·((X − y0)/σ − v(X, σ))],   η_i = η for int(s·T) ≤ i < int(τ·T), else 0,

with y0 the source latent z_0. With t := σ (``time_convention: sigma``, the default) γ = 1 lands exactly on y1 and
η = 1 on y0 (the control terms are the straight paths' own velocities); γ = η = 0 is source-time Euler
(``method=euler``), bit for bit. ``time_convention: diffusers_community`` reproduces the community pipeline's
``invert`` (``examples/community/pipeline_flux_rf_inversion.py``) exactly: at step i it feeds the network
t_i = i/(T+1), divides by 1 − t_i, and adds ``sigmas[i] − sigmas[i+1]`` taken from the *descending* σ list
(σ_T … σ_0 of this grid), i.e. Y += h_i·û with h_i = σ_{T−i} − σ_{T−i−1}: the gaps of the mirrored levels 1 − σ,
which equal this grid's ascending gaps only on a uniform (unshifted) grid. γ = 1 then misses y1. Its sampling already
uses σ, so the reverse is the same under both conventions.

Guidance per phase is the protocol's (``den.for_phase()``): the paper's FLUX guidance 0 when inverting and 3.5 when
sampling, and its empty inversion prompt, are experiment settings, not fixed here. NFE: T + T. The reconstruction
steers toward the source latent itself, so with η > 0 its round trip is not a measure of the inversion alone; the
source is kept in ``Inversion.state["y0"]`` (counted in ``state_bytes``) only when some η_i > 0. EasyInv's blend
composes with the inversion as in the shared walk (this harness's composition, not the paper's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from easyinv.inversion import Blender, BlendWalk, Denoisers, FiniteWatch, Grid, Inversion, ddim_step
from easyinv.method_checks import check_num_steps
from easyinv.steps import eta_schedule, rf_inversion_forward_step, rf_inversion_reverse_step, seeded_noise

__all__ = [
    "TIME_CONVENTIONS",
    "RFInversion",
    "eta_schedule",
    "rf_inversion_forward_step",
    "rf_inversion_reverse_step",
    "seeded_noise",
]

TIME_CONVENTIONS = ("sigma", "diffusers_community")
# eta_schedule, rf_inversion_forward_step, rf_inversion_reverse_step and seeded_noise live in easyinv.steps (the
# RF-Inversion editor shares them); re-exported here


def _fraction(key: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"method.{key} must be in [0, 1], got {value}")
    return value


@dataclass(frozen=True)
class RFInversion:
    """RF-Inversion's controlled forward ODE (γ) and controlled reverse ODE (η over [start, stop) of the sampling
    steps). NFE: T + T."""

    # read by the job before any weight loads (easyinv.run.job_parts.check_method_on_model)
    unsupported_paths: ClassVar[dict[str, str]] = {
        "vp": "its control terms are the velocities of straight paths to a noise sample and to the source, which "
              "only the rectified-flow path has",
    }
    needs_cfg: ClassVar[str | None] = None
    exact: ClassVar[bool] = False

    name: str = "rf_inversion"
    num_steps: int = 28
    gamma: float = 0.5  # controller guidance of the forward ODE
    eta: float = 0.9  # controller guidance of the reverse ODE
    start: float = 0.0  # s: first sampling step with η, as a fraction of T
    stop: float = 0.25  # τ: first sampling step without η again (7/28)
    time_convention: str = "sigma"  # sigma (t := σ) | diffusers_community (t_i = i/(T+1) when inverting)
    blend: Blender | None = None  # EasyInv's blend over the inversion walk (ours); None: the paper's method

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_steps", check_num_steps(self.num_steps))
        for key in ("gamma", "eta", "start", "stop"):
            object.__setattr__(self, key, _fraction(key, getattr(self, key)))
        if self.start > self.stop:
            raise ValueError(f"method.start must be <= method.stop, got {self.start} > {self.stop}")
        if self.time_convention not in TIME_CONVENTIONS:
            raise ValueError(f"method.time_convention must be one of {list(TIME_CONVENTIONS)}, "
                             f"got {self.time_convention!r}")

    def nfe_per_image(self, T: int) -> tuple[int, int] | None:  # noqa: N803
        return T, T

    def _forward_step(self, grid: Grid, eps, i: int, z: Tensor, z_in: Tensor, y1: Tensor) -> Tensor:
        """Inversion step ``i`` from ``z_in`` (``z`` blended by the walk; the network sees ``z``) in the chosen
        time convention."""
        if self.time_convention == "sigma":
            v = eps(z, grid.source_time(i))
            return rf_inversion_forward_step(z_in, v, y1, grid.alpha_src[i], grid.alpha_tgt[i], self.gamma)
        # the community loop, operation for operation and in its dtypes (t_i in the latent's, the scheduler's σ in
        # float32): û = u + γ·((y1 − Y)/(1 − t_i) − u), then Y + û·(σ_desc[i] − σ_desc[i+1])
        t = i / (grid.T + 1)
        u = eps(z, grid.time_at(t))
        t_i = torch.tensor(t, dtype=z_in.dtype, device=z_in.device)
        levels, _ = grid.levels()
        hi, lo = (torch.tensor(levels[k].sigma, dtype=torch.float32) for k in (grid.T - i, grid.T - i - 1))
        u_hat = u + self.gamma * ((y1 - z_in) / (1 - t_i) - u)
        return z_in + u_hat * float(hi - lo)

    def invert(
        self, den: Denoisers, z0: Tensor, grid: Grid, seeds: tuple[int, ...], watch: FiniteWatch | None
    ) -> Inversion:
        eps, walk = den.for_phase(), BlendWalk(self.blend, grid.T)
        y1 = seeded_noise(z0, seeds)
        z = z0
        trajectory = [z0]
        for i in range(grid.T):
            z_in = walk.step_input(i, z)
            # the network sees the unblended latent, as the shared walk's first prediction
            z = walk.step_output(i, self._forward_step(grid, eps, i, z, z_in, y1), z)
            trajectory.append(z)
            if watch is not None:
                watch.see(z, i + 1)
        needs_source = any(e > 0 for e in eta_schedule(grid.T, self.eta, self.start, self.stop))
        return Inversion(z_T=z, trajectory=trajectory, nfe=den.nfe("invert"),
                         state={"y0": z0} if needs_source else {})

    def reconstruct(self, den: Denoisers, inversion: Inversion, grid: Grid, watch: FiniteWatch | None) -> Tensor:
        eps = den.for_phase()
        etas = eta_schedule(grid.T, self.eta, self.start, self.stop)
        y0 = inversion.state.get("y0")
        z = inversion.z_T
        for n, i in enumerate(reversed(range(grid.T))):
            v = eps(z, grid.timesteps[i])
            if etas[n] > 0:
                z = rf_inversion_reverse_step(z, v, y0, grid.alpha_tgt[i], grid.alpha_src[i], etas[n])
            else:
                z = ddim_step(z, v, grid.alpha_tgt[i], grid.alpha_src[i])  # η = 0: the plain Euler sampling step
            if watch is not None:
                watch.see(z, n + 1)
        return z
