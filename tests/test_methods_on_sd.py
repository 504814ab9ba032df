"""Every method on the tiny SD-1.x and SD-XL models, in each precision the CPU supports: finite, right shapes.

The tiny UNets are random, so only shapes, finiteness and NFE are asserted here; correctness is proven on the
Gaussian model (exact answers) and against diffusers (test_stable_diffusion.py).
"""

from __future__ import annotations

import pytest
import torch

from easyinv.blend import Blend
from easyinv.inversion import invert, reconstruct
from easyinv.models.tiny import load_tiny
from easyinv.registry import make_method

T = 10  # steps: enough to cross ReNoise's t < 250 / t >= 250 regions and an EasyInv window
METHODS = {
    "ddim": {},
    "easyinv": {"eta": 0.5, "interval": (0.05, 0.45)},
    "renoise": {},
    "fixed_point": {"iters": 2},
}
CAT = "a photo of the cat"


def _supports(dtype: torch.dtype) -> bool:
    try:
        conv = torch.nn.Conv2d(4, 4, 3).to(dtype)
        conv(torch.zeros(1, 4, 8, 8, dtype=dtype))
    except RuntimeError:
        return False
    return True


@pytest.fixture(scope="module", params=["tiny-sd", "tiny-sdxl"])
def family_model(request, tiny_model_cache):
    return request.param


@pytest.mark.parametrize("precision", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("name", list(METHODS))
def test_method_runs_on_tiny_models(name, precision, family_model, tiny_model_cache):
    dtype = getattr(torch, precision)
    if not _supports(dtype):
        pytest.skip(f"{precision} convolutions are not supported on this CPU build")
    model = load_tiny(family_model, cache_dir=tiny_model_cache, resolution=64, device="cpu",
                      precision={"unet": precision, "vae": "float32", "latent": "float32"})
    method = make_method(name, num_steps=T, **METHODS[name])
    grid = model.grid(T)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    z0 = model.encode(x)
    eps = model.denoiser([CAT, ""], guidance_scale=1.0)
    inversion = invert(method, eps, z0, grid, seeds=[1, 2])
    z_rec = reconstruct(model.denoiser([CAT, ""], 1.0), inversion.z_T, grid)[-1]
    x_rec = model.decode(z_rec)
    assert inversion.z_T.shape == z0.shape == (2, 4, 8, 8) and x_rec.shape == x.shape
    assert inversion.z_T.dtype == torch.float32  # the trajectory stays in precision.latent
    assert len(inversion.trajectory) == T + 1
    assert torch.isfinite(inversion.z_T).all() and torch.isfinite(x_rec).all()
    assert (inversion.nfe >= T).all()


def test_blend_composes_with_fixed_point_on_sdxl(tiny_model_cache):
    """The paper's claim that the blend combines with other methods, on the SD-XL-shaped model."""
    model = load_tiny("tiny-sdxl", cache_dir=tiny_model_cache, resolution=64, device="cpu",
                      precision={"unet": "float32", "vae": "float32", "latent": "float32"})
    z0 = model.encode(torch.rand(1, 3, 64, 64) * 2 - 1)
    grid = model.grid(T)
    plain = make_method("fixed_point", num_steps=T, iters=2)
    blended = make_method("fixed_point", num_steps=T, iters=2, blend=Blend(eta=0.8, interval=(0.05, 0.45)))
    a = invert(plain, model.denoiser([""], 1.0), z0, grid)
    b = invert(blended, model.denoiser([""], 1.0), z0, grid)
    assert torch.equal(a.nfe, b.nfe)  # the blend costs no NFE
    assert not torch.allclose(a.z_T, b.z_T)
    assert torch.equal(a.trajectory[1], b.trajectory[1])  # nothing changes before the window
