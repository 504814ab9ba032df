"""Edit-friendly DDPM inversion: the harness's every-method checks (easyinv.testing), the official zeroed last
noise map, and the noise maps of an independent implementation (diffusers' LEDITS++ ``invert``) on tiny-sd."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from easyinv_edit_friendly.method import EditFriendlyDDPM

from easyinv.inversion import Denoisers, invert_with, reconstruct_with
from easyinv.registry import make_method, method_names
from easyinv.testing import MethodContract, closed_form_model, round_trip
from easyinv.testing.closed_form import images


class TestEditFriendly(MethodContract):
    """Declarations, YAML = class defaults = what ``method=edit_friendly`` instantiates, NFE T + T, an exact round
    trip (float64 and float32, the model's network and a non-denoiser), batch = single images, the flow path refused
    by the job, the blend refused in one line."""

    method = "edit_friendly"


def test_the_installed_plugin_is_a_method_choice() -> None:
    assert "edit_friendly" in method_names() and "ddim" in method_names()
    assert make_method("edit_friendly") == EditFriendlyDDPM()


def test_the_official_zeroed_last_noise_leaves_exactly_the_last_step_s_noise() -> None:
    """``keep_last_noise: false`` differs from the exact round trip by η s_1 ζ_1 alone (s_1 of the first level)."""
    model = closed_form_model("vp", torch.float64)
    kept = round_trip(EditFriendlyDDPM(num_steps=6), model)
    zeroed = round_trip(EditFriendlyDDPM(num_steps=6, keep_last_noise=False), model)
    assert kept.error < 1e-14 and zeroed.error > 1e-3
    assert torch.equal(kept.inversion.z_T, zeroed.inversion.z_T)
    a, _ = model.grid(6).levels()
    s1 = math.sqrt((1 - a[0]) / (1 - a[1]) * (1 - a[1] / a[0]))
    last = s1 * kept.inversion.state["noise_maps"][:, 0]
    assert torch.allclose(kept.z - zeroed.z, last, rtol=0, atol=1e-12)
    assert torch.count_nonzero(zeroed.inversion.state["noise_maps"][:, 0]) == 0


def test_the_noisy_latents_are_independent_draws_of_the_forward_process() -> None:
    """x_k = √a_k z_0 + √(1 − a_k) n_k with the method's own draws, one per level (not one walk, as DDIM's are):
    another seed changes every level, z_T included."""
    model = closed_form_model("vp", torch.float64, resolution=16)
    method = EditFriendlyDDPM(num_steps=20)
    trip = round_trip(method, model, images(1, 16), seeds=(7,))
    a, _ = model.grid(20).levels()
    n = method.noise(trip.z0, (7,), 20)
    for k in (20, 7, 2):  # the top level as drawn; lower ones replaced by μ_k + η s_k ζ_k: equal up to round-off
        expected = math.sqrt(a[k]) * trip.z0 + math.sqrt(1 - a[k]) * n[:, k - 1]
        assert torch.allclose(trip.inversion.trajectory[k], expected, rtol=0, atol=1e-12)
    other = round_trip(method, model, images(1, 16), seeds=(8,))
    assert not torch.allclose(other.inversion.z_T, trip.inversion.z_T) and other.error < 1e-14


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory):
    from easyinv.models.tiny import load_tiny

    cache = tmp_path_factory.mktemp("tiny-models")
    fp32 = {"unet": "float32", "vae": "float32", "latent": "float32"}
    return load_tiny("tiny-sd", cache_dir=cache, resolution=64, precision=fp32, device="cpu")


def test_the_noise_maps_equal_diffusers_leditspp_inversion_on_tiny_sd(tiny_sd, tmp_path: Path) -> None:
    """diffusers' LEditsPPPipelineStableDiffusion.invert with a DDIM scheduler is edit-friendly DDPM inversion
    (its docstring says so), written independently: same model, same image, same seed and T, no guidance → the same
    x_T and noise maps, to float32 round-off (the maps divide by s_k, small at the first level)."""
    from diffusers import DDIMScheduler, LEditsPPPipelineStableDiffusion
    from PIL import Image

    model, T, seed = tiny_sd, 10, 3  # noqa: N806
    pipe = LEditsPPPipelineStableDiffusion(
        vae=model.vae, text_encoder=model.prompts.text_encoders[0], tokenizer=model.prompts.tokenizers[0],
        unet=model.unet, scheduler=DDIMScheduler.from_config(model.scheduler.config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    # diffusers 0.42.1's LEDITS++ hands DDIMScheduler.add_noise a float timestep tensor, which it cannot index with
    # (IndexError): the same call with the timestep as an integer, nothing else changed
    add_noise = pipe.scheduler.add_noise
    pipe.scheduler.add_noise = lambda x, noise, t: add_noise(x, noise, t.long())
    gen = torch.Generator().manual_seed(11)
    image = Image.fromarray((torch.rand(64, 64, 3, generator=gen) * 255).to(torch.uint8).numpy())
    processors = dict(model.unet.attn_processors)
    with torch.no_grad():
        x0, _ = pipe.encode_image(image, dtype=torch.float32)
        pipe.invert(image, source_prompt="", num_inversion_steps=T, skip=0.0,
                    generator=torch.Generator().manual_seed(seed))
        model.unet.set_attn_processor(processors)  # LEDITS++ swapped them; the harness's model gets its own back
        prompts = [""]
        den = Denoisers(lambda w, neg=None: model.denoiser(prompts, w, neg), prompts,
                        {"invert": 1.0, "reconstruct": 1.0})
        grid = model.grid(T)
        method = EditFriendlyDDPM(num_steps=T)
        inversion = invert_with(method, den, x0, grid, [seed])
        den.phase = "reconstruct"
        z = reconstruct_with(method, den, inversion, grid)
    theirs = pipe.zs.flip(0)[:, 0]  # (T, B, C, H, W), top level first → index k - 1 is level k's map
    ours = inversion.state["noise_maps"][0]
    # measured: x_T 2.4e-7, maps 1.3e-5 (the first level's 3.7e-5; maps reach |23|), round trip 7.5e-9
    assert torch.allclose(inversion.z_T, pipe.init_latents, rtol=0, atol=1e-6)
    assert torch.allclose(ours, theirs, rtol=0, atol=2e-4), float((ours - theirs).abs().max())
    assert float((z - x0).abs().max()) < 1e-6  # and the round trip returns the image's latent
