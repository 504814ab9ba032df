"""The VAE-only ceiling: encode then decode, no diffusion step (T = 0, 0 NFE).

It measures what the autoencoder alone loses, the best any inversion method can reach on that model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from easyinv.inversion import Blender, Denoiser, Grid, StepContext

__all__ = ["VAEOnly"]


@dataclass(frozen=True)
class VAEOnly:
    """z_T = z_0: the grid is empty, so the walk never calls :meth:`step`."""

    unsupported_paths: ClassVar[dict[str, str]] = {}
    needs_cfg: ClassVar[str | None] = None
    exact: ClassVar[bool] = True

    name: str = "vae_only"
    num_steps: int = 0
    blend: Blender | None = None

    def __post_init__(self) -> None:
        if self.num_steps != 0:
            raise ValueError(f"method.num_steps must be 0 for vae_only (no diffusion step), got {self.num_steps}")
        if self.blend is not None:
            raise ValueError("method.blend must be null for vae_only: there is no step to blend")

    def nfe_per_image(self, T: int) -> tuple[int, int] | None:  # noqa: N803
        return 0, 0

    def step(self, eps: Denoiser, z: Tensor, i: int, grid: Grid, ctx: StepContext) -> Tensor:
        raise RuntimeError(f"vae_only has no diffusion step, but the walk asked for step {i} of a {grid.T}-step grid")
