"""Small test doubles shared by several test files (imported as ``from helpers import ...``)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from easyinv.inversion import Denoiser, Grid, StepContext, ddim_step


@dataclass
class PlainDDIM:
    """Vanilla DDIM inversion step, written here so model tests do not depend on ``baselines/``."""

    num_steps: int
    name: str = "ddim-test"
    blend: None = None

    def step(self, eps: Denoiser, z: Tensor, i: int, grid: Grid, ctx: StepContext) -> Tensor:
        return ddim_step(z, eps(ctx.z_query, grid.timesteps[i]), grid.alpha_src[i], grid.alpha_tgt[i])


class ConstantEps(Denoiser):
    """ε(z, t) = c whatever z and t: makes every inversion step an affine map computable by hand."""

    def __init__(self, c: Tensor):
        super().__init__(c.shape[0])
        self.c = c

    def predict(self, z: Tensor, t: int, rows: Tensor) -> tuple[Tensor, int]:
        return self.c[rows].clone(), 1


