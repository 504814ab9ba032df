"""SD3 and FLUX.1 through the core on tiny random models built offline: generation equals diffusers' pipelines, the σ
grids are the pipelines' at several resolutions, the VAE's shift and scale, batch = singles, every method through the
runner (or refused in one line), and the wrong folder for a family stopping in one line."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import FluxPipeline
from helpers import run_job

from baselines.bdia import BDIA
from baselines.ddim import DDIM
from baselines.edict import EDICT
from baselines.fixed_point import FixedPoint
from baselines.negative_prompt import NegativePrompt
from baselines.null_text import NullText
from easyinv.inversion import Denoisers, invert_with, reconstruct, reconstruct_with
from easyinv.method import EasyInv
from easyinv.models.loading import ModelNotFoundError
from easyinv.models.tiny import ensure_tiny_model, load_tiny
from easyinv.run.records import read_records
from easyinv.validation import ConfigError


@pytest.fixture(scope="module")
def flow_models(tiny_model_cache):
    torch.set_flush_denormal(True)
    return {name: load_tiny(name, cache_dir=tiny_model_cache, resolution=64, max_sequence_length=32)
            for name in ("tiny-sd3", "tiny-flux")}


def _noise(seed: int = 0, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 16, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("guidance", [0.0, 0.5, 1.0, 4.5])
def test_sd3_generation_equals_the_pipeline(flow_models, guidance):
    """At every w, the pipeline's: guidance is off at w <= 1 (one conditional row), v_u + w (v_c - v_u) above."""
    model, steps, prompt = flow_models["tiny-sd3"], 6, "a photo of the cat"
    noise = _noise()
    ours = reconstruct(model.denoiser([prompt], guidance), noise, model.grid(steps))[-1]
    theirs = model.pipe(prompt=prompt, negative_prompt="", num_inference_steps=steps, guidance_scale=guidance,
                        latents=noise.clone(), height=64, width=64, output_type="latent", max_sequence_length=32).images
    assert model.pipe.scheduler.sigmas.tolist()[:-1] == [lv.sigma for lv in model.grid(steps).alpha_tgt][::-1]
    assert torch.equal(ours, theirs), float((ours - theirs).abs().max())
    den = model.denoiser([prompt], guidance)
    den(noise, model.grid(steps).timesteps[-1])
    assert den.nfe.tolist() == [2 if guidance > 1.0 else 1]  # CFG rows only where the pipeline guides


@pytest.mark.parametrize("guidance", [1.0, 3.5])
def test_flux_generation_equals_the_pipeline(flow_models, guidance):
    model, steps, prompt = flow_models["tiny-flux"], 6, "a photo of the cat"
    noise = _noise(1)
    den = model.denoiser([prompt], guidance)
    ours = reconstruct(den, noise, model.grid(steps))[-1]
    packed = FluxPipeline._pack_latents(noise.clone(), 1, 16, 8, 8)
    out = model.pipe(prompt=prompt, num_inference_steps=steps, guidance_scale=guidance, latents=packed, height=64,
                     width=64, output_type="latent", max_sequence_length=32).images
    theirs = FluxPipeline._unpack_latents(out, 64, 64, 8)
    assert torch.equal(ours, theirs), float((ours - theirs).abs().max())
    assert den.nfe.tolist() == [steps]  # distilled guidance: one row per step at any scale


def test_the_grid_is_the_pipelines_sigma_list_walked_backwards(flow_models):
    for model in flow_models.values():
        for steps in (4, 28):
            grid = model.grid(steps)
            levels = [grid.alpha_src[0].sigma, *(lv.sigma for lv in grid.alpha_tgt)]
            assert levels[0] == 0.0 and levels[-1] == 1.0
            assert all(b > a for a, b in zip(levels, levels[1:], strict=False))
            assert grid.time0 == 0.0 and grid.timesteps[-1] == 1000.0
    sd3 = flow_models["tiny-sd3"]
    for steps in (4, 28, 50):  # SD3's pipeline grid is shifted twice and ends at 0.00893 for every step count
        assert sd3.grid(steps).alpha_tgt[0].sigma == pytest.approx(0.00893, abs=5e-6)
    assert [round(lv.sigma, 5) for lv in sd3.grid(4).alpha_tgt] == [0.00893, 0.60215, 0.85769, 1.0]


@pytest.mark.parametrize("resolution", [64, 128, 256])
def test_flux_sigmas_follow_the_resolution_dependent_shift(tiny_model_cache, resolution):
    """σ' = e^μ / (e^μ + 1/σ − 1), μ = 0.5 + 0.65 (L − 256) / 3840 with L the packed token count (by hand)."""
    model = load_tiny("tiny-flux", cache_dir=tiny_model_cache, resolution=resolution, max_sequence_length=32)
    steps = 8
    tokens = (resolution // 16) ** 2
    mu = 0.5 + (1.15 - 0.5) * (tokens - 256) / (4096 - 256)
    base = [1.0 - k / steps for k in range(steps)]  # linspace(1, 1/T, T)
    expected = sorted(math.exp(mu) / (math.exp(mu) + 1 / s - 1) for s in base)
    got = [lv.sigma for lv in model.grid(steps).alpha_tgt]
    assert got == pytest.approx(expected, abs=2e-7)
    pipe = model.pipe  # and the pipeline's own schedule at this resolution, bit for bit
    out = pipe(prompt="a cat", num_inference_steps=steps, height=resolution, width=resolution, output_type="latent",
               generator=torch.Generator().manual_seed(0), max_sequence_length=32)
    assert out is not None and pipe.scheduler.sigmas.tolist()[:-1] == got[::-1]


def test_vae_shift_and_scale(flow_models):
    for model in flow_models.values():
        x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
        with torch.no_grad():
            mean = model.vae.encode(x).latent_dist.mean
            z = model.encode(x)
            assert torch.equal(z, (mean - model.vae.config.shift_factor) * model.vae.config.scaling_factor)
            back = z / model.vae.config.scaling_factor + model.vae.config.shift_factor  # the inverse map
            assert torch.equal(model.decode(z), model.vae.decode(back, return_dict=False)[0])
            assert torch.allclose(back, mean, atol=1e-6, rtol=0)
        assert model.shift_factor != 0.0 and model.scaling_factor != 1.0


def _methods(name: str) -> list:
    methods = [DDIM(num_steps=4, time="source"), DDIM(num_steps=4), EasyInv(num_steps=4, interval=(0.2, 0.8)),
               FixedPoint(num_steps=4), EDICT(num_steps=4), BDIA(num_steps=4)]
    if name == "tiny-sd3":  # classifier-free guidance: the methods that use its unconditional branch
        methods += [NegativePrompt(num_steps=4), NullText(num_steps=4, inner_steps=2)]
    return methods


@pytest.mark.parametrize("name", ["tiny-sd3", "tiny-flux"])
def test_a_batch_of_three_equals_three_single_runs_for_every_method(flow_models, name):
    model = flow_models[name]
    z0 = _noise(3, batch=3)
    prompts = ["a photo of the cat", "a dog", ""]
    grid = model.grid(4)

    def round_trip(method, z: torch.Tensor, ps: list[str]):
        den = Denoisers(lambda w, negative: model.denoiser(ps, w, negative), ps, {"invert": 1.0, "reconstruct": 1.0},
                        null_text=lambda: model.null_text_denoiser(ps))
        inv = invert_with(method, den, z, grid, list(range(len(ps))))
        den.phase = "reconstruct"
        return inv.z_T, reconstruct_with(method, den, inv, grid), den

    for method in _methods(name):
        z_t, rec, den = round_trip(method, z0, prompts)
        assert torch.isfinite(rec).all()
        for b in range(3):
            one_t, one, one_den = round_trip(method, z0[b : b + 1], prompts[b : b + 1])
            assert torch.allclose(one_t, z_t[b : b + 1], atol=1e-5, rtol=0), method
            assert torch.allclose(one, rec[b : b + 1], atol=1e-5, rtol=0), method
            for phase in ("invert", "reconstruct"):
                assert one_den.nfe(phase).tolist() == den.nfe(phase)[b : b + 1].tolist(), method


# --------------------------------------------------------------------------------------------------------------------
# Through the runner
# --------------------------------------------------------------------------------------------------------------------

T = 3
NFE = {  # per image at T = 3, guidance 1 (SD3: one row; FLUX: one row)
    "euler": (T, T), "ddim": (T, T), "easyinv": (T, T), "fixed_point": (T * 6, T), "edict": (2 * T, 2 * T),
    "bdia": (T, T - 1), "negative_prompt": (T, T),
}
REFUSED = {"belm": "flow path", "renoise": "flow path"}
REFUSED_ON_FLUX = {"negative_prompt": "distilled", "null_text": "distilled"}


@pytest.mark.parametrize("model", ["tiny-sd3", "tiny-flux"])
@pytest.mark.parametrize("method", sorted({*NFE, *REFUSED, "null_text", "vae_only"}))
def test_every_method_runs_on_the_flow_transformers_or_is_refused(model, method, tmp_path, tiny_model_cache):
    overrides = [f"model={model}", f"paths.cache={tiny_model_cache}", f"method={method}", "dataset.limit=1"]
    if method != "vae_only":
        overrides.append(f"method.num_steps={T}")
    if method == "easyinv":
        overrides.append("method.interval=[0.2,0.8]")
    if method == "null_text":
        overrides.append("method.inner_steps=2")
    refusal = REFUSED.get(method) or (REFUSED_ON_FLUX.get(method) if model == "tiny-flux" else None)
    if refusal:
        with pytest.raises(ConfigError, match=rf"method={method} does not run on model={model}.*{refusal}"):
            run_job(tmp_path, *overrides)
        return
    df = read_records(run_job(tmp_path, *overrides))
    assert set(df.status) == {"ok"}, df.reason.tolist()
    if method == "null_text":  # SD3: T pivots + Σ(1 + n_i + 2) with 1 ≤ n_i ≤ 2 Adam steps, 2T in reconstruction
        n = df.backward_passes
        assert ((n >= T) & (n <= 2 * T)).all() and (df.nfe_invert == T + 3 * T + n).all()
        assert (df.nfe_reconstruct == 2 * T).all()
        return
    inv, rec = (0, 0) if method == "vae_only" else NFE[method]
    assert (df.nfe_invert == inv).all() and (df.nfe_reconstruct == rec).all(), df[["nfe_invert", "nfe_reconstruct"]]


def test_sd3_below_guidance_one_runs_the_conditional_row_alone(tmp_path, tiny_model_cache):
    """A w < 1 SD3 job: one row per call (the conditional one, as the pipeline), recorded as such in NFE; it gave
    v_u + w (v_c - v_u) on two rows."""
    df = read_records(run_job(tmp_path, "model=tiny-sd3", f"paths.cache={tiny_model_cache}", "method=euler",
                              f"method.num_steps={T}", "dataset.limit=1", "dataset.prompt=caption",
                              "guidance.invert=0.5", "guidance.reconstruct=0.0"))
    assert set(df.status) == {"ok"}, df.reason.tolist()
    assert (df.nfe_invert == T).all() and (df.nfe_reconstruct == T).all(), df[["nfe_invert", "nfe_reconstruct"]]
    assert (df.unet_calls == 2 * T).all()


def test_schnell_loads_and_generates_but_refuses_inversion(tmp_path, tiny_model_cache):
    model = load_tiny("tiny-flux-schnell", cache_dir=tiny_model_cache, resolution=64, max_sequence_length=32)
    assert not model.guidance_embeds
    out = reconstruct(model.denoiser(["a cat"], 0.0), _noise(), model.grid(4))[-1]
    assert torch.isfinite(out).all()
    with pytest.raises(ConfigError, match="model=tiny-flux-schnell does not invert"):
        run_job(tmp_path, "model=tiny-flux-schnell", f"paths.cache={tiny_model_cache}", "method=euler")


def test_a_schnell_folder_under_model_flux_is_refused_before_the_first_network_call(tmp_path, tiny_model_cache,
                                                                                     monkeypatch):
    """FLUX.1-schnell is told by its transformer (no guidance embedding), not by the config's name: `model=flux
    model.load.source=<a schnell folder>` inverted. A FLUX.1-dev folder under the same config still runs."""
    from diffusers import FluxTransformer2DModel

    calls = []
    forward = FluxTransformer2DModel.forward

    def counted(self, *args, **kwargs):
        calls.append(1)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(FluxTransformer2DModel, "forward", counted)
    common = ["model=flux", "model.resolution=64", "model.load.max_sequence_length=32", "method=euler",
              f"method.num_steps={T}", "dataset.limit=1"]
    schnell = ensure_tiny_model("tiny-flux-schnell", tiny_model_cache)
    with pytest.raises(ConfigError, match=r"model=flux \(.*tiny-flux-schnell\) does not invert: its FLUX transformer "
                                          r"has no guidance embedding .*FLUX.1-schnell") as err:
        run_job(tmp_path, *common, f"model.load.source={schnell}")
    assert "\n" not in str(err.value) and not calls
    records = tmp_path / "runs" / "job" / "records.jsonl"
    assert not records.is_file() or not records.read_text().strip()  # no row: nothing was inverted
    dev = ensure_tiny_model("tiny-flux", tiny_model_cache)
    df = read_records(run_job(tmp_path, *common, f"model.load.source={dev}", name="dev"))
    assert set(df.status) == {"ok"} and calls


def test_the_wrong_folder_for_a_family_stops_in_one_line(tmp_path, tiny_model_cache):
    sd_folder = ensure_tiny_model("tiny-sd", tiny_model_cache)
    flux_folder = ensure_tiny_model("tiny-flux", tiny_model_cache)
    with pytest.raises(ModelNotFoundError, match=r"not a flux checkpoint \(missing transformer, text_encoder_2"):
        run_job(tmp_path, "model=flux", f"model.load.source={sd_folder}", "method=euler", "dataset.limit=1")
    with pytest.raises(ModelNotFoundError, match=r"incomplete for sd1 \(missing unet\)"):
        run_job(tmp_path, "model=sd14", f"model.load.source={flux_folder}", "method=ddim", "dataset.limit=1",
                name="sd")
