"""Null-text inversion: DDIM on a model that ignores the embedding (zero gradient, one Adam step per timestep); on a
conditional closed-form model its per-step loss falls below the threshold and it round-trips better than DDIM at
w = 7.5; batch = singles; through the runner on tiny SD with its NFE and backward passes."""

from __future__ import annotations

import pytest
import torch
from helpers import run_job
from torch import Tensor

from baselines.ddim import DDIM
from baselines.null_text import NullText
from easyinv.inversion import Denoiser, Denoisers, NullTextDenoiser, ddim_step, invert, invert_with, reconstruct_with
from easyinv.models.gaussian import GaussianModel
from easyinv.run.records import read_records


class ConditionalGaussian:
    """The Gaussian model with a prompt: an embedding m ``(C, H, W)`` shifts the data mean (more-methods.md §1.5),
    ε(z, t; m) = √(1−ā) (z − √ā (μ + m)) / (ā σ² + 1 − ā). The prompt's embedding is ``shift``, the null one 0."""

    def __init__(self, model: GaussianModel, shift: Tensor):
        self.model, self.shift = model, shift

    def eps(self, z: Tensor, t: int, m: Tensor) -> Tensor:
        a = float(self.model.alphas_cumprod[int(t)])
        mu, sigma = self.model._params(z)
        return (1 - a) ** 0.5 * (z - a**0.5 * (mu + m)) / (a * sigma**2 + 1 - a)


class GuidedToy(Denoiser):
    """Plain CFG on the toy with the null embedding: what DDIM sees at guidance w."""

    def __init__(self, toy: ConditionalGaussian, batch: int, w: float):
        super().__init__(batch)
        self.toy, self.w = toy, w

    def predict(self, z: Tensor, t: int, rows: Tensor) -> tuple[Tensor, int]:
        e_c, e_u = self.toy.eps(z, t, self.toy.shift), self.toy.eps(z, t, torch.zeros_like(self.toy.shift))
        return (e_c, 1) if self.w == 1.0 else (e_u + self.w * (e_c - e_u), 2)


class NullTextToy(NullTextDenoiser):
    def __init__(self, toy: ConditionalGaussian, batch: int):
        super().__init__(batch)
        self.toy = toy

    def initial_embedding(self) -> Tensor:
        return torch.zeros(self.batch_size, *self.toy.shift.shape, dtype=torch.float32)

    def predict(self, z: Tensor, t: int, rows: Tensor) -> tuple[Tensor, int]:
        return self.toy.eps(z, t, self.toy.shift), 1

    def _uncond(self, z: Tensor, t: int, u: Tensor, rows: Tensor) -> Tensor:
        return self.toy.eps(z, t, u.to(z.dtype))

    def _both(self, z: Tensor, t: int, u: Tensor) -> tuple[Tensor, Tensor]:
        return self.toy.eps(z, t, self.toy.shift), self.toy.eps(z, t, u.to(z.dtype))


def _latents(n: int, size: int = 8) -> Tensor:
    gen = torch.Generator().manual_seed(0)
    return 0.1 + 0.5 * torch.randn(n, 3, size, size, generator=gen)


def _run(method, den: Denoisers, z0: Tensor, grid):
    inversion = invert_with(method, den, z0, grid, list(range(z0.shape[0])))
    den.phase = "reconstruct"
    return inversion, reconstruct_with(method, den, inversion, grid)


def test_on_a_model_that_ignores_the_embedding_nti_is_ddim():
    model = GaussianModel(0.1, 0.5, error=0.05, resolution=8)
    z0 = _latents(2)
    grid = model.grid(10)

    def den(w_inv: float = 1.0, w_rec: float = 1.0) -> Denoisers:
        return Denoisers(lambda w, negative: model.denoiser([""] * 2, w), [""] * 2,
                         {"invert": w_inv, "reconstruct": w_rec}, null_text=lambda: model.null_text_denoiser([""] * 2))

    nti_den, ddim_den = den(), den()
    nti, nti_rec = _run(NullText(num_steps=10), nti_den, z0, grid)
    ddim, ddim_rec = _run(DDIM(num_steps=10), ddim_den, z0, grid)
    assert torch.equal(nti.z_T, ddim.z_T) and torch.equal(nti_rec, ddim_rec)
    assert nti.backward_passes.tolist() == [10, 10]  # one Adam step per timestep: the gradient is exactly zero
    assert torch.count_nonzero(nti.state["null_embeddings"]) == 0
    # NFE: 10 pivots + 10 × (1 + 1 + 2) in inversion, 10 × 2 in reconstruction
    assert nti_den.nfe("invert").tolist() == [50, 50] and nti_den.nfe("reconstruct").tolist() == [20, 20]


def _toy_setup(batch: int):
    model = GaussianModel(0.1, 0.5, resolution=8, net_dtype=torch.float64, latent_dtype=torch.float64)
    shift = 0.3 * torch.sin(torch.arange(3 * 8 * 8, dtype=torch.float64)).view(3, 8, 8)
    toy = ConditionalGaussian(model, shift)
    return model, toy


def _toy_den(toy: ConditionalGaussian, batch: int, w: float) -> Denoisers:
    return Denoisers(lambda g, negative: GuidedToy(toy, batch, g), [""] * batch, {"invert": w, "reconstruct": w},
                     null_text=lambda: NullTextToy(toy, batch))


def test_on_a_conditional_model_nti_meets_its_threshold_and_beats_ddim_at_high_guidance():
    model, toy = _toy_setup(2)
    z0 = _latents(2).double()
    grid = model.grid(20)
    nti, nti_rec = _run(NullText(num_steps=20, guidance=7.5), _toy_den(toy, 2, 7.5), z0, grid)
    _, ddim_rec = _run(DDIM(num_steps=20), _toy_den(toy, 2, 7.5), z0, grid)
    err_nti = float((nti_rec - z0).norm() / z0.norm())
    err_ddim = float((ddim_rec - z0).norm() / z0.norm())
    assert err_nti < 0.5 * err_ddim, (err_nti, err_ddim)
    assert int(nti.backward_passes.max()) < 20 * 10  # some timesteps stopped early: the loss met the threshold
    assert torch.count_nonzero(nti.state["null_embeddings"]) > 0  # the embedding moved


def test_nti_batch_equals_single_runs():
    model, toy = _toy_setup(3)
    z0 = _latents(3).double()
    grid = model.grid(8)
    method = NullText(num_steps=8)
    batch, batch_rec = _run(method, _toy_den(toy, 3, 7.5), z0, grid)
    for b in range(3):
        one, one_rec = _run(method, _toy_den(toy, 1, 7.5), z0[b : b + 1], grid)
        assert torch.allclose(one_rec, batch_rec[b : b + 1], atol=1e-10, rtol=0)
        assert one.backward_passes.tolist() == batch.backward_passes[b : b + 1].tolist()
        assert torch.allclose(one.state["null_embeddings"], batch.state["null_embeddings"][b : b + 1], atol=1e-6)


def _official_loop_steps(toy: ConditionalGaussian, z0: Tensor, grid, w: float, inner: int, lr: float,
                         epsilon: float) -> int:
    """Adam steps of prompt-to-prompt's ``NullInversion.null_optimization``, written out for one image: per step i
    a fresh Adam at lr·(1 − i/100), at most ``inner`` updates, each followed by the test loss < epsilon + 2e-5·i."""
    pivots = invert(DDIM(num_steps=grid.T), GuidedToy(toy, 1, 1.0), z0, grid, [0]).trajectory
    null = torch.zeros(1, *toy.shift.shape, dtype=torch.float32)
    z_bar, total = pivots[-1], 0
    for i in range(grid.T):
        k = grid.T - 1 - i
        t, a_hi, a_lo = grid.timesteps[k], grid.alpha_tgt[k], grid.alpha_src[k]
        null = null.clone().detach().requires_grad_(True)
        optimizer = torch.optim.Adam([null], lr=lr * (1.0 - i / 100.0))
        with torch.no_grad():
            e_c = toy.eps(z_bar, t, toy.shift)
        for _ in range(inner):
            e_u = toy.eps(z_bar, t, null.to(z_bar.dtype))
            latent_prev = ddim_step(z_bar, e_u + w * (e_c - e_u), a_hi, a_lo)
            loss = torch.nn.functional.mse_loss(latent_prev.float(), pivots[k].float())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += 1
            if loss.item() < epsilon + 2e-5 * i:
                break
        null = null.detach()
        with torch.no_grad():
            e_u = toy.eps(z_bar, t, null.to(z_bar.dtype))
            z_bar = ddim_step(z_bar, e_u + w * (e_c - e_u), a_hi, a_lo)
    return total


@pytest.mark.parametrize("early_stop", [1e-4, 1e-3])
def test_early_stop_follows_the_official_rule_at_a_non_default_epsilon(early_stop):
    """loss < ε + 2e-5·i, not ε + 2ε·i: the two agree only at the default ε = 1e-5."""
    model, toy = _toy_setup(1)
    z0 = _latents(1).double()
    grid = model.grid(20)
    official = _official_loop_steps(toy, z0, grid, 7.5, 10, 0.01, early_stop)
    ours, _ = _run(NullText(num_steps=20, early_stop=early_stop), _toy_den(toy, 1, 7.5), z0, grid)
    assert int(ours.backward_passes) == official
    scaled, _ = _run(NullText(num_steps=20, early_stop=early_stop, early_stop_slope=2 * early_stop),
                     _toy_den(toy, 1, 7.5), z0, grid)
    assert int(scaled.backward_passes) != official  # the old rule (slope 2ε) stops elsewhere: the test can tell


def test_invalid_null_text_settings_are_rejected():
    with pytest.raises(ValueError, match="method.guidance"):
        NullText(guidance=1.0)
    with pytest.raises(ValueError, match="method.inner_steps"):
        NullText(inner_steps=0)
    with pytest.raises(ValueError, match="method.early_stop_slope"):
        NullText(early_stop_slope=-1e-5)


@pytest.mark.parametrize("model", ["tiny-sd", "tiny-sdxl"])
def test_nti_runs_through_the_runner(model, tmp_path, tiny_model_cache):
    df = read_records(run_job(tmp_path, f"model={model}", f"paths.cache={tiny_model_cache}", "method=null_text",
                              "method.num_steps=3", "method.inner_steps=2", "dataset.limit=2",
                              "guidance.invert=1.0", "guidance.reconstruct=1.0"))
    assert set(df.status) == {"ok"}
    n = df.backward_passes
    assert ((n >= 3) & (n <= 6)).all()  # 1 … 2 Adam steps at each of 3 timesteps
    assert (df.nfe_invert == 3 + 3 * 3 + n).all() and (df.nfe_reconstruct == 6).all()
    embedding = df.state_bytes - 4 * 8 * 8 * 4
    assert (embedding > 0).all() and (embedding % 3 == 0).all()  # T stored embeddings per image
