"""Fixed-point inversion: iters = 0 is DDIM, the iterates against closed forms for an affine ε, Anderson weights,
per-row early stop, NFE, convergence to discrete consistency, validation."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from baselines.ddim import DDIM
from baselines.fixed_point import FixedPoint, anderson_weights
from easyinv.inversion import Denoiser, Grid, StepContext, invert, reconstruct
from easyinv.models.gaussian import GaussianModel

MODEL = GaussianModel(0.1, 0.5, resolution=8, error=0.05)


class AffineEps(Denoiser):
    """ε(x, t) = s·x + c, elementwise: the fixed point of x = a z + b ε(x) is x* = (a z + b c)/(1 − b s)."""

    def __init__(self, batch_size: int, s: float, c: float):
        super().__init__(batch_size)
        self.s, self.c = s, c
        self.log: list[list[int]] = []

    def predict(self, z: Tensor, t: int, rows: Tensor) -> tuple[Tensor, int]:
        self.log.append(rows.tolist())
        return self.s * z + self.c, 1


def images(b: int, size: int = 8, seed: int = 0, dtype: torch.dtype = torch.float32) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (0.5 * torch.randn(b, 3, size, size, generator=gen, dtype=dtype)).clamp(-1, 1)


# one step from ᾱ_s = 0.5 to ᾱ_t = 0.2: a = √0.4, b = √0.8 − √0.2 = √0.2
A_S, A_T = 0.5, 0.2
A, B = 0.4**0.5, 0.2**0.5
GRID = Grid(timesteps=(500,), alpha_src=(A_S,), alpha_tgt=(A_T,))
S, C = 1.5, 0.3  # b·s ≈ 0.67: contractive but slow


def one_step(method: FixedPoint, z: Tensor, z_query: Tensor | None = None) -> Tensor:
    z_query = z if z_query is None else z_query
    return method.step(AffineEps(z.shape[0], S, C), z, 0, GRID, StepContext(z_query, z, tuple(range(z.shape[0]))))


@pytest.mark.parametrize("acceleration", ["none", "empirical", "anderson"])
def test_zero_iterations_equal_ddim(acceleration):
    x0 = images(2)
    ddim = invert(DDIM(num_steps=20), MODEL.denoiser(["", ""], 1.0), x0, MODEL.grid(20))
    den = MODEL.denoiser(["", ""], 1.0)
    fp = invert(FixedPoint(iters=0, acceleration=acceleration), den, x0, MODEL.grid(20))
    assert torch.equal(fp.z_T, ddim.z_T) and den.nfe.tolist() == [20, 20]


def test_plain_iteration_error_is_geometric():
    # x^k − x* = (b s)^(k+1) (z_query − x*): x⁰ = f(z_query) is already one application of f
    z = images(1, dtype=torch.float64)
    x_star = (A * z + B * C) / (1 - B * S)
    for k in (0, 1, 4):
        got = one_step(FixedPoint(iters=k, acceleration="none"), z)
        assert torch.allclose(got - x_star, (B * S) ** (k + 1) * (z - x_star), rtol=0, atol=1e-12)


def test_empirical_iteration_follows_its_two_term_recursion():
    # x^{k+1} = ½ f(x^k) + ½ f(x^{k−1}), x^{−1} = z_query  ⇒  d_{k+1} = (b s / 2)(d_k + d_{k−1}) for d = x − x*
    z = images(1, dtype=torch.float64)
    x_star = (A * z + B * C) / (1 - B * S)
    d_prev, d = 1.0, B * S  # in units of (z_query − x*)
    for k in range(1, 6):
        d_prev, d = d, B * S / 2 * (d + d_prev)
        got = one_step(FixedPoint(iters=k, acceleration="empirical"), z)
        assert torch.allclose(got - x_star, d * (z - x_star), rtol=0, atol=1e-12), k


def test_anderson_solves_an_affine_map_in_two_iterations():
    # f is affine with one slope for every element: the residual of the 2-point Anderson mix vanishes exactly
    z = images(2, dtype=torch.float64)
    x_star = (A * z + B * C) / (1 - B * S)
    plain = one_step(FixedPoint(iters=2, acceleration="none"), z)
    got = one_step(FixedPoint(iters=2, acceleration="anderson", m=3, ridge=1e-14), z)
    assert float((got - x_star).abs().max()) < 1e-9 < float((plain - x_star).abs().max())
    default_ridge = one_step(FixedPoint(iters=2, acceleration="anderson"), z)  # relative ridge 1e-8: a tiny bias
    assert float((default_ridge - x_star).abs().max()) < 1e-6
    assert torch.equal(one_step(FixedPoint(iters=3, acceleration="anderson", m=1), z),
                       one_step(FixedPoint(iters=3, acceleration="none"), z))  # fmt: skip


def test_anderson_weights_two_point_closed_form():
    # min_α ‖α r1 + (1 − α) r2‖²  ⇒  α = r2·(r2 − r1) / ‖r2 − r1‖²
    gen = torch.Generator().manual_seed(1)
    r = torch.randn(3, 2, 50, generator=gen, dtype=torch.float64)
    alpha = anderson_weights(r, ridge=1e-14)
    r1, r2 = r[:, 0], r[:, 1]
    want = (r2 * (r2 - r1)).sum(-1) / ((r2 - r1) ** 2).sum(-1)
    assert torch.allclose(alpha[:, 0], want, atol=1e-10) and torch.allclose(alpha.sum(1), torch.ones(3, dtype=r.dtype))
    assert torch.equal(anderson_weights(torch.zeros(1, 3, 5), 1e-8), torch.full((1, 3), 1 / 3))  # nothing to fit


def test_first_prediction_on_the_query_latent_and_update_from_z():
    z = images(1, dtype=torch.float64)
    z_query = z + 0.1
    got = one_step(FixedPoint(iters=0), z, z_query)
    assert torch.allclose(got, A * z + B * (S * z_query + C), rtol=0, atol=1e-12)


def test_per_row_early_stop_evaluates_only_running_rows():
    # row 1 starts at the fixed point (its iterate never moves), row 0 far from it
    z = images(2, dtype=torch.float64)
    x_star = (A * z + B * C) / (1 - B * S)
    z_query = torch.stack([z[0], x_star[1]])
    den = AffineEps(2, S, C)
    ctx = StepContext(z_query, z, (0, 1))
    out = FixedPoint(iters=6, acceleration="none", tol=1e-6).step(den, z, 0, GRID, ctx)
    assert den.log[:2] == [[0, 1], [0, 1]] and all(rows == [0] for rows in den.log[2:])
    assert den.nfe.tolist() == [7, 2]
    assert torch.allclose(out[1], x_star[1], atol=1e-12)
    assert torch.allclose(out[0] - x_star[0], (B * S) ** 7 * (z[0] - x_star[0]), atol=1e-12)


def test_nfe_at_defaults():
    x0 = images(3)
    den = MODEL.denoiser(["", "", ""], 1.0)
    method = FixedPoint()
    grid = MODEL.grid(method.num_steps)
    inv = invert(method, den, x0, grid)
    assert inv.nfe.tolist() == [120] * 3  # 20 × (1 + 5)
    reconstruct(den, inv.z_T, grid)
    assert den.nfe.tolist() == [140] * 3


@pytest.mark.parametrize("acceleration", ["none", "empirical", "anderson"])
def test_enough_iterations_reach_discrete_consistency(acceleration):
    model = GaussianModel(0.1, 0.5, resolution=8)
    x0 = images(2, seed=2)
    grid = model.grid(20)

    def round_trip(method) -> float:
        den = model.denoiser(["", ""], 1.0)
        rec = reconstruct(den, invert(method, den, x0, grid).z_T, grid)[-1]
        return float((rec - x0).norm() / x0.norm())

    assert round_trip(FixedPoint(iters=30, acceleration=acceleration)) <= 1e-4 < round_trip(DDIM(num_steps=20))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"iters": -1}, "iters"),
        ({"iters": 2.5}, "iters"),
        ({"acceleration": "broyden"}, "acceleration"),
        ({"m": 0}, "m"),
        ({"ridge": 0.0}, "ridge"),
        ({"tol": -1.0}, "tol"),
        ({"num_steps": 0}, "num_steps"),
    ],
)
def test_invalid_values_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=rf"^method\.{key} "):
        FixedPoint(**kwargs)
