"""EasyInv (Zhang et al., ICML 2025, Alg. 1 / Eq. 16): DDIM inversion plus a latent blend at selected steps.

The method itself is DDIM; everything EasyInv adds is the :class:`~easyinv.blend.Blend` that the shared walk
applies (algorithms.md §2.2). Zero extra NFE. The fields are the paper's hyperparameters: η (``eta``) and the step
set t̄ given as an open ``interval`` of fractions of T; ``k``, ``steps`` and ``variant`` are this project's knobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor

from easyinv.blend import Blend, check_blend_args
from easyinv.inversion import Denoiser, Grid, StepContext, ddim_step
from easyinv.method_checks import check_num_steps, check_time
from easyinv.steps import query_time

__all__ = ["EasyInv"]


@dataclass(frozen=True)
class EasyInv:
    """EasyInv: DDIM steps; the walk blends latents at ``Blend.iterations(T)``.

    Defaults are the SD-1.x code defaults (η = 0.5, window (0.05, 0.25) → iterations 3..12 at T = 50); the YAML takes
    η and the window from the model family (``model.easyinv``).
    """

    unsupported_paths: ClassVar[dict[str, str]] = {}
    needs_cfg: ClassVar[str | None] = None
    exact: ClassVar[bool] = False

    name: str = "easyinv"
    num_steps: int = 50
    eta: float = 0.5
    interval: Sequence[float] = (0.05, 0.25)
    k: int = 1
    steps: Sequence[int] | None = None
    variant: str = "released"
    time: str = "target"  # DDIM's convention; "source" on a flow model is EasyInv over source-time Euler (ours)
    # Built from the fields above. Not an init argument, so ``method=easyinv +method/blend=easyinv`` fails at
    # instantiation instead of blending twice.
    blend: Blend | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_steps", check_num_steps(self.num_steps))
        check_time(self.time)
        eta, interval, k, steps, variant = check_blend_args(
            "method", self.eta, self.interval, self.k, self.steps, self.variant
        )
        for name, value in (("eta", eta), ("interval", interval), ("k", k), ("steps", steps), ("variant", variant)):
            object.__setattr__(self, name, value)
        blend = Blend(eta=eta, interval=interval, k=k, steps=steps, variant=variant, config_key="method")
        object.__setattr__(self, "blend", blend)

    def nfe_per_image(self, T: int) -> tuple[int, int] | None:  # noqa: N803
        return T, T  # the blend costs nothing

    def step(self, eps: Denoiser, z: Tensor, i: int, grid: Grid, ctx: StepContext) -> Tensor:
        """The DDIM step: ε on the query latent (unblended under ``released``), update from ``z`` (blended)."""
        return ddim_step(z, eps(ctx.z_query, query_time(grid, i, self.time)), grid.alpha_src[i], grid.alpha_tgt[i])
