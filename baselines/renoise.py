"""ReNoise inversion (Garibi et al., ECCV 2024, Alg. 1; algorithms.md §3): renoise, average, regularise.

Per step with known z_s: z⁽⁰⁾ = z_s; for k = 0..K: δ_k = ε(z⁽ᵏ⁾, t) (the first on ``ctx.z_query``),
z⁽ᵏ⁺¹⁾ = Inv(z_s, δ_k) — always restarting from z_s. The output averages the estimates whose index falls in the
averaging window (one Inv with the mean prediction; Inv is affine in ε), else it is the last estimate. Windows follow
the official code (§3.2): ``first_step_range`` below ``first_step_max_timestep`` (K capped at ``max_first_step``),
``step_range`` above. With the paper's SD setting K = 1: t < 250 averages δ_0, δ_1 (w₁ = w₂ = ½); t ≥ 250 uses δ_1.

Edit regularisation (from pix2pix-zero, §3.2 REGULARISE) moves a prediction down the gradients of a patch-KL loss
against a reference prediction and of a pairwise auto-correlation loss. It is applied where the official code
applies it and its result is used: every estimate whose index reaches the averaging window (or, with averaging
off, every estimate after the first) and the mean. Gradients are taken on a detached leaf, never through the net.

Deliberate differences from the released code (§3.2): the reference row ε(z_ref, t) is evaluated only at steps
that regularise with λ_KL > 0 (the code evaluates it at every step: 37 unused rows at T = 50); regularisations whose
result the code discards are skipped; CFG never mixes reference and estimate rows (the denoiser binds guidance);
no noise correction (η = 0 DDIM has no noise to correct). Random roll offsets come from per-row generators seeded
by (row seed, step index), so a batch equals single runs.

Small-variance ε can make the regularisation diverge to NaN (§6 item 11b). That is reproduced, not hidden.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from easyinv.inversion import Blender, Denoiser, Grid, StepContext, ddim_step
from easyinv.method_checks import check_num_steps

__all__ = ["REFERENCES", "WEIGHT_PRESETS", "ReNoise", "auto_corr_loss", "patch_kl_loss", "regularise"]

# (λ_pair = lambda_ac, λ_patch-KL = lambda_kl): ReNoise Appendix B Table 3, and the released code's config.py
WEIGHT_PRESETS: dict[str, tuple[float, float]] = {
    "paper": (10.0, 0.05),  # SD
    "paper-sdxl": (10.0, 0.055),  # SD-XL and SD-XL Turbo
    "paper-lcm": (20.0, 0.075),  # LCM-LoRA
    "released": (20.0, 0.065),  # src/config.py defaults, used by every released example
}
REFERENCES = ("noised", "clean")
KL_EPS = 1e-6  # the released code's EPSILON in the patch-KL
GRAD_CLIP = 100.0  # the KL gradient is clipped to ±100 before the step
PATCH = 4  # patch side of the patch-KL


def patch_kl_loss(e: Tensor, e_ref: Tensor, patch: int = PATCH) -> Tensor:
    """Patch-KL of ReNoise §3.3, summed over rows, 4×4 patches and channels:
    |log((σ₁²+ε)/(σ₀²+ε)) + (σ₀²+(μ₀−μ₁)²)/(σ₁²+ε) − 1| with ε = 1e-6.

    Index 0 is the estimate ``e``, index 1 the reference; mean and (unbiased) variance per patch and channel, as in
    the released code. Trailing rows/columns that do not fill a patch are ignored (``unfold`` semantics).
    """
    b, c, h, w = e.shape
    hp, wp = h // patch, w // patch

    def stats(x: Tensor) -> tuple[Tensor, Tensor]:
        x = x[:, :, : hp * patch, : wp * patch].reshape(b, c, hp, patch, wp, patch)
        x = x.permute(0, 1, 2, 4, 3, 5).reshape(b, c, hp, wp, patch * patch)
        return x.mean(dim=-1), x.var(dim=-1)

    mu0, var0 = stats(e)
    mu1, var1 = stats(e_ref)
    kl = torch.log((var1 + KL_EPS) / (var0 + KL_EPS)) + (var0 + (mu0 - mu1) ** 2) / (var1 + KL_EPS) - 1.0
    return kl.abs().sum()


def _roll_offsets(generators: Sequence[torch.Generator], channels: int, sizes: Sequence[int]) -> Tensor:
    """Offsets ``(B, C, levels)``: per row, channel by channel and level by level, r ∈ [0, size // 2)."""
    return torch.tensor(
        [
            [[int(torch.randint(0, max(size // 2, 1), (1,), generator=gen)) for size in sizes] for _ in range(channels)]
            for gen in generators
        ],
        dtype=torch.long,
    )


def _roll_rows(x: Tensor, shifts: Tensor, dim: int) -> Tensor:
    """``torch.roll`` of each ``(b, c)`` map of ``x`` ``(B, C, H, W)`` by its own ``shifts[b, c]`` along ``dim``."""
    n = x.shape[dim]
    pos = torch.arange(n, device=x.device)
    src = (pos[None, None, :] - shifts.to(x.device)[:, :, None]) % n  # (B, C, n): rolled[i] = x[(i - r) mod n]
    index = src[:, :, :, None] if dim == 2 else src[:, :, None, :]
    return torch.gather(x, dim, index.expand_as(x))


def auto_corr_loss(e: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
    """Pairwise auto-correlation loss (pix2pix-zero, ReNoise Eq. 5), summed over rows.

    Per row and channel, over an average-pooling pyramid down to 8×8: (mean of map · roll(map, r, H))² +
    (mean of map · roll(map, r, W))², with one offset r ∈ [0, H/2) per channel and level drawn from that row's
    generator (vectorised over rows and channels; the draws keep the released per-channel order).
    """
    levels = [e]
    while levels[-1].shape[2] > 8:
        levels.append(F.avg_pool2d(levels[-1], kernel_size=2))
    offsets = _roll_offsets(generators, e.shape[1], [level.shape[2] for level in levels])
    loss = e.new_zeros(())
    for n, level in enumerate(levels):
        r = offsets[:, :, n]
        loss = loss + ((level * _roll_rows(level, r, 2)).mean(dim=(2, 3)) ** 2).sum()
        loss = loss + ((level * _roll_rows(level, r, 3)).mean(dim=(2, 3)) ** 2).sum()
    return loss


def regularise(
    e: Tensor,
    e_ref: Tensor | None,
    generators: Sequence[torch.Generator],
    *,
    lambda_ac: float,
    lambda_kl: float,
    num_reg_steps: int,
    num_ac_rolls: int,
) -> Tensor:
    """ReNoise's noise regularisation (released ``noise_regularization``): ``num_reg_steps`` rounds of one clipped
    patch-KL gradient step (weight λ_KL) followed by ``num_ac_rolls`` auto-correlation steps of λ_AC·grad/rolls.

    Works under ``torch.no_grad`` and ``torch.inference_mode`` (leaves are cloned outside inference mode).
    """
    with torch.inference_mode(False), torch.enable_grad():
        e = e.detach().clone()
        ref = e_ref.detach().clone() if e_ref is not None else None
        for _ in range(num_reg_steps):
            if lambda_kl > 0:
                if ref is None:
                    raise ValueError("ReNoise: the patch-KL needs a reference prediction")
                leaf = e.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(patch_kl_loss(leaf, ref), leaf)
                e = e - lambda_kl * grad.clamp(-GRAD_CLIP, GRAD_CLIP)
            if lambda_ac > 0:
                for _ in range(num_ac_rolls):
                    leaf = e.detach().requires_grad_(True)
                    (grad,) = torch.autograd.grad(auto_corr_loss(leaf, generators), leaf)
                    e = e - lambda_ac * grad / num_ac_rolls
        return e.detach()


def _generator(seed: int, salt: int) -> torch.Generator:
    """A CPU generator for one row: depends on the row's seed and a salt only, never on the batch."""
    return torch.Generator().manual_seed((seed * 1_000_003 + salt) % (2**63 - 1))


def _pair(value: Sequence[int], key: str) -> tuple[int, int]:
    try:
        lo, hi = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"method.{key} must be two integers [lo, hi), got {value!r}") from None
    if not 0 <= lo <= hi:
        raise ValueError(f"method.{key} must satisfy 0 <= lo <= hi, got [{lo}, {hi}]")
    return lo, hi


@dataclass(frozen=True)
class ReNoise:
    """ReNoise with the paper's SD configuration by default (Table 3): K = 1, λ_pair/λ_KL = 10/0.05, 4 reg steps.

    NFE per image at T = 50: 50 × (K + 1) estimates + one reference row at each regularised step (13 at K = 1).
    """

    # read by the job before any weight loads (easyinv.run.job_parts.check_method_on_model)
    unsupported_paths: ClassVar[dict[str, str]] = {
        "flow": "its first-step window is given in SD timesteps and its noise regularisation acts on epsilon "
                "predictions; no flow version of ReNoise is defined",
    }
    needs_cfg: ClassVar[str | None] = None
    exact: ClassVar[bool] = False

    name: str = "renoise"
    num_steps: int = 50
    K: int = 1  # renoising iterations per step (K + 1 predictions)
    average: bool = True  # average the estimates in the window (code: average_latent_estimations)
    first_step_range: Sequence[int] = (0, 5)  # estimate indices averaged below first_step_max_timestep
    step_range: Sequence[int] = (8, 10)  # estimate indices averaged above it
    max_first_step: int = 5  # K is capped at this below first_step_max_timestep
    first_step_max_timestep: int = 250
    regularize: bool = True  # edit regularisation on/off
    weights: str = "paper"  # preset for (lambda_ac, lambda_kl): paper | paper-sdxl | paper-lcm | released
    lambda_ac: float | None = None  # λ_pair; None: from ``weights``
    lambda_kl: float | None = None  # λ_patch-KL; None: from ``weights``
    num_reg_steps: int = 4
    num_ac_rolls: int = 5
    reference: str = "noised"  # noised: z_0 noised to level t (paper); clean: ε(z_0, t) (released SD code)
    blend: Blender | None = None  # read by the shared walk, never here

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_steps", check_num_steps(self.num_steps))
        for key in ("K", "max_first_step", "first_step_max_timestep", "num_reg_steps", "num_ac_rolls"):
            value = getattr(self, key)
            if isinstance(value, bool) or int(value) != value or value < 0:
                raise ValueError(f"method.{key} must be an integer >= 0, got {value}")
            object.__setattr__(self, key, int(value))
        object.__setattr__(self, "first_step_range", _pair(self.first_step_range, "first_step_range"))
        object.__setattr__(self, "step_range", _pair(self.step_range, "step_range"))
        if self.weights not in WEIGHT_PRESETS:
            raise ValueError(f"method.weights must be one of {list(WEIGHT_PRESETS)}, got {self.weights!r}")
        preset_ac, preset_kl = WEIGHT_PRESETS[self.weights]
        for key, preset in (("lambda_ac", preset_ac), ("lambda_kl", preset_kl)):
            value = preset if getattr(self, key) is None else float(getattr(self, key))
            if not value >= 0.0:
                raise ValueError(f"method.{key} must be >= 0 or null, got {value}")
            object.__setattr__(self, key, value)
        if self.reference not in REFERENCES:
            raise ValueError(f"method.reference must be one of {list(REFERENCES)}, got {self.reference!r}")

    # ---- the plan of one step: which estimates are averaged and regularised -----------------------------------

    def plan(self, t: int) -> tuple[int, range, set[int], bool]:
        """For timestep ``t``: (K used, averaged estimate indices, regularised estimate indices, mean regularised).

        Only regularisations whose result is used are listed (the released code also regularises the last estimate
        when the mean replaces it).
        """
        first = t < self.first_step_max_timestep
        K = min(self.max_first_step, self.K) if first else self.K  # noqa: N806 - the paper's symbol
        lo, hi = self.first_step_range if first else self.step_range
        averaged = range(lo, min(hi, K + 1)) if self.average else range(0)
        use_mean = len(averaged) > 0
        active = self.regularize and self.num_reg_steps > 0 and (self.lambda_ac > 0 or self.lambda_kl > 0)
        reg = set()
        if active:
            reg = {k for k in range(K + 1) if (k >= lo or (not self.average and k > 0)) and (k < K or not use_mean)}
        return K, averaged, reg, active and use_mean

    # ---- one step ------------------------------------------------------------------------------------------------

    def nfe_per_image(self, T: int) -> None:  # noqa: N803
        return None  # T x (K + 1) estimates, capped below first_step_max_timestep, + a reference row per regularised
        # step: it depends on the grid's timesteps (13 reference rows at T = 50 on SD)

    def step(self, eps: Denoiser, z: Tensor, i: int, grid: Grid, ctx: StepContext) -> Tensor:
        """ReNoise step for ``z`` ``(B, C, H, W)``: K + 1 predictions (+1 reference row where it regularises)."""
        t, a_s, a_t = grid.timesteps[i], grid.alpha_src[i], grid.alpha_tgt[i]
        K, averaged, reg, reg_mean = self.plan(t)  # noqa: N806
        needs_ref = (bool(reg) or reg_mean) and self.lambda_kl > 0
        generators = [_generator(seed, 2 * i + 1) for seed in ctx.seeds]
        e_ref: Tensor | None = None  # ε on the reference latent, taken with the first estimate
        e_mean: Tensor | None = None  # running mean of the raw predictions in the averaging window
        z_est = ctx.z_query

        def reg_(e: Tensor) -> Tensor:
            return regularise(
                e,
                e_ref,
                generators,
                lambda_ac=self.lambda_ac,
                lambda_kl=self.lambda_kl,
                num_reg_steps=self.num_reg_steps,
                num_ac_rolls=self.num_ac_rolls,
            )

        for k in range(K + 1):
            if k == 0 and needs_ref:  # the reference rows ride along with the first estimate, as in the code
                b = z.shape[0]
                all_rows = torch.arange(b).repeat(2)
                both = eps(torch.cat([self._reference(ctx, a_t), z_est]), t, rows=all_rows)
                e_ref, e_k = both[:b], both[b:]
            else:
                e_k = eps(z_est, t)
            if k in averaged:  # running mean of the raw predictions (code: j·avg/(j+1) + δ/(j+1))
                j = k - averaged.start
                e_mean = e_k.clone() if e_mean is None else j * e_mean / (j + 1) + e_k / (j + 1)
            if k in reg:
                e_k = reg_(e_k)
            z_est = ddim_step(z, e_k, a_s, a_t)
        if e_mean is not None:
            z_est = ddim_step(z, reg_(e_mean) if reg_mean else e_mean, a_s, a_t)
        return z_est

    def _reference(self, ctx: StepContext, a_t: float) -> Tensor:
        """The KL reference latent at level ᾱ_t: z_0 itself (clean) or z_0 noised with a fixed per-row noise."""
        if self.reference == "clean":
            return ctx.z0
        z0 = ctx.z0
        noise = torch.stack(
            [torch.randn(z0.shape[1:], generator=_generator(seed, 0), dtype=torch.float32) for seed in ctx.seeds]
        ).to(device=z0.device, dtype=z0.dtype)
        return a_t**0.5 * z0 + (1.0 - a_t) ** 0.5 * noise
