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
from typing import ClassVar

from torch import Tensor

from easyinv.inversion import Blender, Denoiser, Grid, StepContext, ddim_step
from easyinv.method_checks import TIMES, check_num_steps, check_time
from easyinv.steps import query_time

# TIMES, check_num_steps, check_time and query_time live in easyinv.method_checks / easyinv.steps; re-exported here
__all__ = ["DDIM", "TIMES", "check_num_steps", "check_time", "query_time"]


@dataclass(frozen=True)
class DDIM:
    """DDIM inversion: z_t = Inv(z_s, ε(z_s, t)). NFE per step and image: 1."""

    # declarations (easyinv.method_checks.DECLARATIONS)
    unsupported_paths: ClassVar[dict[str, str]] = {}
    needs_cfg: ClassVar[str | None] = None
    exact: ClassVar[bool] = False

    name: str = "ddim"
    num_steps: int = 50
    time: str = "target"  # where the prediction is evaluated: the target level (DDIM) or the source level
    blend: Blender | None = None  # read by the shared walk, never here

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_steps", check_num_steps(self.num_steps))
        check_time(self.time)

    def nfe_per_image(self, T: int) -> tuple[int, int]:  # noqa: N803
        return T, T

    def step(self, eps: Denoiser, z: Tensor, i: int, grid: Grid, ctx: StepContext) -> Tensor:
        """One inversion step ``(B, C, H, W) -> (B, C, H, W)`` from level ᾱ_src[i] to ᾱ_tgt[i]."""
        return ddim_step(z, eps(ctx.z_query, query_time(grid, i, self.time)), grid.alpha_src[i], grid.alpha_tgt[i])
