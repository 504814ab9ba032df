"""Fixed-point inversion (Pan et al., ICCV 2023, "AIDI"; algorithms.md §4): solve z_t = Inv(z_s, ε(z_t, t)) per step.

With f(x) = Inv(z_s, ε(x, t)) = a·z_s + b·ε(x, t), each step starts from the DDIM guess x⁰ = Inv(z_s, ε(z_query, t))
(1 NFE) and runs ``iters`` iterations, each costing one ε call (1 NFE) at the current iterate:

- ``none``:      x^{k+1} = f(x^k)
- ``empirical``: x^{k+1} = ½f(x^k) + ½f(x^{k−1})  — one update with the mean of the two latest predictions (f is
  affine in ε); the previous prediction is stored, never re-evaluated. For k = 0 the "previous" prediction is the
  one taken on the query latent (the public re-implementations do the same, §4.4).
- ``anderson``:  x^{k+1} = Σ_j α_j f(x^j) over the last ``m`` iterates, α = argmin ‖Σ α_j r_j‖² + ridge·‖α‖²
  subject to Σ α_j = 1 with residuals r_j = f(x^j) − x^j; per row, on flattened latents, in torch. The history
  starts at the DDIM guess x⁰: the source latent lives at another noise level and would only pollute the fit.

Output: the last update, i.e. the iterate produced by the last Inv (which uses the last prediction, averaged as
the acceleration says). So ``iters = 0`` is DDIM bit for bit and the NFE per step and image is exactly 1 + iters.
(EasyInv's own re-implementation ends with Inv(z_s, ε(x^last)) instead, §4.4 item 1; same cost.)

``tol`` (optional) stops a row once ‖x^{k+1} − x^k‖ / ‖x^k‖ ≤ tol; later iterations evaluate only the rows still
running (the denoiser's ``rows``), so NFE and results are per image and a batch equals single runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from easyinv.inversion import Blender, Denoiser, Grid, StepContext, ddim_step
from easyinv.method_checks import check_num_steps

__all__ = ["ACCELERATIONS", "FixedPoint", "anderson_weights"]

ACCELERATIONS = ("none", "empirical", "anderson")


def anderson_weights(residuals: Tensor, ridge: float) -> Tensor:
    """Anderson mixing weights (Anderson 1965; Walker & Ni 2011, constrained form) for each row.

    ``residuals``: ``(B, n, D)``, the last n residuals of each row, flattened. Returns α ``(B, n)`` with Σα = 1
    minimising ‖αᵀR‖² + λ‖α‖², where λ = ridge · mean(diag RRᵀ) keeps the n×n Gram matrix invertible whatever
    the scale of the latents (rows whose residuals are all zero get equal weights). Solved in float64: the Gram
    matrix of nearly equal residuals is ill-conditioned.
    """
    r = residuals.to(torch.float64)
    gram = r @ r.transpose(1, 2)  # (B, n, n)
    n = gram.shape[-1]
    scale = gram.diagonal(dim1=1, dim2=2).mean(dim=1)
    lam = torch.where(scale > 0, ridge * scale, torch.ones_like(scale))  # all residuals 0: every α is optimal
    eye = torch.eye(n, dtype=gram.dtype, device=gram.device)
    ones = torch.ones(gram.shape[0], n, 1, dtype=gram.dtype, device=gram.device)
    y = torch.linalg.solve(gram + lam[:, None, None] * eye, ones).squeeze(-1)  # (B, n)
    return (y / y.sum(dim=1, keepdim=True)).to(residuals.dtype)


@dataclass(frozen=True)
class FixedPoint:
    """Fixed-point inversion with optional acceleration. NFE per step and image: 1 + iters (fewer with ``tol``)."""

    unsupported_paths: ClassVar[dict[str, str]] = {}
    needs_cfg: ClassVar[str | None] = None
    exact: ClassVar[bool] = False

    name: str = "fixed_point"
    num_steps: int = 20  # AIDI targets 10-20 steps; EasyInv ran it at "its recommended" count (algorithms.md §4.3)
    iters: int = 5  # wmchen AIDI configs (num_iter_steps: 5); EasyInv's code comment says 6
    acceleration: str = "empirical"  # the variant EasyInv describes as Pan et al.'s (EasyInv v1, Eq. 11)
    m: int = 3  # Anderson memory: iterates combined (wmchen aa.py window 3); m = 1 is plain iteration
    ridge: float = 1e-8  # relative Tikhonov term of the Anderson least squares
    tol: float | None = None  # per-row early stop on the relative change of the iterate; None: always ``iters``
    blend: Blender | None = None  # read by the shared walk, never here

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_steps", check_num_steps(self.num_steps))
        if isinstance(self.iters, bool) or int(self.iters) != self.iters or self.iters < 0:
            raise ValueError(f"method.iters must be an integer >= 0, got {self.iters}")
        object.__setattr__(self, "iters", int(self.iters))
        if self.acceleration not in ACCELERATIONS:
            raise ValueError(f"method.acceleration must be one of {list(ACCELERATIONS)}, got {self.acceleration!r}")
        if isinstance(self.m, bool) or int(self.m) != self.m or self.m < 1:
            raise ValueError(f"method.m must be an integer >= 1, got {self.m}")
        object.__setattr__(self, "m", int(self.m))
        if not float(self.ridge) > 0.0:
            raise ValueError(f"method.ridge must be > 0 (it keeps the Anderson system solvable), got {self.ridge}")
        if self.tol is not None and not float(self.tol) >= 0.0:
            raise ValueError(f"method.tol must be >= 0 or null, got {self.tol}")

    def nfe_per_image(self, T: int) -> tuple[int, int] | None:  # noqa: N803
        return (T * (1 + self.iters), T) if self.tol is None else None  # tol: rows stop on their own

    def step(self, eps: Denoiser, z: Tensor, i: int, grid: Grid, ctx: StepContext) -> Tensor:
        """Solve one implicit inversion step for all rows of ``z`` ``(B, C, H, W)``."""
        t, a_s, a_t = grid.timesteps[i], grid.alpha_src[i], grid.alpha_tgt[i]
        e_prev = eps(ctx.z_query, t)  # 1 NFE: the DDIM prediction
        x = ddim_step(z, e_prev, a_s, a_t)  # x⁰, the DDIM guess
        # rows still iterating: None while all do, so the loop never reads a device value back (no GPU stall per
        # iteration); with ``tol`` the stop test has to, once per iteration, and the survivors are indexed
        rows: Tensor | None = None
        xs: list[Tensor] = []  # Anderson history of iterates and their predictions, all rows (stopped rows go stale)
        es: list[Tensor] = []
        for _ in range(self.iters):
            if rows is not None and rows.numel() == 0:
                break
            x_r, z_r = (x, z) if rows is None else (x[rows], z[rows])
            e_r = eps(x_r, t, rows=None if rows is None else rows.cpu())  # 1 NFE per running row
            e_all = e_r if rows is None else e_prev.index_copy(0, rows, e_r)
            if self.acceleration == "none":
                e_upd = e_r
            elif self.acceleration == "empirical":
                e_upd = 0.5 * (e_r + (e_prev if rows is None else e_prev[rows]))
            else:
                xs, es = (xs + [x])[-self.m :], (es + [e_all])[-self.m :]
                e_upd = self._anderson(z_r, [h if rows is None else h[rows] for h in xs],
                                       [h if rows is None else h[rows] for h in es], a_s, a_t)
            x_new = ddim_step(z_r, e_upd, a_s, a_t)
            e_prev = e_all
            x_old, x = x_r, (x_new if rows is None else x.index_copy(0, rows, x_new))
            if self.tol is not None:
                change = (x_new - x_old).flatten(1).norm(dim=1) / x_old.flatten(1).norm(dim=1).clamp_min(1e-30)
                running = torch.arange(z.shape[0], device=z.device) if rows is None else rows
                rows = running[change > self.tol]
        return x

    def _anderson(self, z: Tensor, xs: list[Tensor], es: list[Tensor], a_s: float, a_t: float) -> Tensor:
        """Mixed prediction Σ α_j ε_j over the history (newest last); with one entry it is that prediction."""
        preds = torch.stack(es, dim=1)  # (B, n, C, H, W)
        iterates = torch.stack(xs, dim=1)
        residuals = ddim_step(z[:, None], preds, a_s, a_t) - iterates  # r_j = f(x^j) - x^j
        alpha = anderson_weights(residuals.flatten(2), self.ridge)  # (B, n)
        return (alpha[:, :, None, None, None] * preds).sum(dim=1)
