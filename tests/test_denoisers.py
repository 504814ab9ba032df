"""The UNet denoiser: CFG only where it changes the result, NFE per row, row subsets, batch = singles."""

from __future__ import annotations

import pytest
import torch
from helpers import PlainDDIM

from easyinv.inversion import invert, reconstruct
from easyinv.models.conditioning import TextConditioning
from easyinv.models.denoisers import branches_needed

CAT = "a photo of the cat"
ATOL = 1e-5  # fp32; a different batch composition changes the UNet's float32 rounding at the 1e-6 level



def _nfe(model, prompts, w, steps=50):
    """UNet rows per image for DDIM inversion + reconstruction."""
    grid = model.grid(steps)
    z0 = torch.randn(len(prompts), 4, 8, 8, generator=torch.Generator().manual_seed(0))
    eps_inv, eps_rec = model.denoiser(prompts, w), model.denoiser(prompts, w)
    z_T = invert(PlainDDIM(steps), eps_inv, z0, grid).z_T  # noqa: N806
    reconstruct(eps_rec, z_T, grid)
    return (eps_inv.nfe + eps_rec.nfe).tolist()


def test_nfe_per_image_sd1(tiny_sd):
    assert _nfe(tiny_sd, ["", CAT], 1.0) == [100, 100]   # no guidance: 1 row per step
    assert _nfe(tiny_sd, ["", CAT], 7.5) == [100, 200]   # ""/"" is a no-op at 7.5; CAT vs "" is not


def test_nfe_per_image_sdxl(tiny_sdxl):
    assert _nfe(tiny_sdxl, [""], 5.0) == [200]           # "" vs zeros: guidance is real on SD-XL


def test_branch_choice():
    a, b = TextConditioning(torch.ones(2, 3)), TextConditioning(torch.zeros(2, 3))
    assert branches_needed(a, b, 1.0) == (True, False)
    assert branches_needed(a, a, 7.5) == (True, False)
    assert branches_needed(a, b, 0.0) == (False, True)
    assert branches_needed(a, b, 7.5) == (True, True)
    pa, pb = TextConditioning(torch.ones(2, 3), torch.ones(4)), TextConditioning(torch.ones(2, 3), torch.zeros(4))
    assert branches_needed(pa, pb, 5.0) == (True, True)  # same tokens, different pooled vector


def test_guided_eps_is_cfg_formula(tiny_sd):
    """Against the UNet called directly, pipeline-style: ε_u + w (ε_c − ε_u) on one batch of [z, z]."""
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    cond, uncond = tiny_sd.prompts(CAT).embeds[None], tiny_sd.prompts("").embeds[None]
    t = torch.tensor(501)
    with torch.no_grad():
        pair = tiny_sd.unet(torch.cat([z, z]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
        eps_u, eps_c = pair.chunk(2)
        eps_u_alone = tiny_sd.unet(z, t, encoder_hidden_states=uncond).sample
    guided = tiny_sd.denoiser([CAT], 7.5)
    torch.testing.assert_close(guided(z, 501), eps_u + 7.5 * (eps_c - eps_u), rtol=0, atol=1e-6)
    assert guided.nfe.tolist() == [2]
    uncond_only = tiny_sd.denoiser([CAT], 0.0)
    torch.testing.assert_close(uncond_only(z, 501), eps_u_alone, rtol=0, atol=1e-6)
    assert uncond_only.nfe.tolist() == [1]


@pytest.mark.parametrize("fixture", ["tiny_sd", "tiny_sdxl"])
def test_batch_equals_singles_and_row_subsets(request, fixture):
    model = request.getfixturevalue(fixture)
    prompts, w = ["", CAT, "a dog"], 5.0
    z = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    batch = model.denoiser(prompts, w)
    eps = batch(z, 761)
    assert eps.shape == z.shape and eps.dtype == torch.float32
    for b, prompt in enumerate(prompts):
        torch.testing.assert_close(eps[b : b + 1], model.denoiser([prompt], w)(z[b : b + 1], 761), rtol=0, atol=ATOL)
    before = batch.nfe.clone()
    sub = batch(z[[2, 0]], 761, rows=torch.tensor([2, 0]))
    torch.testing.assert_close(sub, eps[[2, 0]], rtol=0, atol=ATOL)
    per_row = torch.tensor([1 if (model.family == "sd1" and p == "") else 2 for p in prompts])
    assert (batch.nfe - before).tolist() == [per_row[0].item(), 0, per_row[2].item()]
    with pytest.raises(ValueError, match="rows"):
        batch(z[:2], 761, rows=torch.tensor([0]))
