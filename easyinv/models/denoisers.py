"""The Stable Diffusion UNet behind the :class:`easyinv.inversion.Denoiser` call ε(z, t).

The adapter binds one conditioning per row, the guidance scale, SD-XL's pooled vector and time ids, and the dtype
boundary (the trajectory stays in ``latent_dtype``; only the UNet's input and output are cast). Classifier-free
guidance ``ε_u + w (ε_c − ε_u)`` is evaluated only for rows where it changes the result, so the NFE counter reports
what a method costs rather than what a pipeline happened to compute (algorithms.md §1.3): SD-1.x with "" / "" at
w = 7.5 costs 1 per row, SD-XL with "" / zeros at w = 5 costs 2.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from easyinv.inversion import Denoiser
from easyinv.models.conditioning import TextConditioning, sdxl_time_ids, stack_conditioning

__all__ = ["UNetDenoiser", "branches_needed"]


def branches_needed(cond: TextConditioning, uncond: TextConditioning, guidance_scale: float) -> tuple[bool, bool]:
    """``(conditional, unconditional)`` branches that ``ε_u + w (ε_c − ε_u)`` depends on for one row.

    w = 1 or equal conditionings: ε_c alone; w = 0: ε_u alone; otherwise both.
    """
    if guidance_scale == 1.0 or cond.same_as(uncond):
        return True, False
    if guidance_scale == 0.0:
        return False, True
    return True, True


class UNetDenoiser(Denoiser):
    """ε(z, t) of an SD-1.x / SD-XL UNet for a bound batch of prompts and one guidance scale.

    ``cond`` and ``uncond`` hold one :class:`TextConditioning` per image of the batch, already on the UNet's device
    and dtype. ``vae_scale_factor`` turns the latent size into the pixel size SD-XL's time ids describe.
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        cond: Sequence[TextConditioning],
        uncond: Sequence[TextConditioning],
        guidance_scale: float,
        *,
        vae_scale_factor: int = 8,
    ):
        if len(cond) != len(uncond):
            raise ValueError(f"{len(cond)} conditional vs {len(uncond)} unconditional embeddings")
        super().__init__(len(cond))
        self.unet = unet
        self.guidance_scale = float(guidance_scale)
        self.vae_scale_factor = int(vae_scale_factor)
        self.sdxl = cond[0].pooled is not None
        param = next(unet.parameters())
        self.device, self.dtype = param.device, param.dtype
        self._cond = stack_conditioning(cond)
        self._uncond = stack_conditioning(uncond)
        need = [branches_needed(c, u, self.guidance_scale) for c, u in zip(cond, uncond, strict=True)]
        self._need_cond = torch.tensor([c for c, _ in need])
        self._need_uncond = torch.tensor([u for _, u in need])

    def _added_cond(self, pooled: Tensor | None, z: Tensor) -> dict[str, Tensor] | None:
        if not self.sdxl:
            return None
        h, w = (s * self.vae_scale_factor for s in z.shape[-2:])
        ids = torch.tensor(sdxl_time_ids(h, w), device=self.device, dtype=self.dtype)
        return {"text_embeds": pooled, "time_ids": ids.expand(pooled.shape[0], -1)}

    def predict(self, z: Tensor, t: int, rows: Tensor) -> tuple[Tensor, Tensor]:
        rows = rows.to(torch.long).cpu()
        need_c, need_u = self._need_cond[rows], self._need_uncond[rows]
        c_idx, u_idx = torch.nonzero(need_c).flatten(), torch.nonzero(need_u).flatten()
        # One UNet call: the rows needing ε_c, then the rows needing ε_u.
        z_in = torch.cat([z[c_idx.to(z.device)], z[u_idx.to(z.device)]]).to(self.dtype)
        emb_rows = torch.cat([rows[c_idx], rows[u_idx]]).to(self.device)
        embeds = torch.cat([self._cond[0], self._uncond[0]])
        pooled = None if not self.sdxl else torch.cat([self._cond[1], self._uncond[1]])
        offset = torch.cat([torch.zeros(len(c_idx), dtype=torch.long), torch.full((len(u_idx),), self.batch_size)])
        sel = emb_rows + offset.to(self.device)
        timestep = torch.tensor(int(t), device=self.device)
        with torch.no_grad():
            out = self.unet(
                z_in,
                timestep,
                encoder_hidden_states=embeds[sel],
                added_cond_kwargs=self._added_cond(None if pooled is None else pooled[sel], z_in),
                return_dict=False,
            )[0].to(z.dtype)
        eps_c = torch.zeros_like(z)  # rows that skip a branch keep zeros there; torch.where never reads them
        eps_u = torch.zeros_like(z)
        eps_c[c_idx.to(z.device)] = out[: len(c_idx)]
        eps_u[u_idx.to(z.device)] = out[len(c_idx) :]
        both = (need_c & need_u).to(z.device)
        w = self.guidance_scale
        eps = torch.where(need_c.to(z.device)[:, None, None, None], eps_c, eps_u)
        if bool(both.any()):
            guided = eps_u + w * (eps_c - eps_u)
            eps = torch.where(both[:, None, None, None], guided, eps)
        return eps, (need_c.long() + need_u.long())
