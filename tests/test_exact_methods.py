"""The inversion zoo on the closed-form model and tiny SD (more-methods.md §8): EDICT, BDIA and BELM round-trip to
round-off with any ε, DDIM does not; BDIA's instability guard; negative-prompt inversion is DDIM under EasyInv's
protocol and differs with captions and w > 1; the methods run through the runner with their NFE."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import run_job
from method_cases import CONFIGS, NAMES, exact_of, paths_of
from torch import Tensor

from baselines.bdia import BDIA
from baselines.belm import belm_coefficients
from baselines.ddim import DDIM
from easyinv.inversion import Denoiser, Denoisers, invert_with, reconstruct_with
from easyinv.models.gaussian import GaussianModel
from easyinv.registry import make_method
from easyinv.run.records import read_records

# the methods that declare an exact round trip and take a step on the VP path (found from the config group)
EXACT_NAMES = [n for n in NAMES
               if exact_of(n) and "vp" in paths_of(n) and make_method(n, "gaussian", CONFIGS).num_steps]
EXACT = {**{n: make_method(n, "gaussian", CONFIGS) for n in EXACT_NAMES}, "bdia-0.94": BDIA(gamma=0.94)}


class SmoothNonDenoiser(Denoiser):
    """ε(z, t) = tanh(1.3 z + φ + 0.003 t): deterministic and smooth, but no denoiser (the exact methods must not
    care)."""

    def __init__(self, batch_size: int, phase: Tensor):
        super().__init__(batch_size)
        self.phase = phase

    def predict(self, z: Tensor, t: int, rows: Tensor) -> tuple[Tensor, int]:
        return torch.tanh(1.3 * z + self.phase.to(z.dtype) + 0.003 * t), 1


def _model(dtype: torch.dtype) -> GaussianModel:
    return GaussianModel(0.1, 0.5, error=0.05, resolution=16, net_dtype=dtype, latent_dtype=dtype)


def _round_trip(method, model: GaussianModel, dtype: torch.dtype, eps: str) -> tuple[float, Tensor, Denoisers]:
    gen = torch.Generator().manual_seed(0)
    x = (0.5 * torch.randn(3, 3, 16, 16, generator=gen)).clamp(-1, 1)
    z0 = model.encode(x).to(dtype)
    phase = torch.rand(3, 16, 16, generator=gen, dtype=torch.float64)

    def make(w: float, negative=None) -> Denoiser:
        return SmoothNonDenoiser(3, phase) if eps == "smooth" else model.denoiser([""] * 3, w)

    den = Denoisers(make, [""] * 3, {"invert": 1.0, "reconstruct": 1.0})
    grid = model.grid(method.num_steps)
    inversion = invert_with(method, den, z0, grid, [1, 2, 3])
    den.phase = "reconstruct"
    z = reconstruct_with(method, den, inversion, grid)
    return float((z - z0).norm() / z0.norm()), inversion.z_T, den


# Each exact YAML at its defaults is held to round-off with both networks, float64 and float32, by the test kit
# (MethodContract.test_round_trip_is_exact_exactly_when_declared, tests/test_every_method.py); here: the variants.
@pytest.mark.parametrize("eps", ["gaussian", "smooth"])
@pytest.mark.parametrize("name", sorted(set(EXACT) - set(EXACT_NAMES)))
def test_exact_variants_round_trip_to_round_off_with_any_eps(name, eps):
    method = EXACT[name]
    err64, z_t, _ = _round_trip(method, _model(torch.float64), torch.float64, eps)
    err32, _, _ = _round_trip(method, _model(torch.float32), torch.float32, eps)
    assert err64 <= 1e-12, err64
    assert err32 <= 1e-5, err32
    assert torch.isfinite(z_t).all() and z_t.abs().max() < 100  # a real noise level, not an exploded mode


@pytest.mark.parametrize("eps", ["gaussian", "smooth"])
def test_ddim_does_not_round_trip(eps):
    err, _, _ = _round_trip(DDIM(), _model(torch.float64), torch.float64, eps)
    assert err > 1e-4  # the contrast: DDIM inversion is approximate


@pytest.mark.parametrize("name", EXACT_NAMES)
def test_nfe_per_image_of_the_exact_methods_at_their_defaults(name):
    method = EXACT[name]
    inv, rec = method.nfe_per_image(method.num_steps)
    _, _, den = _round_trip(method, _model(torch.float64), torch.float64, "gaussian")
    assert den.nfe("invert").tolist() == [inv] * 3 and den.nfe("reconstruct").tolist() == [rec] * 3


def test_bdia_guard_refuses_an_exploding_gamma():
    with pytest.raises(ValueError, match="γ\\^-T"):
        BDIA(gamma=0.5, num_steps=50)
    BDIA(gamma=0.5, num_steps=10)  # the 10-step setting of docs/methods.md is fine
    assert BDIA(gamma=0.94).gamma == 0.94


def test_belm_coefficients_reduce_to_a_consistent_two_step_scheme():
    """With ε ≡ 0 and a constant ρ-step, a latent on the noise-free ODE (z ∝ α) must be reproduced exactly."""
    levels = tuple(1 / (1 + r * r) for r in (0.1, 0.2, 0.3, 0.4))  # ρ = 0.1, 0.2, 0.3, 0.4: equal steps
    coef = belm_coefficients(levels)
    alpha = [math.sqrt(a) for a in levels]
    for k, (c_next, c_k, _) in enumerate(coef, start=1):
        assert c_next * alpha[k + 1] + c_k * alpha[k] == pytest.approx(alpha[k - 1], rel=1e-12)


# --------------------------------------------------------------------------------------------------------------------
# Negative-prompt inversion
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def captioned(tmp_path_factory):
    import shutil

    from easyinv.data.samples import SAMPLES_DIR

    root = tmp_path_factory.mktemp("captioned")
    for src in sorted((SAMPLES_DIR / "photos").glob("*.png"))[:2]:
        shutil.copyfile(src, root / src.name)
        shutil.copyfile(src.with_suffix(".txt"), root / f"{src.stem}.txt")
    return root


QUALITY = ["item_id", "psnr", "ssim", "latent_mse", "nfe", "nfe_invert", "nfe_reconstruct"]


def test_npi_is_ddim_under_the_empty_prompt_protocol_and_differs_with_captions(tmp_path, tiny_model_cache, captioned):
    base = ("model=tiny-sd", f"paths.cache={tiny_model_cache}", "dataset=folder", f"dataset.root={captioned}",
            "method.num_steps=6")
    runs = {}
    for method in ("ddim", "negative_prompt"):
        for protocol, extra in (("empty", ()), ("caption", ("dataset.prompt=caption", "guidance.invert=3.0",
                                                            "guidance.reconstruct=3.0"))):
            runs[method, protocol] = read_records(run_job(tmp_path, *base, f"method={method}", *extra,
                                                          name=f"{method}-{protocol}")).sort_values("item_id")
    ddim, npi = runs["ddim", "empty"][QUALITY], runs["negative_prompt", "empty"][QUALITY]
    assert ddim.reset_index(drop=True).equals(npi.reset_index(drop=True))  # bit for bit
    ddim_c, npi_c = runs["ddim", "caption"], runs["negative_prompt", "caption"]
    assert (npi_c.nfe_invert == 6).all() and (npi_c.nfe_reconstruct == 6).all()  # w = 1 pivots, u = c: no CFG
    assert (ddim_c.nfe_invert == 12).all()  # DDIM pays CFG at w = 3 with a caption
    assert ddim_c.latent_mse.tolist() != pytest.approx(npi_c.latent_mse.tolist(), rel=1e-3)


# --------------------------------------------------------------------------------------------------------------------
# Through the runner
# --------------------------------------------------------------------------------------------------------------------

ZOO = sorted({*EXACT_NAMES, "negative_prompt"})  # the exact methods and NPI; NFE from their declarations, no CFG


@pytest.mark.parametrize("model", ["tiny-sd", "tiny-sdxl"])
@pytest.mark.parametrize("name", ZOO)
def test_zoo_runs_through_the_runner(name, model, tmp_path, tiny_model_cache):
    guidance = ("guidance.invert=1.0", "guidance.reconstruct=1.0")  # SD-XL's default w = 5 would double the NFE
    df = read_records(run_job(tmp_path, f"model={model}", f"paths.cache={tiny_model_cache}", f"method={name}",
                              "method.num_steps=6", "dataset.limit=2", *guidance))
    assert set(df.status) == {"ok"}
    inv, rec = make_method(name, model, CONFIGS, num_steps=6).nfe_per_image(6)
    assert (df.nfe_invert == inv).all() and (df.nfe_reconstruct == rec).all()
    assert (df.backward_passes == 0).all()
    latent = 4 * 8 * 8 * 4  # one fp32 latent at 64 px
    assert (df.state_bytes == (latent if name == "negative_prompt" else 2 * latent)).all()
    if name != "negative_prompt":  # exact methods: the reconstruction is the VAE round trip up to round-off
        assert (df.latent_mse < 1e-6).all()  # fp32 round-off through a random UNet (DDIM: ~1e-2)


def test_exact_methods_invert_with_the_reconstruction_guidance(tmp_path, tiny_model_cache, captioned):
    """Under the captions protocol (pivots w = 1, sampling w = 3) the exact methods stay exact: both ways use w = 3."""
    for name in EXACT_NAMES:
        df = read_records(run_job(tmp_path, "model=tiny-sd", f"paths.cache={tiny_model_cache}", "dataset=folder",
                                  f"dataset.root={captioned}", "dataset.prompt=caption", "guidance.invert=1.0",
                                  "guidance.reconstruct=3.0", f"method={name}", "method.num_steps=4", name=name))
        assert (df.latent_mse < 1e-6).all(), name
        assert (df.nfe_invert == 2 * make_method(name, "gaussian", CONFIGS, num_steps=4).nfe_per_image(4)[0]).all()


def test_edict_runs_with_float64_latents_end_to_end(tmp_path, tiny_model_cache):
    """The official EDICT ran in float64: precision.latent=float64 keeps the whole trajectory there."""
    df = read_records(run_job(tmp_path, "model=tiny-sd", f"paths.cache={tiny_model_cache}", "method=edict",
                              "method.num_steps=6", "dataset.limit=2", "precision.latent=float64"))
    assert set(df.status) == {"ok"} and (df.latent_mse < 1e-12).all()  # float64 round-off, not float32's


@pytest.mark.parametrize("name", ["edict", "bdia", "belm", "negative_prompt", "null_text"])
def test_zoo_runs_with_a_bf16_unet(name, tmp_path, tiny_model_cache):
    extra = ("method.inner_steps=2",) if name == "null_text" else ()
    df = read_records(run_job(tmp_path, "model=tiny-sd", f"paths.cache={tiny_model_cache}", f"method={name}",
                              "method.num_steps=4", "dataset.limit=1", "precision=bf16", *extra))
    assert set(df.status) == {"ok"} and df.psnr.notna().all()


def test_table1_captions_preset_composes_with_every_method():
    from hydra import compose, initialize_config_dir

    from easyinv.validation import CONFIG_DIR, group_choices

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose("config", overrides=["experiment=table1_captions"], return_hydra_config=True)
    methods = str(cfg.hydra.sweeper.params.method).split(",")
    # The rows are written in the preset (they are the table's rows, in its order, each costing GPU hours on COCO), but
    # checked against the declarations: every method that runs on the VP path is a row, none refused there is, except
    # the flow models' two baselines that also run on SD (euler: DDIM at the source time; uni_inv), which have their
    # own table (experiment=table_flow_methods). A new VP method fails here until it is a row or named below.
    flow_baselines = {"euler", "uni_inv"}
    assert set(methods) == {n for n in group_choices("method") if "vp" in paths_of(n)} - flow_baselines
    assert list(cfg.dataset.splits) == ["val2017"] and cfg.dataset.prompt == "caption"
    assert (cfg.guidance.invert, cfg.guidance.reconstruct) == (1.0, 7.5)
