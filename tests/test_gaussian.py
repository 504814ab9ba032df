"""The closed-form Gaussian model: schedule, optimal ε, exact probability-flow transport, error knob, fitting,
and every method end to end at several resolutions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from baselines.ddim import DDIM
from baselines.fixed_point import FixedPoint
from baselines.renoise import ReNoise
from baselines.vae_only import VAEOnly
from easyinv.inversion import invert, reconstruct
from easyinv.method import EasyInv
from easyinv.models.gaussian import GaussianModel, sd1_alphas_cumprod

F64 = {"net_dtype": torch.float64, "latent_dtype": torch.float64}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def images(b: int, size: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (0.5 * torch.randn(b, 3, size, size, generator=gen, dtype=dtype)).clamp(-1, 1)


def test_schedule_matches_diffusers_sd14_scheduler():
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, set_alpha_to_one=False
    )
    assert torch.equal(sd1_alphas_cumprod(), sched.alphas_cumprod)
    grid = GaussianModel().grid(50)
    assert grid.timesteps[:2] == (1, 21) and grid.timesteps[-1] == 981
    assert grid.alpha_src[0] == float(sched.alphas_cumprod[0])  # final ᾱ = ᾱ_0 (set_alpha_to_one=False)
    assert GaussianModel().grid(0).T == 0


def test_expected_eps_is_the_regression_of_eps_on_z():
    # Monte Carlo: for scalar x ~ N(μ, σ²), E[ε | z] is linear in z; least squares recovers slope and intercept.
    mu, sigma, a = 0.3, 0.7, 0.4
    gen = torch.Generator().manual_seed(1)
    x = mu + sigma * torch.randn(400_000, generator=gen, dtype=torch.float64)
    noise = torch.randn(400_000, generator=gen, dtype=torch.float64)
    z = math.sqrt(a) * x + math.sqrt(1 - a) * noise
    design = torch.stack([z, torch.ones_like(z)], dim=1)
    slope, intercept = torch.linalg.lstsq(design, noise[:, None]).solution.flatten().tolist()
    model = GaussianModel(mu, sigma, **F64)
    probe = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64).view(3, 1, 1, 1)
    predicted = model.expected_eps(probe, a).flatten()
    assert torch.allclose(predicted, slope * probe.flatten() + intercept, atol=1e-2)


def test_exact_transport_matches_fine_ode_integration():
    # PF-ODE in x̄ = z/√ᾱ, s = √((1−ᾱ)/ᾱ): dx̄/ds = ε(z). RK4 in s with 2000 steps, per-pixel μ, σ.
    gen = torch.Generator().manual_seed(2)
    mu = 0.4 * torch.randn(3, 4, 4, generator=gen, dtype=torch.float64)
    sigma = 0.05 + torch.rand(3, 4, 4, generator=gen, dtype=torch.float64)
    model = GaussianModel(mu, sigma, resolution=4, **F64)
    z0 = images(2, 4, dtype=torch.float64)
    ac = sd1_alphas_cumprod()
    a_from, a_to = float(ac[0]), float(ac[981])

    def ode(xbar: torch.Tensor, s: float) -> torch.Tensor:
        a = 1.0 / (1.0 + s * s)
        return model.expected_eps(xbar * math.sqrt(a), a)

    s0, s1 = math.sqrt((1 - a_from) / a_from), math.sqrt((1 - a_to) / a_to)
    n = 2000
    h = (s1 - s0) / n
    xbar = z0 / math.sqrt(a_from)
    for k in range(n):
        s = s0 + k * h
        k1 = ode(xbar, s)
        k2 = ode(xbar + 0.5 * h * k1, s + 0.5 * h)
        k3 = ode(xbar + 0.5 * h * k2, s + 0.5 * h)
        k4 = ode(xbar + h * k3, s + h)
        xbar = xbar + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    z_ode = xbar * math.sqrt(a_to)
    z_exact = model.exact_transport(z0, a_from, a_to)
    assert rel(z_exact, z_ode) < 1e-6
    grid = model.grid(50)
    assert torch.allclose(model.exact_invert(z0, grid), z_exact, rtol=0, atol=1e-12)
    assert torch.allclose(model.exact_reconstruct(model.exact_invert(z0, grid), grid), z0, atol=1e-12)


def test_ddim_round_trip_error_is_first_order_in_the_step():
    model = GaussianModel(0.1, 0.5, resolution=16)
    x0 = images(2, 16)
    errors = {}
    for n in (25, 50, 100, 200):  # divisors of 1000 only: the grid then always ends at 1000 - Δ + 1
        grid = model.grid(n)
        den = model.denoiser(["", ""], 1.0)
        z_end = invert(DDIM(num_steps=n), den, x0, grid).z_T
        errors[n] = rel(reconstruct(den, z_end, grid)[-1], x0)
    for n in (25, 50, 100):
        assert 1.6 < errors[n] / errors[2 * n] < 2.6, errors


def test_error_knob_is_a_fixed_smooth_bounded_perturbation():
    exact = GaussianModel(0.1, 0.5, resolution=8)
    noisy = GaussianModel(0.1, 0.5, resolution=8, error=0.1)
    z = images(3, 8, seed=3)
    a = float(exact.alphas_cumprod[501])
    assert torch.equal(exact.eps(z, 501), exact.expected_eps(z, a))
    diff = noisy.eps(z, 501) - exact.eps(z, 501)
    assert 0.05 < float(diff.abs().max()) <= 0.1 + 1e-6
    assert torch.equal(noisy.eps(z, 501), GaussianModel(0.1, 0.5, error=0.1).eps(z, 501))  # deterministic
    assert torch.equal(noisy.eps(z[1:2], 501), noisy.eps(z, 501)[1:2])  # per row: batch-independent
    assert not torch.equal(noisy.eps(z, 501) - exact.eps(z, 501), noisy.eps(z, 521) - exact.eps(z, 521))
    dz = 1e-3 * torch.ones_like(z)  # smooth: Lipschitz in z with constant error·ω = 0.2
    change = (noisy.eps(z + dz, 501) - exact.eps(z + dz, 501)) - diff
    assert float(change.abs().max()) <= 0.2 * 1e-3 * 1.01


def test_denoiser_ignores_prompts_and_guidance_and_costs_one_per_row():
    model = GaussianModel()
    z = images(2, 8)
    d1, d7 = model.denoiser(["a", "b"], 1.0), model.denoiser(["x", "y"], 7.5)
    assert torch.equal(d1(z, 21), d7(z, 21))
    assert d1.nfe.tolist() == [1, 1]
    d1(z[1:], 41, rows=torch.tensor([1]))
    assert d1.nfe.tolist() == [1, 2]


def test_fit_from_folder_and_build(tmp_path):
    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8) for _ in range(3)]
    (tmp_path / "sub").mkdir()
    for n, p in enumerate(pixels):  # sub-folders count too
        Image.fromarray(p).save(tmp_path / ("sub" if n == 2 else "") / f"{n}.png")
    model = GaussianModel.build(
        name="gaussian", resolution=6, precision={"unet": "float32", "latent": "float32"}, device="cpu",
        fit_from=str(tmp_path), error=0.0,
    )  # fmt: skip
    stack = np.stack(pixels).astype(np.float64) / 127.5 - 1.0  # same size: the resize is the identity
    assert np.allclose(model.mu.numpy(), stack.mean(axis=0).transpose(2, 0, 1), atol=1e-6)
    assert np.allclose(model.sigma.numpy(), stack.std(axis=0).transpose(2, 0, 1), atol=1e-6)
    with pytest.raises(ValueError, match="GaussianModel fitted at"):
        model.eps(images(1, 8), 21)
    with pytest.raises(ValueError, match="model.load.fit_from"):
        GaussianModel.build(name="g", resolution=6, precision={}, device="cpu", fit_from=str(tmp_path / "none"))
    with pytest.raises(ValueError, match="model.error"):
        GaussianModel(error=-1.0)


def test_encode_decode_are_identity_and_precision_is_honoured():
    model = GaussianModel.build(
        name="gaussian", resolution=8, precision={"unet": "float16", "latent": "float32"}, device="cpu"
    )
    x = images(2, 8)
    assert torch.equal(model.decode(model.encode(x)), x)
    eps = model.eps(x, 501)
    assert eps.dtype == torch.float32
    assert not torch.equal(eps, GaussianModel().eps(x, 501))  # computed in fp16
    assert torch.allclose(eps, GaussianModel().eps(x, 501), atol=5e-3)


@pytest.mark.parametrize("size", [8, 20, 48])
def test_every_method_runs_end_to_end_at_several_resolutions(size):
    model = GaussianModel(0.0, 0.5, resolution=size, error=0.05)
    x0 = images(2, size, seed=size)
    methods = [
        VAEOnly(), DDIM(), EasyInv(), ReNoise(), FixedPoint(),
        FixedPoint(acceleration="anderson"), FixedPoint(num_steps=20, iters=30, acceleration="anderson"),
    ]  # fmt: skip
    results = {}
    for method in methods:
        grid = model.grid(method.num_steps)
        den = model.denoiser(["", ""], 1.0)
        inv = invert(method, den, model.encode(x0), grid)
        inv_nfe = inv.nfe.clone()
        rec = model.decode(reconstruct(den, inv.z_T, grid)[-1])
        assert inv.z_T.shape == x0.shape and torch.isfinite(rec).all()
        results[method] = (rel(rec, x0), inv_nfe.tolist(), den.nfe.tolist())
    assert results[methods[0]] == (0.0, [0, 0], [0, 0])
    assert results[methods[1]][1:] == results[methods[2]][1:] == ([50, 50], [100, 100])
    assert results[methods[3]][1:] == ([113, 113], [163, 163])
    assert results[methods[4]][1:] == ([120, 120], [140, 140])
    assert results[methods[-1]][0] < 1e-4 < results[methods[1]][0]  # converged fixed point: discrete consistency
