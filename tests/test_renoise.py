"""ReNoise: degenerate settings, one step by hand, the step plan, NFE and reference rows, the losses against
independent implementations, the regularisation step, and convergence to discrete consistency."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from baselines.ddim import DDIM
from baselines.renoise import ReNoise, auto_corr_loss, patch_kl_loss, regularise
from easyinv.inversion import Denoiser, StepContext, ddim_step, invert, reconstruct
from easyinv.models.gaussian import GaussianModel

MODEL = GaussianModel(0.1, 0.5, resolution=8, error=0.05)
GRID = MODEL.grid(50)


class Recording(Denoiser):
    """Wraps a model's ε and logs (t, latents, rows) of every call."""

    def __init__(self, model: GaussianModel, batch_size: int):
        super().__init__(batch_size)
        self.model = model
        self.log: list[tuple[int, Tensor, list[int]]] = []

    def predict(self, z: Tensor, t: int, rows: Tensor) -> tuple[Tensor, int]:
        self.log.append((t, z.clone(), rows.tolist()))
        return self.model.eps(z, t), 1


def images(b: int, size: int = 8, seed: int = 0) -> Tensor:
    return (0.5 * torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(seed))).clamp(-1, 1)


# ---- degenerate settings and one step by hand ---------------------------------------------------------------


@pytest.mark.parametrize("average", [True, False])
def test_k0_without_regularisation_equals_ddim(average):
    x0 = images(2)
    ddim = invert(DDIM(), MODEL.denoiser(["", ""], 1.0), x0, GRID)
    den = MODEL.denoiser(["", ""], 1.0)
    renoise = invert(ReNoise(K=0, regularize=False, average=average), den, x0, GRID)
    assert torch.equal(renoise.z_T, ddim.z_T) and den.nfe.tolist() == [50, 50]


def test_k1_step_by_hand():
    x0 = images(1, seed=1)
    method = ReNoise(regularize=False)
    for i in (3, 12, 13, 30):  # t = 61, 241 (< 250: mean of two predictions), 261, 601 (≥ 250: the last one)
        t, a_s, a_t = GRID.timesteps[i], GRID.alpha_src[i], GRID.alpha_tgt[i]
        z = MODEL.exact_transport(x0, GRID.alpha_src[0], a_s)
        e0 = MODEL.eps(z, t)
        e1 = MODEL.eps(ddim_step(z, e0, a_s, a_t), t)
        want = ddim_step(z, 0.5 * (e0 + e1), a_s, a_t) if t < 250 else ddim_step(z, e1, a_s, a_t)
        got = method.step(MODEL.denoiser([""], 1.0), z, i, GRID, StepContext(z, x0, (0,)))
        assert torch.allclose(got, want, rtol=0, atol=1e-6), i


def test_plan_at_the_paper_defaults():
    method = ReNoise()
    assert method.plan(241) == (1, range(0, 2), {0}, True)  # regularise δ_0 (it feeds z⁽¹⁾) and the mean
    assert method.plan(261) == (1, range(0, 0), set(), False)  # one extra fixed-point iteration, nothing else
    assert ReNoise(K=7).plan(1)[0] == 5  # K capped below 250
    assert ReNoise(average=False).plan(601) == (1, range(0, 0), {1}, False)  # code: i > 0 when not averaging
    assert ReNoise(regularize=False).plan(1) == (1, range(0, 2), set(), False)


# ---- NFE and reference rows ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "inversion_nfe"),
    [
        ({}, 113),  # 50 × 2 + 13 reference rows (t < 250)
        ({"weights": "released", "reference": "clean"}, 113),
        ({"regularize": False}, 100),
        ({"lambda_kl": 0.0}, 100),  # the reference only feeds the KL term
        ({"K": 0, "regularize": False}, 50),
        ({"K": 2}, 163),  # t < 250: 3 + 1; t ≥ 250: 3
    ],
)
def test_nfe_per_image_and_reference_rows_only_where_they_are_used(kwargs, inversion_nfe):
    x0 = images(2)
    den = Recording(MODEL, 2)
    method = ReNoise(**kwargs)
    inv = invert(method, den, x0, GRID)
    assert inv.nfe.tolist() == [inversion_nfe] * 2
    reconstruct(den, inv.z_T, GRID)
    assert den.nfe.tolist() == [inversion_nfe + 50] * 2
    with_reference = [t for t, z, rows in den.log if rows == [0, 1, 0, 1]]
    uses_reference = method.regularize and method.lambda_kl > 0
    assert with_reference == ([t for t in GRID.timesteps if t < 250] if uses_reference else [])


@pytest.mark.parametrize("reference", ["clean", "noised"])
def test_reference_latents(reference):
    x0 = images(2, seed=4)
    den = Recording(MODEL, 2)
    invert(ReNoise(reference=reference), den, x0, GRID, seeds=[11, 12])
    refs = [(t, z[:2]) for t, z, rows in den.log if rows == [0, 1, 0, 1]]
    noises = []
    for t, z_ref in refs:
        a = float(MODEL.alphas_cumprod[t])
        if reference == "clean":  # the released SD code: ε(z_0, t) on the clean latent
            assert torch.equal(z_ref, x0)
        else:  # paper: z_0 noised to level t with one fixed noise per row
            noises.append((z_ref - a**0.5 * x0) / (1 - a) ** 0.5)
    if reference == "noised":
        assert all(torch.allclose(n, noises[0], atol=1e-3) for n in noises)
        assert not torch.allclose(noises[0][0], noises[0][1], atol=0.5)
        assert 0.8 < float(noises[0].std()) < 1.2


# ---- the losses against independent implementations -------------------------------------------------------


def test_patch_kl_against_brute_force():
    gen = torch.Generator().manual_seed(5)
    e = torch.randn(2, 3, 9, 8, generator=gen, dtype=torch.float64)  # 9 rows: the last one fills no patch
    ref = 0.5 * torch.randn(2, 3, 9, 8, generator=gen, dtype=torch.float64) + 0.2
    total = 0.0
    en, rn = e.numpy(), ref.numpy()
    for b in range(2):
        for c in range(3):
            for py in range(2):
                for px in range(2):
                    p0 = en[b, c, 4 * py : 4 * py + 4, 4 * px : 4 * px + 4]
                    p1 = rn[b, c, 4 * py : 4 * py + 4, 4 * px : 4 * px + 4]
                    v0, v1 = p0.var(ddof=1), p1.var(ddof=1)
                    kl = np.log((v1 + 1e-6) / (v0 + 1e-6)) + (v0 + (p0.mean() - p1.mean()) ** 2) / (v1 + 1e-6) - 1
                    total += abs(kl)
    assert abs(float(patch_kl_loss(e, ref)) - total) < 1e-9 * total


def test_auto_corr_loss_against_the_per_channel_loop():
    # the released loop: per channel, draw one offset per pyramid level, roll along H and W by it
    e = torch.randn(2, 3, 32, 20, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    want = 0.0
    for b in range(2):
        gen = torch.Generator().manual_seed(100 + b)
        for c in range(3):
            level = e[b, c][None, None]
            while True:
                r = int(torch.randint(0, level.shape[2] // 2, (1,), generator=gen))
                want += float((level * torch.roll(level, r, dims=2)).mean() ** 2)
                want += float((level * torch.roll(level, r, dims=3)).mean() ** 2)
                if level.shape[2] <= 8:
                    break
                level = F.avg_pool2d(level, 2)
    gens = [torch.Generator().manual_seed(100 + b) for b in range(2)]
    assert abs(float(auto_corr_loss(e, gens)) - want) < 1e-12


def test_kl_step_is_a_clipped_gradient_step():
    gen = torch.Generator().manual_seed(7)
    e = torch.randn(1, 1, 4, 4, generator=gen, dtype=torch.float64)
    ref = 0.01 * torch.randn(1, 1, 4, 4, generator=gen, dtype=torch.float64)  # tiny variance: huge gradients
    out = regularise(e, ref, [], lambda_ac=0.0, lambda_kl=0.05, num_reg_steps=1, num_ac_rolls=5)
    grad = torch.zeros_like(e)  # central finite differences of the loss
    for k in range(16):
        d = torch.zeros(16, dtype=torch.float64)
        d[k] = 1e-6
        d = d.view_as(e)
        grad.view(-1)[k] = (patch_kl_loss(e + d, ref) - patch_kl_loss(e - d, ref)) / 2e-6
    assert float(grad.abs().max()) > 100  # the clip matters here
    assert torch.allclose(out, e - 0.05 * grad.clamp(-100, 100), rtol=0, atol=1e-6)


def test_regularisation_runs_under_no_grad_and_inference_mode():
    e = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(8))
    ref = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    outs = []
    for ctx in (torch.no_grad, torch.inference_mode):
        with ctx():
            gens = [torch.Generator().manual_seed(1)]
            outs.append(regularise(e, ref, gens, lambda_ac=10.0, lambda_kl=0.05, num_reg_steps=4, num_ac_rolls=5))
    assert torch.equal(outs[0], outs[1]) and not outs[0].requires_grad and not torch.equal(outs[0], e)


# ---- convergence and validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("windows", [{"average": False}, {"first_step_range": (18, 21), "step_range": (18, 21)}])
def test_many_renoising_iterations_reach_discrete_consistency(windows):
    model = GaussianModel(0.1, 0.5, resolution=8)
    x0 = images(2, seed=10)

    def round_trip(method) -> float:
        den = model.denoiser(["", ""], 1.0)
        rec = reconstruct(den, invert(method, den, x0, GRID).z_T, GRID)[-1]
        return float((rec - x0).norm() / x0.norm())

    converged = round_trip(ReNoise(K=20, max_first_step=20, regularize=False, **windows))
    assert converged <= 1e-4 < round_trip(DDIM())


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"K": -1}, "K"),
        ({"K": 1.5}, "K"),
        ({"num_reg_steps": -1}, "num_reg_steps"),
        ({"weights": "sdxl"}, "weights"),
        ({"lambda_kl": -0.1}, "lambda_kl"),
        ({"reference": "forward"}, "reference"),
        ({"first_step_range": (5, 2)}, "first_step_range"),
        ({"step_range": (1,)}, "step_range"),
        ({"num_steps": 0}, "num_steps"),
    ],
)
def test_invalid_values_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=rf"^method\.{key} "):
        ReNoise(**kwargs)


def test_weight_presets_and_overrides():
    assert (ReNoise().lambda_ac, ReNoise().lambda_kl) == (10.0, 0.05)
    assert (ReNoise(weights="released").lambda_ac, ReNoise(weights="released").lambda_kl) == (20.0, 0.065)
    method = ReNoise(weights="paper-sdxl", lambda_ac=15)
    assert (method.lambda_ac, method.lambda_kl) == (15.0, 0.055)
