"""The core's one update on two paths, and the closed-form Gaussian flow model.

z' = α'·x̂₀ + σ'·ε̂ is DDIM on the VP path (bit for bit the old DDIM step) and Euler on the rectified-flow path; the
closed-form flow model's velocity, exact flow map, Euler's first order and fixed-point's discrete consistency are
checked against independent computations (regression, RK4, the implicit step)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import run_job

from baselines.ddim import DDIM
from baselines.fixed_point import FixedPoint
from easyinv.inversion import Grid, Level, ddim_step, invert, reconstruct
from easyinv.models.gaussian import sd1_alphas_cumprod
from easyinv.models.gaussian_flow import GaussianFlowModel, flow_sigmas
from easyinv.run.records import read_records


def _pairs() -> list[tuple[float, float]]:
    ac = sd1_alphas_cumprod()
    return [(float(ac[0]), float(ac[1])), (float(ac[480]), float(ac[500])), (float(ac[961]), float(ac[981]))]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_step_is_the_old_ddim_step_bit_for_bit_on_the_vp_path(dtype):
    gen = torch.Generator().manual_seed(1)
    z, e = (torch.randn(2, 4, 8, 8, generator=gen, dtype=dtype) for _ in range(2))
    for a_s, a_t in _pairs():
        for src, tgt in ((a_s, a_t), (a_t, a_s)):
            # the DDIM step as it was written before levels: coefficients rounded in the latent's precision
            ctype = torch.float64 if dtype == torch.float64 else torch.float32
            s, t = torch.tensor(src, dtype=ctype), torch.tensor(tgt, dtype=ctype)
            sq_s, sq1_s, sq_t, sq1_t = (float(v) for v in (s**0.5, (1 - s) ** 0.5, t**0.5, (1 - t) ** 0.5))
            old = sq_t * ((z - sq1_s * e) / sq_s) + sq1_t * e
            assert torch.equal(ddim_step(z, e, src, tgt), old)
            # ... and the (α, σ) form with VP levels carrying those coefficients
            general = ddim_step(z, e, Level(sq_s, sq1_s, "epsilon"), Level(sq_t, sq1_t, "epsilon"))
            assert torch.equal(general, old)


def test_the_step_is_euler_on_the_flow_path():
    gen = torch.Generator().manual_seed(2)
    z, v = (torch.randn(3, 16, 8, 8, generator=gen, dtype=torch.float64) for _ in range(2))
    for s, t in ((0.0, 0.1), (0.3, 0.55), (0.9, 1.0), (1.0, 0.7), (0.2, 0.0)):
        step = ddim_step(z, v, Level.flow(s), Level.flow(t))
        assert torch.equal(step, z + (t - s) * v)  # FlowMatchEulerDiscreteScheduler.step's arithmetic
        x0, eps = Level.flow(s).split(z, v)  # the (α, σ) form: α'·x̂₀ + σ'·ε̂, equal up to rounding
        assert torch.allclose((1 - t) * x0 + t * eps, step, rtol=0, atol=1e-14)
        assert torch.allclose(eps - x0, v, rtol=0, atol=1e-14)  # the velocity is ε − x₀


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "flow"])
def test_every_prediction_kind_splits_into_the_data_and_the_noise_it_was_made_from(prediction):
    """z = α·x₀ + σ·ε built by hand, the network's ideal output for each kind, and split() must give x₀ and ε back."""
    gen = torch.Generator().manual_seed(4)
    x0, noise = (torch.randn(2, 4, 8, 8, generator=gen, dtype=torch.float64) for _ in range(2))
    for s in (0.1, 0.5, 0.9):
        if prediction == "flow":
            level, output = Level.flow(s), noise - x0
        else:  # a VP level: α² + σ² = 1
            level = Level(math.sqrt(1 - s**2), s, prediction)
            output = noise if prediction == "epsilon" else level.alpha * noise - level.sigma * x0
        z = level.alpha * x0 + level.sigma * noise
        got_x0, got_noise = level.split(z, output)
        assert torch.allclose(got_x0, x0, atol=1e-12, rtol=0) and torch.allclose(got_noise, noise, atol=1e-12, rtol=0)


def test_euler_is_ddim_in_vp_coordinates():
    """flow-matching.md §1: with r(σ) = √((1−σ)² + σ²), ᾱ(σ) = (1−σ)²/r², DDIM on z/r with ε̂ = z + (1−σ)v is Euler."""
    gen = torch.Generator().manual_seed(3)
    z, v = (torch.randn(2, 3, 8, 8, generator=gen, dtype=torch.float64) for _ in range(2))
    for s, t in ((0.05, 0.2), (0.4, 0.45), (0.8, 0.95)):
        r_s, r_t = math.hypot(1 - s, s), math.hypot(1 - t, t)
        a_s, a_t = (1 - s) ** 2 / r_s**2, (1 - t) ** 2 / r_t**2
        vp = ddim_step(z / r_s, z + (1 - s) * v, a_s, a_t) * r_t
        assert float((vp - (z + (t - s) * v)).abs().max()) < 1e-13


def test_flow_grid_levels_and_times():
    grid = Grid.from_sigmas(flow_sigmas(4), flow_sigmas(4))
    assert grid.T == 4 and grid.time0 == 0.0 and {lv.prediction for lv in grid.alpha_src} == {"flow"}
    assert [lv.sigma for lv in grid.alpha_src] == [0.0, 0.25, 0.5, 0.75]
    assert grid.timesteps == (0.25, 0.5, 0.75, 1.0) and grid.source_time(0) == 0.0 and grid.source_time(2) == 0.5
    levels, times = grid.levels()
    assert [lv.sigma for lv in levels] == [0.0, 0.25, 0.5, 0.75, 1.0] and times == (0.0, 0.25, 0.5, 0.75, 1.0)
    shifted = flow_sigmas(4, shift=3.0)
    assert shifted[0] == 0.0 and shifted[-1] == 1.0 and shifted[1] == pytest.approx(3 * 0.25 / (1 + 2 * 0.25))
    with pytest.raises(ValueError, match="increase"):
        Grid.from_sigmas([0.0, 0.5, 0.5], [0.0, 0.5, 0.5])


# --------------------------------------------------------------------------------------------------------------------
# The closed-form Gaussian flow model
# --------------------------------------------------------------------------------------------------------------------


def _model(**kwargs) -> GaussianFlowModel:
    gen = torch.Generator().manual_seed(4)
    mu = (torch.rand(3, 4, 4, generator=gen, dtype=torch.float64) - 0.5) * 1.6
    s = 0.05 + 0.85 * torch.rand(3, 4, 4, generator=gen, dtype=torch.float64)
    return GaussianFlowModel(mu, s, resolution=4, net_dtype=torch.float64, latent_dtype=torch.float64, **kwargs)


def _data(model: GaussianFlowModel, n: int = 16) -> torch.Tensor:
    gen = torch.Generator().manual_seed(5)
    return model.mu + model.sigma * torch.randn(n, 3, 4, 4, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("level", [0.1, 0.5, 0.9])
def test_velocity_is_the_regression_of_eps_minus_x0(level):
    """E[ε − x₀ | x_σ] by least squares on 2M samples of the path (scalar data): the closed form's slope and intercept
    within 0.01 (about 7 standard errors)."""
    mu, s, n = 0.3, 0.6, 2_000_000
    rng = np.random.default_rng(0)
    x0, eps = mu + s * rng.standard_normal(n), rng.standard_normal(n)
    x = (1 - level) * x0 + level * eps
    slope, intercept = np.polyfit(x, eps - x0, 1)
    model = GaussianFlowModel(mu, s, resolution=1, net_dtype=torch.float64, latent_dtype=torch.float64)
    at = torch.tensor([0.0, 1.0], dtype=torch.float64).view(2, 1, 1, 1).expand(2, 3, 1, 1)
    v0, v1 = model.expected_velocity(at, level)[:, 0, 0, 0].tolist()
    assert v1 - v0 == pytest.approx(slope, abs=0.01) and v0 == pytest.approx(intercept, abs=0.01)


def test_exact_map_is_the_flow_of_the_velocity():
    """Φ_{a→b} against RK4 integration of dx/dσ = v with 2,000 steps, both directions."""
    model = _model()
    x = _data(model, 8)
    for a, b in ((0.0, 1.0), (1.0, 0.0), (0.2, 0.7)):
        n, y = 2000, x.clone()
        h = (b - a) / n
        for k in range(n):
            sig = a + k * h
            k1 = model.expected_velocity(y, sig)
            k2 = model.expected_velocity(y + h / 2 * k1, sig + h / 2)
            k3 = model.expected_velocity(y + h / 2 * k2, sig + h / 2)
            k4 = model.expected_velocity(y + h * k3, sig + h)
            y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        assert float((model.exact_transport(x, a, b) - y).abs().max()) < 1e-10


def _round_trip(model: GaussianFlowModel, method, z0: torch.Tensor, steps: int) -> tuple[float, float]:
    grid = model.grid(steps)
    den = model.denoiser([""] * z0.shape[0], 1.0)
    inversion = invert(method, den, z0, grid)
    rec = reconstruct(den, inversion.z_T, grid)[-1]
    return float((rec - z0).abs().max()), float((inversion.z_T - model.exact_invert(z0, grid)).abs().max())


@pytest.mark.parametrize("time", ["source", "target"])
def test_euler_inversion_is_first_order(time):
    model, steps = _model(), (32, 64, 128, 256)
    z0 = _data(model)
    errors = np.array([_round_trip(model, DDIM(num_steps=T, time=time), z0, T) for T in steps])
    for column in (0, 1):  # round trip, and z_T against the exact map
        slope = np.polyfit(np.log(steps), np.log(errors[:, column]), 1)[0]
        assert -1.15 < slope < -0.85, (time, column, errors[:, column])
    assert np.all(errors[1:, 0] / errors[:-1, 0] == pytest.approx(0.5, abs=0.06))  # halves when T doubles


def test_target_time_inverts_better_than_source_time():
    model = _model()
    z0 = _data(model)
    source = _round_trip(model, DDIM(num_steps=64, time="source"), z0, 64)[0]
    target = _round_trip(model, DDIM(num_steps=64, time="target"), z0, 64)[0]
    assert target < 0.7 * source


@pytest.mark.parametrize(("shift", "steps", "acceleration"), [(1.0, 16, "none"), (3.0, 32, "anderson")])
def test_fixed_point_reaches_discrete_consistency(shift, steps, acceleration):
    """Enough iterations solve the implicit step: inversion then Euler sampling returns z_0 (float64). On SD3's
    shifted grid the first steps are 3× longer and plain iteration contracts slowly there (|h·α| near 1 for the
    sharpest pixels), so that case uses twice the steps and Anderson mixing."""
    model = _model(shift=shift)
    z0 = _data(model)
    rt, _ = _round_trip(model, FixedPoint(num_steps=steps, iters=40, acceleration=acceleration), z0, steps)
    assert rt <= 1e-10
    euler, _ = _round_trip(model, DDIM(num_steps=steps), z0, steps)
    assert euler > 1e-3  # one Euler inversion is far from it


def test_the_implicit_step_in_closed_form_is_what_fixed_point_converges_to():
    """z' = (z + h·β') / (1 − h·α'), β = −μ − α·m (flow-matching.md §5): the exact inverse of one Euler sample step."""
    model = _model()
    z = _data(model, 4)
    a, b = 0.3, 0.4
    h = b - a
    mu, _ = model._params(z)
    mean_b, _, alpha_b = model._path(z, b)
    beta_b = -mu - alpha_b * mean_b
    closed = (z + h * beta_b) / (1 - h * alpha_b)
    grid = Grid.from_sigmas([a, b], [a, b])
    den = model.denoiser([""] * 4, 1.0)
    solved = invert(FixedPoint(num_steps=1, iters=60, acceleration="none"), den, z, grid).z_T
    assert float((solved - closed).abs().max()) < 1e-12
    back = ddim_step(closed, model.network(closed, b), Level.flow(b), Level.flow(a))
    assert float((back - z).abs().max()) < 1e-14


# --------------------------------------------------------------------------------------------------------------------
# Through the runner
# --------------------------------------------------------------------------------------------------------------------

FLOW_NFE = {  # T = 4: inversion, reconstruction per image
    "euler": (4, 4), "ddim": (4, 4), "easyinv": (4, 4), "fixed_point": (4 * (1 + 5), 4), "edict": (8, 8),
    "bdia": (4, 3), "negative_prompt": (4, 4), "null_text": (4 + 4 * (1 + 1 + 2), 8),
}


@pytest.mark.parametrize("method", sorted(FLOW_NFE))
def test_every_applicable_method_runs_on_the_flow_model(method, tmp_path):
    overrides = ["model=gaussian_flow", f"method={method}", "method.num_steps=4", "dataset.limit=2",
                 "metrics.lpips.random_trunk=true"]
    if method == "easyinv":
        overrides.append("method.interval=[0.2,0.8]")
    df = read_records(run_job(tmp_path, *overrides))
    assert set(df.status) == {"ok"}, df.reason.tolist()
    inv, rec = FLOW_NFE[method]
    assert (df.nfe_invert == inv).all() and (df.nfe_reconstruct == rec).all(), df[["nfe_invert", "nfe_reconstruct"]]
    if method in ("edict", "bdia"):  # exact on the flow path too
        assert (df.psnr > 60).all()


@pytest.mark.parametrize("method", ["belm", "renoise"])
def test_methods_whose_maths_needs_the_vp_path_refuse_a_flow_model(method, tmp_path):
    from easyinv.validation import ConfigError

    with pytest.raises(ConfigError, match=rf"method={method} does not run on model=gaussian_flow \(flow path\)"):
        run_job(tmp_path, "model=gaussian_flow", f"method={method}", "dataset.limit=1")
