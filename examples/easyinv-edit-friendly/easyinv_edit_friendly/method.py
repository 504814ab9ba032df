"""Edit-friendly DDPM inversion (Huberman-Spiegelglas, Kulikov & Michaeli, "An Edit Friendly DDPM Noise Space:
Inversion and Manipulations", CVPR 2024).

On the harness's grid of levels a_0 … a_T (ᾱ of each level, ``Grid.levels``) with network times τ_k:

- every level gets its own noisy latent, drawn independently: x_k = √a_k · z_0 + √(1 − a_k) · n_k, n_k ~ N(0, I),
  k = 1 … T (x_0 = z_0), from one generator per image seeded by its seed (a batch gives what single images give);
- from the top down, with ε_k = ε(x_k, τ_k) at the level's own time, the DDPM posterior mean
  μ_k(x) = √a_{k−1} · (x − √(1 − a_k) ε_k) / √a_k + √(1 − a_{k−1} − η s_k²) · ε_k, with
  s_k² = (1 − a_{k−1}) / (1 − a_k) · (1 − a_k / a_{k−1}), gives the noise map ζ_k = (x_{k−1} − μ_k(x_k)) / (η s_k);
  x_{k−1} is then replaced by μ_k(x_k) + η s_k ζ_k (equal up to round-off, as diffusers' LEDITS++ does), so the next
  prediction sees exactly what sampling will;
- sampling from x_T with x̂_{k−1} = μ_k(x̂_k) + η s_k ζ_k returns through the same latents: exact for any network,
  provided both phases use the same ε (the inversion therefore uses the reconstruction's guidance, as BDIA does).

The official code zeroes ζ_1 (``keep_last_noise: false``; a last-step error of about s_1); the paper's sampler and
diffusers' LEDITS++ keep it (the default, exact). η enters as η s² under the root and η s as the noise scale, the
official code's convention (equal to DDIM's η² s² at the default η = 1). The noise maps are the method's state:
T latents per image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from easyinv.inversion import Denoisers, FiniteWatch, Grid, Inversion
from easyinv.method_checks import check_no_blend, check_num_steps

__all__ = ["EditFriendlyDDPM"]


@dataclass(frozen=True)
class EditFriendlyDDPM:
    """DDPM inversion into per-step noise maps: z_T and T maps; NFE per image T + T."""

    # the declarations every method states (easyinv.method_checks.DECLARATIONS)
    unsupported_paths: ClassVar[dict[str, str]] = {
        "flow": "its noise maps are samples of the DDPM posterior of the variance-preserving path, which a "
                "rectified-flow model does not define"}
    needs_cfg: ClassVar[str | None] = None
    exact: ClassVar[bool] = True  # with keep_last_noise (the default); false gives up the last step on purpose

    name: str = "edit_friendly"
    num_steps: int = 50
    eta: float = 1.0
    keep_last_noise: bool = True
    blend: None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_steps", check_num_steps(self.num_steps))
        if not 0.0 < float(self.eta) <= 1.0:
            raise ValueError(f"method.eta must be in (0, 1], got {self.eta}")
        if not isinstance(self.keep_last_noise, bool):
            raise ValueError(f"method.keep_last_noise must be true or false, got {self.keep_last_noise!r}")
        check_no_blend(self.name, self.blend)

    def nfe_per_image(self, T: int) -> tuple[int, int]:  # noqa: N803 - the paper's symbol
        return T, T

    def noise(self, z0: Tensor, seeds: Sequence[int], T: int) -> Tensor:  # noqa: N803
        """n_1 … n_T per image, ``(B, T, C, H, W)``: one CPU generator per image seeded by its seed, drawn in the
        latent's dtype in the order k = 1 … T (what diffusers' LEDITS++ draws for one image and that seed)."""
        rows = []
        for seed in seeds:
            gen = torch.Generator("cpu").manual_seed(int(seed))
            rows.append(torch.stack([torch.randn(z0.shape[1:], generator=gen, dtype=z0.dtype) for _ in range(T)]))
        return torch.stack(rows).to(z0.device)

    def _variance(self, a_prev: float, a: float) -> float:
        return (1.0 - a_prev) / (1.0 - a) * (1.0 - a / a_prev)

    def _mean(self, x: Tensor, e: Tensor, a: float, a_prev: float, variance: float) -> Tensor:
        x0 = (x - math.sqrt(1.0 - a) * e) / math.sqrt(a)
        return math.sqrt(a_prev) * x0 + math.sqrt(max(1.0 - a_prev - self.eta * variance, 0.0)) * e

    def _levels(self, grid: Grid) -> tuple[list[float], tuple[int | float, ...]]:
        levels, times = grid.levels()
        if not all(isinstance(a, float) for a in levels):
            raise ValueError(f"method={self.name} needs a variance-preserving grid (ᾱ levels)")
        return list(levels), times

    def invert(
        self, den: Denoisers, z0: Tensor, grid: Grid, seeds: tuple[int, ...], watch: FiniteWatch | None
    ) -> Inversion:
        eps = den.at(den.guidance["reconstruct"])  # the ε sampling will use: the round trip is then exact
        a, tau = self._levels(grid)
        T = grid.T  # noqa: N806
        n = self.noise(z0, seeds, T)
        xs = [z0, *(math.sqrt(a[k]) * z0 + math.sqrt(1.0 - a[k]) * n[:, k - 1] for k in range(1, T + 1))]
        maps: list[Tensor] = [torch.zeros_like(z0)] * T
        for k in range(T, 0, -1):
            variance = self._variance(a[k - 1], a[k])
            mean = self._mean(xs[k], eps(xs[k], tau[k]), a[k], a[k - 1], variance)
            scale = self.eta * math.sqrt(variance)
            if scale > 0.0:
                maps[k - 1] = (xs[k - 1] - mean) / scale
            if k > 1:
                xs[k - 1] = mean + scale * maps[k - 1]
        if not self.keep_last_noise:
            maps[0] = torch.zeros_like(z0)
        if watch is not None:
            for k in range(1, T + 1):
                watch.see(xs[k], k)
        return Inversion(z_T=xs[T], trajectory=xs, nfe=den.nfe("invert"), state={"noise_maps": torch.stack(maps, 1)})

    def reconstruct(self, den: Denoisers, inversion: Inversion, grid: Grid, watch: FiniteWatch | None) -> Tensor:
        eps = den.for_phase()
        a, tau = self._levels(grid)
        maps = inversion.state["noise_maps"]
        x = inversion.z_T
        for step, k in enumerate(range(grid.T, 0, -1), start=1):
            variance = self._variance(a[k - 1], a[k])
            mean = self._mean(x, eps(x, tau[k]), a[k], a[k - 1], variance)
            x = mean + self.eta * math.sqrt(variance) * maps[:, k - 1]
            if watch is not None:
                watch.see(x, step)
        return x
