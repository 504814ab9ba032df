"""The SD3 and FLUX transformers behind the :class:`easyinv.inversion.Denoiser` call: the velocity v(z, t).

Each call is shaped exactly as the diffusers pipeline makes it, so a walk over the pipeline's grid reproduces the
pipeline: SD3 stacks [unconditional, conditional] rows and takes 1000·σ as its timestep; FLUX packs the latent into
2×2 patches with image ids, takes ``timestep / 1000`` (in the latent's dtype, then divided, as its pipeline does) and
its guidance scale as an input. The trajectory stays in ``latent_dtype``; only the transformer's input and output are
cast. NFE counts rows: SD3 with guidance that changes the result (w > 1 against another negative) costs 2 per image,
otherwise 1; FLUX costs 1.
"""

from __future__ import annotations

import torch
from diffusers import FluxPipeline
from torch import Tensor

from easyinv.inversion import Denoiser, NullTextDenoiser

__all__ = ["FluxDenoiser", "SD3Denoiser", "SD3NullTextDenoiser"]


def _sd3_call(transformer: torch.nn.Module, x: Tensor, t: float, embeds: Tensor, pooled: Tensor) -> Tensor:
    """One SD3 transformer call as the pipeline makes it: the float32 timestep 1000·σ for every row."""
    timestep = torch.full((x.shape[0],), float(t), dtype=torch.float32, device=x.device)
    return transformer(hidden_states=x, timestep=timestep, encoder_hidden_states=embeds, pooled_projections=pooled,
                       return_dict=False)[0]


class SD3Denoiser(Denoiser):
    """v(z, t) of an SD3 transformer with classifier-free guidance ``v_u + w (v_c − v_u)``.

    As ``StableDiffusion3Pipeline`` (``do_classifier_free_guidance`` is ``guidance_scale > 1``): at w ≤ 1 guidance is
    off, and v is the conditional branch alone, one row per image (w = 0.5 is not ``v_u + 0.5 (v_c − v_u)``, w = 0
    not ``v_u``). At w > 1 the unconditional branch is evaluated when some row's negative conditioning differs from
    its prompt's (then for every row of the call, as the pipeline does), else it would not change the result.
    (The SD-1.x / SD-XL UNet denoiser keeps the formula at every w: its w = 0 is ε_u; models/denoisers.py.)
    """

    def __init__(self, transformer: torch.nn.Module, embeds: Tensor, pooled: Tensor, neg_embeds: Tensor,
                 neg_pooled: Tensor, guidance_scale: float):
        super().__init__(embeds.shape[0])
        self.transformer = transformer
        param = next(transformer.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.guidance_scale = float(guidance_scale)
        same = bool(torch.equal(embeds, neg_embeds) and torch.equal(pooled, neg_pooled))
        self.both = self.guidance_scale > 1.0 and not same  # the pipeline's do_classifier_free_guidance
        self.embeds, self.pooled = embeds.to(self.dtype), pooled.to(self.dtype)
        self.neg_embeds, self.neg_pooled = neg_embeds.to(self.dtype), neg_pooled.to(self.dtype)

    def predict(self, z: Tensor, t: float, rows: Tensor) -> tuple[Tensor, int]:
        idx = rows.to(self.device)
        x = z.to(self.dtype)
        if self.both:
            x = torch.cat([x, x])
            embeds = torch.cat([self.neg_embeds[idx], self.embeds[idx]])
            pooled = torch.cat([self.neg_pooled[idx], self.pooled[idx]])
        else:
            embeds, pooled = self.embeds[idx], self.pooled[idx]
        with torch.no_grad():
            out = _sd3_call(self.transformer, x, t, embeds, pooled)
        if self.both:
            uncond, cond = out.chunk(2)
            out = uncond + self.guidance_scale * (cond - uncond)
        return out.to(z.dtype), 2 if self.both else 1


class SD3NullTextDenoiser(NullTextDenoiser):
    """SD3 with an explicit, optimisable unconditional sequence embedding per row (null-text inversion); the pooled
    vector of the unconditional branch stays the null prompt's, as on SD-XL. The transformer is frozen: autograd
    reaches ``u`` only."""

    def __init__(self, transformer: torch.nn.Module, embeds: Tensor, pooled: Tensor, null_embeds: Tensor,
                 null_pooled: Tensor):
        super().__init__(embeds.shape[0])
        self.transformer = transformer
        param = next(transformer.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.embeds, self.pooled = embeds.to(self.dtype), pooled.to(self.dtype)
        self.null_embeds, self.null_pooled = null_embeds.to(self.dtype), null_pooled.to(self.dtype)

    def initial_embedding(self) -> Tensor:
        return self.null_embeds.float().clone()

    def _forward(self, z: Tensor, t: float, embeds: Tensor, pooled: Tensor) -> Tensor:
        return _sd3_call(self.transformer, z.to(self.dtype), t, embeds.to(self.dtype), pooled).to(z.dtype)

    def predict(self, z: Tensor, t: float, rows: Tensor) -> tuple[Tensor, int]:
        idx = rows.to(self.device)
        with torch.no_grad():
            return self._forward(z, t, self.embeds[idx], self.pooled[idx]), 1

    def _uncond(self, z: Tensor, t: float, u: Tensor, rows: Tensor) -> Tensor:
        return self._forward(z, t, u, self.null_pooled[rows.to(self.device)])

    def _both(self, z: Tensor, t: float, u: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            out = self._forward(torch.cat([z, z]), t, torch.cat([self.embeds, u.to(self.dtype)]),
                                torch.cat([self.pooled, self.null_pooled]))
        return out[: len(z)], out[len(z) :]


class FluxDenoiser(Denoiser):
    """v(z, t) of a FLUX transformer; the guidance scale is an input of FLUX.1-dev (none for schnell)."""

    def __init__(self, transformer: torch.nn.Module, embeds: Tensor, pooled: Tensor, text_ids: Tensor,
                 guidance_scale: float, *, guidance_embeds: bool):
        super().__init__(embeds.shape[0])
        self.transformer = transformer
        param = next(transformer.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.embeds, self.pooled, self.text_ids = embeds.to(self.dtype), pooled.to(self.dtype), text_ids
        self.guidance_scale = float(guidance_scale)
        self.guidance_embeds = guidance_embeds
        self._image_ids: dict[tuple[int, int], Tensor] = {}

    def _ids(self, h: int, w: int) -> Tensor:
        if (h, w) not in self._image_ids:
            self._image_ids[h, w] = FluxPipeline._prepare_latent_image_ids(1, h // 2, w // 2, self.device, self.dtype)
        return self._image_ids[h, w]

    def predict(self, z: Tensor, t: float, rows: Tensor) -> tuple[Tensor, int]:
        idx = rows.to(self.device)
        b, c, h, w = z.shape
        packed = FluxPipeline._pack_latents(z.to(self.dtype), b, c, h, w)
        timestep = torch.full((b,), float(t), device=self.device).to(packed.dtype)
        guidance = None
        if self.guidance_embeds:
            guidance = torch.full([1], self.guidance_scale, device=self.device, dtype=torch.float32).expand(b)
        with torch.no_grad():
            out = self.transformer(hidden_states=packed, timestep=timestep / 1000, guidance=guidance,
                                   pooled_projections=self.pooled[idx], encoder_hidden_states=self.embeds[idx],
                                   txt_ids=self.text_ids, img_ids=self._ids(h, w), return_dict=False)[0]
        # unpack (B, hw/4, 4c) → (B, c, h, w), the inverse of _pack_latents
        out = out.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)
        return out.to(z.dtype), 1
