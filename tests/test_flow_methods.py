"""The flow inversion methods (issue 21): RF-Solver and FireFlow (one midpoint solver), Uni-Inv, RF-Inversion.

On the closed-form Gaussian flow model (float64; flow-matching.md §5) their convergence orders against the exact
flow map Φ, RF-Inversion's exact endpoints and its reduction to Euler; NFE per step; the blend's meaning in the
methods' own walks; the core's network time of an off-grid level; and on the tiny SD3 / FLUX transformers
batch = singles and the runner (or a one-line refusal on the VP path)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import run_job

from baselines.ddim import DDIM
from baselines.midpoint import Midpoint, midpoint_level, midpoint_step
from baselines.rf_inversion import RFInversion, eta_schedule, seeded_noise
from baselines.uni_inv import UniInv
from easyinv.blend import Blend
from easyinv.inversion import (
    Denoisers,
    Grid,
    Level,
    StepContext,
    ddim_step,
    invert,
    invert_with,
    reconstruct_with,
)
from easyinv.models.gaussian import sd1_alphas_cumprod
from easyinv.models.gaussian_flow import GaussianFlowModel, flow_sigmas
from easyinv.registry import make_method
from easyinv.run.records import read_records
from easyinv.validation import ConfigError

# --------------------------------------------------------------------------------------------------------------------
# The closed-form model (as tests/test_flow_core.py builds it)
# --------------------------------------------------------------------------------------------------------------------


def _model(shift: float = 1.0) -> GaussianFlowModel:
    gen = torch.Generator().manual_seed(4)
    mu = (torch.rand(3, 4, 4, generator=gen, dtype=torch.float64) - 0.5) * 1.6
    s = 0.05 + 0.85 * torch.rand(3, 4, 4, generator=gen, dtype=torch.float64)
    return GaussianFlowModel(mu, s, resolution=4, net_dtype=torch.float64, latent_dtype=torch.float64, shift=shift)


def _data(model: GaussianFlowModel, n: int = 16) -> torch.Tensor:
    gen = torch.Generator().manual_seed(5)
    return model.mu + model.sigma * torch.randn(n, 3, 4, 4, generator=gen, dtype=torch.float64)


def _denoisers(model, n: int) -> Denoisers:
    prompts = [""] * n
    return Denoisers(lambda w, negative: model.denoiser(prompts, w), prompts, {"invert": 1.0, "reconstruct": 1.0})


def _run(model, method, z0: torch.Tensor, steps: int, seeds=None):
    """(inversion, reconstruction, denoisers) of ``method`` over the model's T-step grid."""
    grid = model.grid(steps)
    den = _denoisers(model, z0.shape[0])
    inversion = invert_with(method, den, z0, grid, seeds or list(range(z0.shape[0])))
    den.phase = "reconstruct"
    return inversion, reconstruct_with(method, den, inversion, grid), den


def _errors(model, method_at, z0: torch.Tensor, steps) -> np.ndarray:
    """Per T: max |round trip − z_0| and max |z_T − Φ_{0→1}(z_0)|."""
    out = []
    for n in steps:
        inversion, rec, _ = _run(model, method_at(n), z0, n)
        exact = model.exact_invert(z0, model.grid(n))
        out.append(((rec - z0).abs().max().item(), (inversion.z_T - exact).abs().max().item()))
    return np.array(out)


def _slope(steps, errors) -> float:
    return float(np.polyfit(np.log(steps), np.log(errors), 1)[0])


SCHEMES = {  # name → method at T
    "euler": lambda n: DDIM(num_steps=n, time="source"),
    "uni_inv": lambda n: UniInv(num_steps=n),
    "rf_solver": lambda n: Midpoint(num_steps=n),
    "fireflow": lambda n: Midpoint(num_steps=n, reuse=True),
}
STEPS = (16, 32, 64, 128, 256)
# slopes of log error vs log T over STEPS (measured: round trip / z_T vs Φ): Euler −0.97 / −0.95, Uni-Inv −2.10 /
# −0.68 (pre-asymptotic; −0.96 over 128…512), RF-Solver −3.00 / −3.01, FireFlow −2.52 / −1.94
SLOPES = {
    "euler": ((-1.15, -0.85), (-1.15, -0.85)),
    "uni_inv": ((-2.4, -1.8), (-1.15, -0.5)),
    "rf_solver": ((-3.3, -1.9), (-3.3, -2.7)),
    "fireflow": ((-3.3, -1.9), (-2.3, -1.7)),
}


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_convergence_slopes_on_the_closed_form_model(scheme):
    model = _model()
    errors = _errors(model, SCHEMES[scheme], _data(model), STEPS)
    for column, (lo, hi) in enumerate(SLOPES[scheme]):
        slope = _slope(STEPS, errors[:, column])
        assert lo < slope < hi, (scheme, ("round trip", "z_T vs Φ")[column], slope, errors[:, column])


def test_asymptotic_slopes_match_the_spec_table():
    """flow-matching.md §5 over T = 128…512: Uni-Inv −2.1 / −1.0, RF-Solver −3.0 / −3.0, FireFlow −2.95 / −2.07."""
    model, steps = _model(), (128, 256, 512)
    z0 = _data(model)
    expected = {"uni_inv": (-2.1, -1.0), "rf_solver": (-3.0, -3.0), "fireflow": (-2.95, -2.07)}
    for scheme, (rt, zt) in expected.items():
        errors = _errors(model, SCHEMES[scheme], z0, steps)
        assert _slope(steps, errors[:, 0]) == pytest.approx(rt, abs=0.1), scheme
        assert _slope(steps, errors[:, 1]) == pytest.approx(zt, abs=0.1), scheme


def test_the_second_order_schemes_beat_euler_on_the_shifted_grid():
    """SD3's shift-3 grid at T = 28: every new scheme's round trip is at least 3× better than source-time Euler's."""
    model = _model(shift=3.0)
    z0 = _data(model)
    euler = _errors(model, SCHEMES["euler"], z0, (28,))[0, 0]
    for scheme in ("uni_inv", "rf_solver", "fireflow"):
        assert _errors(model, SCHEMES[scheme], z0, (28,))[0, 0] < euler / 3, scheme


def test_rf_solvers_taylor_form_is_the_midpoint_rule():
    """The paper's update z + h·v₀ + ½h²·(v_m − v₀)/(h/2) equals :func:`midpoint_step` (to rounding)."""
    model = _model()
    z = _data(model, 4)
    grid = Grid.from_sigmas([0.0, 0.3, 0.7, 1.0], [0.0, 0.3, 0.7, 1.0])
    den = model.denoiser([""] * 4, 1.0)
    a, b = grid.alpha_src[1], grid.alpha_tgt[1]
    got, v_mid = midpoint_step(den, z, a, b, grid)
    h = b.sigma - a.sigma
    v0 = model.network(z, a.sigma)
    v_m = model.network(z + h / 2 * v0, a.sigma + h / 2)
    taylor = z + h * v0 + 0.5 * h**2 * (v_m - v0) / (h / 2)
    assert torch.allclose(got, taylor, atol=1e-14, rtol=0) and torch.allclose(v_mid, v_m, atol=1e-14, rtol=0)
    assert den.nfe.tolist() == [2] * 4
    den.reset_counters()
    _, again = midpoint_step(den, z, a, b, grid, v_start=v0)  # a carried start velocity costs one NFE
    assert den.nfe.tolist() == [1] * 4 and torch.equal(again, v_mid)
    assert midpoint_level(b, a).sigma == midpoint_level(a, b).sigma == 0.5


# --------------------------------------------------------------------------------------------------------------------
# RF-Inversion
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_rf_inversion_gamma_one_lands_on_its_noise_and_eta_one_on_the_source(shift):
    model, T, seeds = _model(shift), 28, [11, 12, 13, 14]  # noqa: N806
    z0 = _data(model, 4)
    method = RFInversion(num_steps=T, gamma=1.0, eta=1.0, start=0.0, stop=1.0)
    inversion, rec, _ = _run(model, method, z0, T, seeds)
    y1 = seeded_noise(z0, tuple(seeds))
    assert float((inversion.z_T - y1).abs().max()) <= 1e-12
    assert float((rec - z0).abs().max()) <= 1e-12
    # from any start, not only from y1: the reverse control alone brings it home
    grid, den = model.grid(T), _denoisers(model, 4)
    den.phase = "reconstruct"
    elsewhere = type(inversion)(z_T=torch.randn_like(z0), trajectory=[], nfe=inversion.nfe, state=inversion.state)
    assert float((method.reconstruct(den, elsewhere, grid, None) - z0).abs().max()) <= 1e-12
    assert inversion.state_bytes() == 2 * z0[0].nelement() * z0.element_size()  # z_T and the source y0


def test_rf_inversion_with_no_control_is_source_time_euler_bit_for_bit():
    model, T = _model(shift=3.0), 16  # noqa: N806
    z0 = _data(model, 4)
    inversion, rec, _ = _run(model, RFInversion(num_steps=T, gamma=0.0, eta=0.0), z0, T)
    euler, euler_rec, _ = _run(model, make_method("euler", num_steps=T, time="source"), z0, T)
    assert torch.equal(inversion.z_T, euler.z_T) and torch.equal(rec, euler_rec)
    assert inversion.state == {}  # no η anywhere: the source latent is not kept
    # the default window uses η, and only the first int(0.25·T) sampling steps
    assert eta_schedule(28, 0.9, 0.0, 0.25) == (0.9,) * 7 + (0.0,) * 21


def _community_invert(network, z0: torch.Tensor, y1: torch.Tensor, sigmas: torch.Tensor, gamma: float):
    """The forward ODE loop of diffusers' community ``FluxRFInversionPipeline.invert``, transcribed: ``sigmas`` is
    the scheduler's descending float32 list with its final 0 (N = T + 1 entries), time runs up as i/N."""
    n = len(sigmas)
    y = z0
    for i in range(n - 1):
        t_i = torch.tensor(i / n, dtype=y.dtype)
        u = network(y, float(t_i))
        u_cond = (y1 - y) / (1 - t_i)
        u_hat = u + gamma * (u_cond - u)
        y = y + u_hat * (sigmas[i] - sigmas[i + 1])
    return y


@pytest.mark.parametrize("shift", [1.0, math.exp(0.63), 3.0])
def test_rf_inversion_community_convention_is_the_community_loop_on_a_shifted_grid(shift):
    model, T, seeds = _model(shift=shift), 28, [3, 4]  # noqa: N806
    z0 = _data(model, 2)
    method = RFInversion(num_steps=T, gamma=0.5, time_convention="diffusers_community")
    inversion, _, _ = _run(model, method, z0, T, seeds)
    levels, _ = model.grid(T).levels()
    sigmas = torch.tensor([lv.sigma for lv in reversed(levels)], dtype=torch.float32)  # σ_T … σ_0 = 0
    reference = _community_invert(model.network, z0, seeded_noise(z0, tuple(seeds)), sigmas, 0.5)
    assert torch.equal(inversion.z_T, reference), float((inversion.z_T - reference).abs().max())
    if shift != 1.0:  # the ascending gaps of a shifted grid are not the loop's: the old walk missed it by far
        ascending = z0
        for i in range(T):
            t = i / (T + 1)
            u = model.network(ascending, t)
            h = levels[i + 1].sigma - levels[i].sigma
            ascending = ascending + h * (u + 0.5 * ((seeded_noise(z0, tuple(seeds)) - ascending) / (1 - t) - u))
        assert float((ascending - reference).abs().max()) > 1e-3


def test_rf_inversion_community_time_feeding_misses_its_noise():
    model, T, seeds = _model(shift=3.0), 28, [3, 4]  # noqa: N806
    z0 = _data(model, 2)
    community = RFInversion(num_steps=T, gamma=1.0, time_convention="diffusers_community")
    inversion, _, _ = _run(model, community, z0, T, seeds)
    miss = float((inversion.z_T - seeded_noise(z0, tuple(seeds))).abs().max())
    assert miss > 1e-3, miss
    with pytest.raises(ValueError, match="time_convention"):
        RFInversion(time_convention="t")


def test_rf_inversion_noise_depends_on_the_image_seed_only():
    z = torch.zeros(3, 2, 4, 4)
    batch = seeded_noise(z, (5, 6, 7))
    assert torch.equal(batch[1:2], seeded_noise(z[:1], (6,))) and not torch.equal(batch[0], batch[1])


# --------------------------------------------------------------------------------------------------------------------
# NFE
# --------------------------------------------------------------------------------------------------------------------

# per image at T = 28, guidance 1 (inversion, reconstruction): the flow table of docs/models.md
DOCS_NFE = {"euler": (28, 28), "rf_solver": (56, 56), "fireflow": (29, 29), "uni_inv": (29, 28),
              "rf_inversion": (28, 28)}


@pytest.mark.parametrize("name", sorted(DOCS_NFE))
def test_nfe_per_image_is_the_docs_table(name):
    model = _model()
    z0 = _data(model, 2)
    _, _, den = _run(model, make_method(name, num_steps=28), z0, 28)
    assert (den.nfe("invert").tolist(), den.nfe("reconstruct").tolist()) == tuple([n] * 2 for n in DOCS_NFE[name])


def test_the_docs_tables_say_these_counts():
    """The flow table of docs/models.md ends each method's row with its NFE at T = 28; the NFE-at-defaults table of
    docs/methods.md has the counts of the YAML defaults (built from the configs, as the runner builds them)."""
    import re
    from pathlib import Path

    from helpers import make_cfg

    from easyinv.run.job_parts import build

    docs = Path(__file__).resolve().parents[1] / "docs"
    models, methods = ((docs / f"{page}.md").read_text(encoding="utf-8") for page in ("models", "methods"))
    for name, (inv, rec) in DOCS_NFE.items():
        row = re.search(rf"^\| `{name}` \(.*\| {inv} \+ {rec} \|$", models, flags=re.MULTILINE)
        assert row, name
    at_defaults = {"rf_solver": ("RF-Solver, T = 15", 30, 30), "fireflow": ("FireFlow, T = 8", 9, 9),
                   "uni_inv": ("Uni-Inv, T = 15", 16, 15), "rf_inversion": ("RF-Inversion, T = 28", 28, 28)}
    model = _model()
    for name, (label, inv, rec) in at_defaults.items():
        assert re.search(rf"^\| {re.escape(label)} \(flow\) \| {inv} \| {rec} \| \*\*{inv + rec}\*\*",
                         methods, flags=re.MULTILINE), name
        method = build(make_cfg(Path("/nonexistent"), "model=gaussian_flow", f"method={name}").method)
        _, _, den = _run(model, method, _data(model, 1), method.num_steps)
        assert (den.nfe("invert").item(), den.nfe("reconstruct").item()) == (inv, rec), name


@pytest.mark.parametrize("T", [1, 2, 5])
def test_fireflow_spends_one_nfe_per_step_after_the_first_and_rf_solver_two(T):  # noqa: N803
    model = _model()
    z0 = _data(model, 2)
    for reuse, per_direction in ((True, T + 1), (False, 2 * T)):
        _, _, den = _run(model, Midpoint(num_steps=T, reuse=reuse), z0, T)
        assert den.nfe("invert").tolist() == den.nfe("reconstruct").tolist() == [per_direction] * 2, reuse


# --------------------------------------------------------------------------------------------------------------------
# The blend in the methods' own walks, and the shared walk unchanged
# --------------------------------------------------------------------------------------------------------------------


def _old_shared_walk(method, eps, z0, grid):
    """The shared walk's blend loop as it was before :class:`BlendWalk` was factored out of it (its z_T)."""
    blend = method.blend
    blended = blend.iterations(grid.T)
    z, prev_in = z0, None
    for i in range(grid.T):
        z_in = z
        if i in blended and blend.variant == "released":
            z_in = blend.mix(z, prev_in)
        z_next = method.step(eps, z_in, i, grid, StepContext(z_query=z, z0=z0, seeds=(0,) * z0.shape[0]))
        if i in blended and blend.variant == "algorithm":
            z_next = blend.mix(z_next, z)
        prev_in, z = z_in, z_next
    return z


@pytest.mark.parametrize("variant", ["released", "algorithm"])
def test_the_shared_walk_blends_as_before_and_own_walks_blend_the_same_way(variant):
    model, T = _model(shift=3.0), 12  # noqa: N806
    z0 = _data(model, 3)
    blend = Blend(eta=0.6, interval=(0.1, 0.7), variant=variant)
    euler = DDIM(num_steps=T, time="source", blend=blend)
    grid = model.grid(T)
    shared = invert(euler, model.denoiser([""] * 3, 1.0), z0, grid)
    assert torch.equal(shared.z_T, _old_shared_walk(euler, model.denoiser([""] * 3, 1.0), z0, grid))
    own, _, _ = _run(model, RFInversion(num_steps=T, gamma=0.0, eta=0.0, blend=blend), z0, T)
    assert torch.equal(own.z_T, shared.z_T)  # RF-Inversion without control = Euler, blended the same way
    for method in (Midpoint(num_steps=T, blend=blend), Midpoint(num_steps=T, reuse=True, blend=blend),
                   UniInv(num_steps=T, blend=blend)):
        blended, _, den = _run(model, method, z0, T)
        plain, _, plain_den = _run(model, type(method)(**{**vars(method), "blend": None}), z0, T)
        assert not torch.equal(blended.z_T, plain.z_T)  # the blend acts ...
        assert torch.equal(den.nfe("invert"), plain_den.nfe("invert"))  # ... at no NFE


# --------------------------------------------------------------------------------------------------------------------
# The core's time of an off-grid level
# --------------------------------------------------------------------------------------------------------------------


def test_time_at_gives_the_grids_own_times_and_scales_between_them():
    sig = flow_sigmas(4, shift=3.0)
    gauss = Grid.from_sigmas(sig, sig)
    assert [gauss.time_at(s) for s in sig] == sig and gauss.time_at(0.3) == 0.3
    times = [float(torch.tensor(1000 * s, dtype=torch.float32)) for s in sig]  # as the schedulers round them
    transformer = Grid.from_sigmas(sig, times)
    assert [transformer.time_at(s) for s in sig] == times  # the grid's own time at its levels, bit for bit
    assert transformer.time_at(0.3) == pytest.approx(300.0, rel=1e-12)
    with pytest.raises(ValueError, match="flow grid"):
        Grid.from_schedule(sd1_alphas_cumprod(), 10).time_at(0.5)
    with pytest.raises(ValueError, match="constant multiple"):
        Grid.from_sigmas([0.0, 0.5, 1.0], [0.0, 0.5, 2.0]).time_at(0.25)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        gauss.time_at(1.5)


def test_the_core_step_between_off_grid_levels_is_euler():
    z, v = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randn(2, 3, 4, 4, dtype=torch.float64)
    a, b = Level.flow(0.2), midpoint_level(Level.flow(0.2), Level.flow(0.5))
    assert torch.equal(ddim_step(z, v, a, b), z + (0.35 - 0.2) * v)


def test_config_values_are_checked():
    for bad in ({"gamma": 1.5}, {"eta": -0.1}, {"start": 0.5, "stop": 0.2}):
        with pytest.raises(ValueError, match="method."):
            RFInversion(**bad)
    with pytest.raises(ValueError, match="method.reuse"):
        Midpoint(reuse="yes")
    with pytest.raises(ValueError, match="method.num_steps"):
        UniInv(num_steps=0)


# --------------------------------------------------------------------------------------------------------------------
# Tiny SD3 / FLUX transformers, and the runner
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flow_models(tiny_model_cache):
    from easyinv.models.tiny import load_tiny

    torch.set_flush_denormal(True)
    return {name: load_tiny(name, cache_dir=tiny_model_cache, resolution=64, max_sequence_length=32)
            for name in ("tiny-sd3", "tiny-flux")}


NEW = {"rf_solver": {}, "fireflow": {}, "uni_inv": {}, "rf_inversion": {},
       "rf_inversion_window": {"stop": 1.0}, "fireflow_blend": {"blend": Blend(eta=0.5, interval=(0.2, 0.8))}}


@pytest.mark.parametrize("name", ["tiny-sd3", "tiny-flux"])
def test_a_batch_of_three_equals_three_single_runs(flow_models, name):
    model = flow_models[name]
    z0 = torch.randn(3, 16, 8, 8, generator=torch.Generator().manual_seed(3))
    prompts, seeds = ["a photo of the cat", "a dog", ""], [7, 8, 9]
    grid = model.grid(4)
    assert grid.time_at(grid.alpha_tgt[1].sigma) == grid.timesteps[1] and grid._time_scale() == 1000.0

    def round_trip(method, z, ps, ss):
        den = Denoisers(lambda w, negative: model.denoiser(ps, w, negative), ps, {"invert": 1.0, "reconstruct": 1.0})
        inv = invert_with(method, den, z, grid, ss)
        den.phase = "reconstruct"
        return inv.z_T, reconstruct_with(method, den, inv, grid), den

    for key, fields in NEW.items():
        method = make_method(key.split("_window")[0].split("_blend")[0], num_steps=4, **fields)
        z_t, rec, den = round_trip(method, z0, prompts, seeds)
        assert torch.isfinite(rec).all(), key
        for b in range(3):
            one_t, one, one_den = round_trip(method, z0[b : b + 1], prompts[b : b + 1], seeds[b : b + 1])
            assert torch.allclose(one_t, z_t[b : b + 1], atol=1e-5, rtol=0), key
            assert torch.allclose(one, rec[b : b + 1], atol=1e-5, rtol=0), key
            for phase in ("invert", "reconstruct"):
                assert one_den.nfe(phase).tolist() == den.nfe(phase)[b : b + 1].tolist(), key


T_RUN = 3
RUN_NFE = {"rf_solver": (2 * T_RUN, 2 * T_RUN), "fireflow": (T_RUN + 1, T_RUN + 1), "uni_inv": (T_RUN + 1, T_RUN),
           "rf_inversion": (T_RUN, T_RUN)}


@pytest.mark.parametrize("model", ["tiny-sd3", "tiny-flux"])
@pytest.mark.parametrize("method", sorted(RUN_NFE))
def test_every_new_method_runs_through_the_runner_on_the_flow_transformers(model, method, tmp_path, tiny_model_cache):
    overrides = [f"model={model}", f"paths.cache={tiny_model_cache}", f"method={method}", "dataset.limit=1",
                 f"method.num_steps={T_RUN}"]
    df = read_records(run_job(tmp_path, *overrides))
    assert set(df.status) == {"ok"}, df.reason.tolist()
    inv, rec = RUN_NFE[method]
    assert (df.nfe_invert == inv).all() and (df.nfe_reconstruct == rec).all(), df[["nfe_invert", "nfe_reconstruct"]]


@pytest.mark.parametrize("method", ["rf_solver", "fireflow", "rf_inversion"])
def test_flow_only_methods_refuse_the_vp_path_in_one_line(method, tmp_path):
    with pytest.raises(ConfigError, match=rf"method={method} does not run on model=gaussian \(vp path\): \S"):
        run_job(tmp_path, "model=gaussian", f"method={method}", "dataset.limit=1")


def test_uni_inv_runs_on_the_vp_path_too(tmp_path):
    """Its predictor–corrector is written with the core's step, so on SD's path it is the same rule with ε."""
    df = read_records(run_job(tmp_path, "model=gaussian", "method=uni_inv", "method.num_steps=5", "dataset.limit=1"))
    assert set(df.status) == {"ok"} and (df.nfe_invert == 6).all() and (df.nfe_reconstruct == 5).all()


def test_the_blend_composes_through_the_runner(tmp_path):
    df = read_records(run_job(tmp_path, "model=gaussian_flow", "method=fireflow", "+method/blend=easyinv",
                              "method.blend.interval=[0.2,0.8]", "dataset.limit=1"))
    assert set(df.status) == {"ok"} and (df.nfe_invert == 9).all()


# --------------------------------------------------------------------------------------------------------------------
# FireFlow's published reconstruction rows beside the table
# --------------------------------------------------------------------------------------------------------------------


def test_fireflows_table3_is_listed_for_flux_and_joined_only_in_its_own_setting(tmp_path):
    from easyinv.report import DEFAULT_PAPER_DIR, load_paper, table1
    from easyinv.report.tables import markdown_table
    from easyinv.run.records import Record, RecordWriter

    def records(label: str, dataset: str, model: str) -> None:
        with RecordWriter(tmp_path / model / dataset / label / "records.jsonl") as writer:
            for i in range(3):
                writer.append(Record(
                    item_id=f"img/{i}", method=label.split("[")[0], method_label=label, dataset=dataset, model=model,
                    precision="bf16", config_hash=f"{label}-{dataset}-{model}", psnr=20.0 + i, ssim=0.7, lpips=0.2,
                    latent_mse=0.001, nfe=18, t_invert=1.0, t_reconstruct=1.0, unet_seconds=1.5, t_total=3.0,
                    warmup=False, lpips_comparable=True, device="cpu"))

    records("fireflow[num_steps=8]", "dci1k", "flux")  # FireFlow's own setting: joined
    records("fireflow", "coco2298", "flux")  # another data set and step count: listed, never joined
    records("fireflow", "samples", "gaussian_flow")  # another model: not even listed
    paper = load_paper(DEFAULT_PAPER_DIR)
    assert list(paper["published"]["provenance"].unique()) == ["transcribed"]
    t1 = table1(read_records(tmp_path), paper)
    by = t1.set_index(["method_label", "dataset"])
    assert by.loc[("fireflow[num_steps=8]", "dci1k"), "paper_psnr"] == 16.01
    assert by.loc[("fireflow[num_steps=8]", "dci1k"), "diff_psnr"] == pytest.approx(21.0 - 16.01)
    assert by.loc[[("fireflow", "coco2298"), ("fireflow", "samples")], "paper_psnr"].isna().all()
    text = markdown_table(t1)
    assert "ReFlow-Inv. (30 steps, 60 NFE): LPIPS 0.5044, SSIM 0.5632, PSNR 16.57" in text
    assert "1k DCI images (not COCO), transcribed" in text and "(1 here)" in text
    assert "Paper: EasyInv" not in text  # the EasyInv paper's setting is not claimed for FireFlow's row
    demo = table1(read_records(tmp_path / "gaussian_flow"), paper)
    assert demo.attrs["published"] is None and "Published reconstruction" not in markdown_table(demo)
