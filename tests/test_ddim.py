"""DDIM inversion and the VAE-only ceiling: the update by hand, agreement with diffusers, NFE, validation."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import ConstantEps

from baselines.ddim import DDIM
from baselines.vae_only import VAEOnly
from easyinv.inversion import invert, reconstruct
from easyinv.models.gaussian import GaussianModel


def test_one_step_is_the_affine_update_by_hand():
    # z_t = a z_s + b ε, a = √(ᾱ_t/ᾱ_s), b = √(1−ᾱ_t) − √(ᾱ_t(1−ᾱ_s)/ᾱ_s)   (algorithms.md §1.1)
    grid = GaussianModel().grid(50)
    z0 = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    c = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    inv = invert(DDIM(), ConstantEps(c), z0, grid)
    for i in (0, 1, 24, 49):
        a_s, a_t = grid.alpha_src[i], grid.alpha_tgt[i]
        a = math.sqrt(a_t / a_s)
        b = math.sqrt(1 - a_t) - math.sqrt(a_t * (1 - a_s) / a_s)
        assert torch.allclose(inv.trajectory[i + 1], a * inv.trajectory[i] + b * c, rtol=0, atol=1e-12)
    # with ε fixed, DDIM sampling undoes the inversion exactly (up to rounding)
    den = ConstantEps(c)
    assert torch.allclose(reconstruct(den, inv.z_T, grid)[-1], z0, rtol=0, atol=1e-10)


def test_matches_diffusers_ddim_inverse_scheduler():
    from diffusers import DDIMInverseScheduler

    sched = DDIMInverseScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        steps_offset=1, set_alpha_to_one=False, clip_sample=False,
    )  # fmt: skip
    sched.set_timesteps(50)
    model = GaussianModel(0.1, 0.5, error=0.05)
    x0 = 0.5 * torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    z = x0.clone()
    for t in sched.timesteps:  # ≥ 0.22: the network gets the target timestep, as here
        z = sched.step(model.eps(z, int(t)), t, z).prev_sample
    ours = invert(DDIM(), model.denoiser(["", ""], 1.0), x0, model.grid(50)).z_T
    assert torch.allclose(ours, z, rtol=0, atol=1e-5)


def test_nfe_per_image():
    model = GaussianModel()
    x0 = torch.zeros(3, 3, 8, 8)
    den = model.denoiser(["", "", ""], 1.0)
    grid = model.grid(50)
    inv = invert(DDIM(), den, x0, grid)
    assert inv.nfe.tolist() == [50, 50, 50]
    reconstruct(den, inv.z_T, grid)
    assert den.nfe.tolist() == [100, 100, 100] and den.calls == 100


def test_vae_only_is_the_identity_with_zero_nfe():
    model = GaussianModel(error=0.1)
    x0 = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    method = VAEOnly()
    grid = model.grid(method.num_steps)
    den = model.denoiser(["", ""], 1.0)
    inv = invert(method, den, model.encode(x0), grid)
    rec = model.decode(reconstruct(den, inv.z_T, grid)[-1])
    assert grid.T == 0 and torch.equal(rec, x0) and den.nfe.tolist() == [0, 0]
    with pytest.raises(ValueError, match="method.num_steps must be 0"):
        VAEOnly(num_steps=50)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_invalid_num_steps_names_the_key(bad):
    with pytest.raises(ValueError, match=r"^method\.num_steps "):
        DDIM(num_steps=bad)
