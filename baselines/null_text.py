"""Null-text inversion (NTI; Mokady et al., CVPR 2023; more-methods.md §1).

Stage A: pivots z*_0 … z*_T by DDIM inversion with the conditional branch only (w = 1). Stage B, in sampling order
i = 0 … T−1 (k = T−1−i): with the conditional prediction ε_c taken once, optimise the unconditional embedding u with
Adam (lr 0.01·(1 − i/100), at most ``inner_steps`` = 10 steps) so that the guided DDIM step from z̄_{k+1} lands on the
pivot z*_k (mean squared error); u is updated before the early-stop test loss < ε + 2e-5·i (ε = ``early_stop``,
1e-5; the per-step increment is the official loop's fixed 2e-5, ``early_stop_slope``, not a multiple of ε), carried
over to the next step, and stored per step; then z̄_k is the guided step with the stored u_i. Reconstruction repeats
those guided steps from z*_T with the stored embeddings.

Per row, in a batch: each image keeps its own Adam trajectory and stops on its own (Adam is elementwise; a stopped
row is frozen). A row whose gradient is exactly zero (an embedding the model ignores) stops after one step: the
official loop would spend its remaining steps changing nothing. Autograd flows into u only (the UNet is frozen);
u and Adam's state are float32 whatever the UNet precision, which is cast at the network boundary.
NFE: T pivots + Σ_i (1 + n_i + 2) in inversion, 2T in reconstruction; ``backward_passes`` = Σ n_i.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from baselines.ddim import DDIM
from easyinv.inversion import Denoisers, FiniteWatch, Grid, Inversion, ddim_step, invert
from easyinv.method_checks import check_no_blend, check_num_steps

__all__ = ["NullText"]


@dataclass(frozen=True)
class NullText:
    """NTI with the official constants (N = 10, lr 0.01·(1 − i/100), early stop 1e-5 + 2e-5·i, w = 7.5).

    ``early_stop_slope`` is not in the method's YAML (so the config hash of a default run is what it always was):
    ``+method.early_stop_slope=...`` sets it.
    """

    # read by the job before any weight loads (easyinv.run.job_parts.check_method_on_model)
    needs_cfg: ClassVar[str | None] = "it optimises the unconditional embedding of classifier-free guidance"
    unsupported_paths: ClassVar[dict[str, str]] = {}
    exact: ClassVar[bool] = False

    name: str = "null_text"
    num_steps: int = 50
    guidance: float = 7.5
    inner_steps: int = 10
    lr: float = 0.01
    early_stop: float = 1e-5
    early_stop_slope: float = 2e-5  # prompt-to-prompt's NullInversion: loss < epsilon + 2e-5 * i
    blend: None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_steps", check_num_steps(self.num_steps))
        if not float(self.guidance) > 1.0:
            raise ValueError(f"method.guidance must be > 1 (at w = 1 the loss ignores the embedding), got "
                             f"{self.guidance}")
        if isinstance(self.inner_steps, bool) or int(self.inner_steps) < 1:
            raise ValueError(f"method.inner_steps must be an integer >= 1, got {self.inner_steps}")
        if not float(self.lr) > 0 or not float(self.early_stop) >= 0 or not float(self.early_stop_slope) >= 0:
            raise ValueError(f"method.lr must be > 0, method.early_stop and method.early_stop_slope >= 0, got "
                             f"{self.lr}, {self.early_stop}, {self.early_stop_slope}")
        check_no_blend(self.name, self.blend)

    def nfe_per_image(self, T: int) -> tuple[int, int] | None:  # noqa: N803
        return None  # T + Σ(1 + n_i + 2) inversion with n_i Adam steps per timestep; 2T reconstruction

    def invert(
        self, den: Denoisers, z0: Tensor, grid: Grid, seeds: tuple[int, ...], watch: FiniteWatch | None
    ) -> Inversion:
        pivots = invert(DDIM(num_steps=self.num_steps), den.at(1.0), z0, grid, seeds, watch=watch).trajectory
        eps = den.null_text()
        w, b = float(self.guidance), z0.shape[0]
        u = eps.initial_embedding()
        stored, backward = [], torch.zeros(b, dtype=torch.long)
        z_bar = pivots[-1]
        for i in range(grid.T):
            k = grid.T - 1 - i
            t, a_hi, a_lo = grid.timesteps[k], grid.alpha_tgt[k], grid.alpha_src[k]
            u, steps = self._optimise(eps, u, z_bar, pivots[k], t, a_hi, a_lo, i)
            backward += steps
            stored.append(u)
            with torch.no_grad():
                z_bar = ddim_step(z_bar, eps.guided(z_bar, t, u, w), a_hi, a_lo)
        state = {"null_embeddings": torch.stack(stored, dim=1)}  # (B, T, *embedding)
        return Inversion(z_T=pivots[-1], trajectory=pivots, nfe=den.nfe("invert"), state=state,
                         backward_passes=backward)

    def _optimise(self, eps, u: Tensor, z_bar: Tensor, target: Tensor, t: int, a_hi: float, a_lo: float,
                  i: int) -> tuple[Tensor, Tensor]:
        """One timestep's Adam loop, every row on its own; returns the new embeddings and Adam steps per row."""
        w, b = float(self.guidance), z_bar.shape[0]
        with torch.no_grad():
            e_c = eps(z_bar, t)  # the conditional prediction, once per timestep
        u = u.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([u], lr=float(self.lr) * (1 - i / 100))
        threshold = float(self.early_stop) + float(self.early_stop_slope) * i
        active = torch.ones(b, dtype=torch.bool)
        steps = torch.zeros(b, dtype=torch.long)
        for _ in range(int(self.inner_steps)):
            rows = torch.nonzero(active).flatten()
            idx = rows.to(u.device)
            with torch.inference_mode(False), torch.enable_grad():
                e_u = eps.uncond(z_bar[idx], t, u[idx], rows)
                e = e_u + w * (e_c[idx] - e_u)
                loss = (ddim_step(z_bar[idx], e, a_hi, a_lo).float() - target[idx].float()).pow(2).flatten(1).mean(1)
                opt.zero_grad()
                loss.sum().backward()  # per-row losses: each row's gradient is its own
            assert u.grad is not None
            frozen = u.detach().clone()
            flat = u.grad[idx].flatten(1).abs().amax(dim=1) == 0
            opt.step()  # updated before the test, as the official loop does
            with torch.no_grad():
                u[~active.to(u.device)] = frozen[~active.to(u.device)]  # stopped rows do not move
            steps[rows] += 1
            done = (loss.detach().cpu() < threshold) | flat.cpu()
            active[rows[done]] = False
            if not active.any():
                break
        return u.detach(), steps

    def reconstruct(self, den: Denoisers, inversion: Inversion, grid: Grid, watch: FiniteWatch | None) -> Tensor:
        eps = den.null_text()
        embeddings = inversion.state["null_embeddings"]
        z = inversion.z_T
        for i in range(grid.T):
            k = grid.T - 1 - i
            z = ddim_step(z, eps.guided(z, grid.timesteps[k], embeddings[:, i], float(self.guidance)),
                          grid.alpha_tgt[k], grid.alpha_src[k])
            if watch is not None:
                watch.see(z, i + 1)
        return z
