"""EasyInv: the blend window, the mix, Eq. 16-17 by hand, the released vs algorithm placement, and degenerate η."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import torch
from helpers import ConstantEps
from torch import Tensor

from baselines.ddim import DDIM
from baselines.fixed_point import FixedPoint
from easyinv.blend import Blend
from easyinv.inversion import Denoiser, Grid, StepContext, ddim_step, invert, reconstruct
from easyinv.method import EasyInv
from easyinv.models.gaussian import GaussianModel


class LinearEps(Denoiser):
    """ε(z, t) = 0.3·z + 0.001·t, recording every latent it is queried on."""

    def __init__(self, batch_size: int):
        super().__init__(batch_size)
        self.queries: list[Tensor] = []

    def predict(self, z: Tensor, t: int, rows: Tensor) -> tuple[Tensor, int]:
        self.queries.append(z.clone())
        return 0.3 * z + 0.001 * t, 1


@dataclass(frozen=True)
class RecordingDDIM(DDIM):
    """DDIM that records, per step, whether its update base z differs from the query latent."""

    log: list = field(default_factory=list, compare=False)

    def step(self, eps: Denoiser, z: Tensor, i: int, grid: Grid, ctx: StepContext) -> Tensor:
        self.log.append((i, not torch.equal(z, ctx.z_query)))
        return super().step(eps, z, i, grid, ctx)


SD_GRID = GaussianModel().grid(50)


# ---- window -------------------------------------------------------------------------------------------------------


def test_window_at_the_sd_and_sdxl_defaults():
    assert sorted(Blend(0.5, (0.05, 0.25)).iterations(50)) == list(range(3, 13))
    assert sorted(Blend(0.5, (0.05, 0.25), k=2).iterations(50)) == [3, 5, 7, 9, 11]
    assert sorted(Blend(0.8, (0.85, 0.95)).iterations(50)) == [43, 44, 45, 46, 47]
    assert sorted(Blend(0.8, (0.85, 0.95)).iterations(20)) == [18]  # the SD-XL code as run (T = 20)
    assert sorted(Blend(0.5, (0.05, 0.25)).iterations(20)) == [2, 3, 4]  # 1.0 < i < 5.0: both ends open
    assert sorted(Blend(0.5, (0.0, 0.1)).iterations(50)) == [1, 2, 3, 4]  # i > 0 always
    assert sorted(Blend(0.5, steps=[7, 2]).iterations(50)) == [2, 7]


@pytest.mark.parametrize(("inject_steps", "inject_len"), [(0.05, 0.2), (0.85, 0.1), (0.1, 0.3), (0.33, 0.34)])
def test_window_equals_the_released_condition_for_every_step_count(inject_steps, inject_len):
    blend = Blend(0.5, (inject_steps, inject_steps + inject_len))
    for n in range(1, 201):
        released = [i for i in range(n) if (inject_steps + inject_len) * n > i > inject_steps * n and i > 0]
        assert list(blend.window(n)) == released, n


def test_empty_selection_is_an_error_at_walk_time():
    with pytest.raises(ValueError, match=r"method.blend.interval .* selects no iteration at T=5"):
        Blend(0.8, (0.85, 0.95)).iterations(5)
    with pytest.raises(ValueError, match=r"method.interval"):
        EasyInv(interval=(0.85, 0.95), num_steps=5).blend.iterations(5)
    with pytest.raises(ValueError, match=r"method.blend.steps must be in \[1, 9\]"):
        Blend(0.5, steps=[3, 10]).iterations(10)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"eta": 1.5}, "eta"),
        ({"eta": -0.1}, "eta"),
        ({"interval": (0.3, 0.2)}, "interval"),
        ({"interval": (0.2, 0.2)}, "interval"),
        ({"interval": (-0.1, 0.2)}, "interval"),
        ({"interval": (0.1, 1.2)}, "interval"),
        ({"interval": (0.1, 0.2, 0.3)}, "interval"),
        ({"k": 0}, "k"),
        ({"k": 1.5}, "k"),
        ({"variant": "paper"}, "variant"),
        ({"steps": [0, 3]}, "steps"),
        ({"steps": []}, "steps"),
        ({"steps": [2, 2]}, "steps"),
    ],
)
def test_invalid_values_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=rf"^method\.blend\.{key} "):
        Blend(**kwargs)
    with pytest.raises(ValueError, match=rf"^method\.{key} "):
        EasyInv(**kwargs)


def test_mix_by_hand_and_list_inputs():
    blend = Blend(eta=0.25, interval=[0.1, 0.5])  # Hydra hands lists over
    assert blend.interval == (0.1, 0.5)
    assert torch.equal(blend.mix(torch.tensor([4.0]), torch.tensor([8.0])), torch.tensor([7.0]))


# ---- Eq. 16-17 by hand ------------------------------------------------------------------------------------------


def test_three_step_example_by_hand():
    # ᾱ 1 → 0.64 → 0.36 → 0.16, ε ≡ 0, z_0 = 1: DDIM multiplies by a = √(ᾱ_t/ᾱ_s) = 0.8, 0.75, 2/3 → z_3 = 0.4.
    grid = Grid(timesteps=(1, 2, 3), alpha_src=(1.0, 0.64, 0.36), alpha_tgt=(0.64, 0.36, 0.16))
    z0 = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    zero = ConstantEps(torch.zeros_like(z0))
    assert math.isclose(float(invert(DDIM(num_steps=3), zero, z0, grid).z_T), 0.4, rel_tol=1e-12)
    # released, blend at i = 1: z̄_1 = ½·0.8 + ½·1 = 0.9; z_2 = 0.75·0.9; z_3 = ⅔·0.675 = 0.45
    released = EasyInv(num_steps=3, eta=0.5, steps=[1], variant="released")
    assert math.isclose(float(invert(released, zero, z0, grid).z_T), 0.45, rel_tol=1e-12)
    # algorithm, blend at i = 1: y_2 = ½·(0.75·0.8) + ½·0.8 = 0.7; y_3 = ⅔·0.7
    algorithm = EasyInv(num_steps=3, eta=0.5, steps=[1], variant="algorithm")
    assert math.isclose(float(invert(algorithm, zero, z0, grid).z_T), 0.7 * 2 / 3, rel_tol=1e-12)


def closed_form(grid: Grid, blended: set[int], eta: float, variant: str) -> list[tuple[float, float]]:
    """(A_i, B_i) with z_i = A_i z_0 + B_i c for a constant ε = c (EasyInv Eq. 12-17, scalar coefficients).

    Eq. 12: z_{i+1} = a_i z_i + b_i c with a_i = √(ᾱ_t/ᾱ_s), b_i = √(1−ᾱ_t) − √(ᾱ_t(1−ᾱ_s)/ᾱ_s) (algorithms.md §1.1).
    """
    coeffs = [(1.0, 0.0)]
    prev_in = (1.0, 0.0)
    for i, (a_s, a_t) in enumerate(zip(grid.alpha_src, grid.alpha_tgt, strict=True)):
        a = math.sqrt(a_t / a_s)
        b = math.sqrt(1 - a_t) - math.sqrt(a_t * (1 - a_s) / a_s)
        A, B = coeffs[-1]  # noqa: N806
        if variant == "released" and i in blended:  # Eq. 16 on the step input, with the previous (blended) input
            A, B = eta * A + (1 - eta) * prev_in[0], eta * B + (1 - eta) * prev_in[1]  # noqa: N806
        prev_in = (A, B)
        A2, B2 = a * A + 0.0, a * B + b  # noqa: N806
        if variant == "algorithm" and i in blended:  # Alg. 1: blend the output with the input
            A2, B2 = eta * A2 + (1 - eta) * A, eta * B2 + (1 - eta) * B  # noqa: N806
        coeffs.append((A2, B2))
    return coeffs


@pytest.mark.parametrize("variant", ["released", "algorithm"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 0.8])
def test_constant_eps_trajectory_equals_the_closed_form(variant, eta):
    gen = torch.Generator().manual_seed(0)
    z0 = torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64)
    c = torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64)
    method = EasyInv(eta=eta, variant=variant)
    inv = invert(method, ConstantEps(c), z0, SD_GRID)
    coeffs = closed_form(SD_GRID, set(range(3, 13)), eta, variant)
    for z, (A, B) in zip(inv.trajectory, coeffs, strict=True):  # noqa: N806
        assert torch.allclose(z, A * z0 + B * c, rtol=0, atol=1e-10)
    ddim = closed_form(SD_GRID, set(), 1.0, variant)
    if eta < 1:  # Eq. 17: the blend raises the weight of z_0 in z_T
        assert coeffs[-1][0] > ddim[-1][0]


# ---- released vs algorithm (algorithms.md §2.2) ---------------------------------------------------------------


def reference_walk(z0: Tensor, grid: Grid, eta: float, window: set[int], variant: str) -> tuple[list, list]:
    """The two pseudo-codes of algorithms.md §2.2 (A) and (B), literally, with ε(z, t) = 0.3·z + 0.001·t."""
    queries, z, prev_in = [], z0, None
    trajectory = [z0]
    for i, t in enumerate(grid.timesteps):
        queries.append(z)
        e = 0.3 * z + 0.001 * t
        if variant == "released":
            x = eta * z + (1 - eta) * prev_in if i in window else z
            prev_in = x
            z = ddim_step(x, e, grid.alpha_src[i], grid.alpha_tgt[i])
        else:
            y = ddim_step(z, e, grid.alpha_src[i], grid.alpha_tgt[i])
            z = eta * y + (1 - eta) * z if i in window else y
        trajectory.append(z)
    return queries, trajectory


@pytest.mark.parametrize("variant", ["released", "algorithm"])
def test_placement_matches_the_pseudo_code_and_differs_between_variants(variant):
    z0 = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    den = LinearEps(1)
    method = RecordingDDIM(blend=Blend(0.5, (0.05, 0.25), variant=variant))
    inv = invert(method, den, z0, SD_GRID)
    queries, trajectory = reference_walk(z0, SD_GRID, 0.5, set(range(3, 13)), variant)
    for got, want in zip(den.queries, queries, strict=True):
        assert torch.allclose(got, want, rtol=0, atol=1e-12)
    for got, want in zip(inv.trajectory, trajectory, strict=True):
        assert torch.allclose(got, want, rtol=0, atol=1e-12)
    # released predicts on the unblended latent and updates from the blended one exactly at 3..12
    differs = {i for i, d in method.log if d}
    assert differs == (set(range(3, 13)) if variant == "released" else set())
    other = "algorithm" if variant == "released" else "released"
    assert not torch.allclose(inv.z_T, reference_walk(z0, SD_GRID, 0.5, set(range(3, 13)), other)[1][-1])


def test_window_shift_between_variants():
    # Same window 3..12: released changes the latent entering iteration 3 (z_3 is blended, z_4 is the first
    # trajectory entry that moves); algorithm keeps z_3 and z_4 = blend(Inv(z_3), z_3). With ε ≡ 0 and η = 0, the
    # algorithm variant freezes z from z_3 on through z_13; released freezes the inputs at z̄ = z_2 for 3..12.
    z0 = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    zero = ConstantEps(torch.zeros_like(z0))
    alg = invert(EasyInv(eta=0.0, variant="algorithm"), zero, z0, SD_GRID).trajectory
    rel = invert(EasyInv(eta=0.0, variant="released"), zero, z0, SD_GRID).trajectory
    assert all(torch.equal(alg[k], alg[3]) for k in range(4, 14)) and not torch.equal(alg[14], alg[3])
    a = [math.sqrt(t / s) for s, t in zip(SD_GRID.alpha_src, SD_GRID.alpha_tgt, strict=True)]
    for k in range(4, 14):  # z_{k} = a_{k-1} · z̄_{k-1} with z̄_{k-1} = z̄_2 = z_2
        assert math.isclose(float(rel[k]), a[k - 1] * float(rel[2]), rel_tol=1e-12)


# ---- degenerate settings and the Gaussian model ----------------------------------------------------------------


@pytest.mark.parametrize("variant", ["released", "algorithm"])
def test_eta_one_equals_ddim_and_eta_zero_differs(variant):
    model = GaussianModel(0.1, 0.5, resolution=16, error=0.05)
    x0 = (0.5 * torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))).clamp(-1, 1)
    grid = model.grid(50)

    def run(method):
        den = model.denoiser(["", ""], 1.0)
        z_T = invert(method, den, x0, grid).z_T  # noqa: N806
        return z_T, den.nfe.tolist(), float((reconstruct(den, z_T, grid)[-1] - x0).norm() / x0.norm())

    ddim_z, ddim_nfe, ddim_err = run(DDIM())
    one_z, one_nfe, _ = run(EasyInv(eta=1.0, variant=variant))
    assert torch.equal(one_z, ddim_z) and one_nfe == ddim_nfe == [50, 50]
    errors = [run(EasyInv(eta=eta, variant=variant))[2] for eta in (0.0, 0.5, 0.75)]
    # On an exact model DDIM is already close to the ODE: the blend's bias grows as η falls.
    assert errors[0] > errors[1] > errors[2] > ddim_err


def test_blend_composes_with_other_methods():
    model = GaussianModel(0.1, 0.5, resolution=8)
    x0 = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(3)) * 0.5
    grid = model.grid(50)
    blend = Blend(0.5, (0.05, 0.25))
    assert torch.equal(
        invert(DDIM(blend=blend), model.denoiser([""], 1.0), x0, grid).z_T,
        invert(EasyInv(), model.denoiser([""], 1.0), x0, grid).z_T,
    )
    den = model.denoiser([""], 1.0)
    fp = invert(FixedPoint(num_steps=50, iters=2, blend=blend), den, x0, grid)
    assert den.nfe.tolist() == [150]  # the blend costs nothing
    assert not torch.equal(fp.z_T, invert(FixedPoint(num_steps=50, iters=2), model.denoiser([""], 1.0), x0, grid).z_T)
