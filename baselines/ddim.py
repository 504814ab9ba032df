"""Vanilla DDIM inversion (Song et al. 2021, Eq. 12 run backwards; algorithms.md §1.1): one ε call per step.

Step ``i`` predicts ε at the target timestep on the source latent and applies the η = 0 DDIM update. The prediction
is taken on ``ctx.z_query`` and the update starts from ``z``; the two differ only inside EasyInv's released window
(algorithms.md §2.2 A), so DDIM plus the blend is EasyInv.

On a flow model the same step is Euler inversion (``method=euler``): ``time`` says where the velocity is evaluated,
at the target level (``target``, DDIM's convention, the default) or at the latent's own source level (``source``,
the flow repositories' "ReFlow-Inv."). ``time`` is not in ``ddim.yaml``, so a DDIM run's config hash is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from easyinv.inversion import Blender, Denoiser, Grid, StepContext, ddim_step

__all__ = ["DDIM", "TIMES", "check_num_steps", "check_time", "query_time"]

TIMES = ("target", "source")


def check_num_steps(num_steps: int, minimum: int = 1) -> int:
    """``method.num_steps`` as an int >= ``minimum`` (the grid checks the upper bound against the schedule)."""
    if isinstance(num_steps, bool) or int(num_steps) != num_steps or num_steps < minimum:
        raise ValueError(f"method.num_steps must be an integer >= {minimum}, got {num_steps}")
    return int(num_steps)


def check_time(time: str) -> str:
    """``method.time`` as one of :data:`TIMES`."""
    if time not in TIMES:
        raise ValueError(f"method.time must be one of {list(TIMES)}, got {time!r}")
    return time


def query_time(grid: Grid, i: int, time: str) -> int | float:
    """The network time at which inversion step ``i`` evaluates its prediction: the target or the source level's."""
    return grid.timesteps[i] if time == "target" else grid.source_time(i)


@dataclass(frozen=True)
class DDIM:
    """DDIM inversion: z_t = Inv(z_s, ε(z_s, t)). NFE per step and image: 1."""

    name: str = "ddim"
    num_steps: int = 50
    time: str = "target"  # where the prediction is evaluated: the target level (DDIM) or the source level
    blend: Blender | None = None  # read by the shared walk, never here

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_steps", check_num_steps(self.num_steps))
        check_time(self.time)

    def step(self, eps: Denoiser, z: Tensor, i: int, grid: Grid, ctx: StepContext) -> Tensor:
        """One inversion step ``(B, C, H, W) -> (B, C, H, W)`` from level ᾱ_src[i] to ᾱ_tgt[i]."""
        return ddim_step(z, eps(ctx.z_query, query_time(grid, i, self.time)), grid.alpha_src[i], grid.alpha_tgt[i])
