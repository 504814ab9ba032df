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

from easyinv.inversion import Denoiser, NullTextDenoiser
from easyinv.models.conditioning import TextConditioning, sdxl_time_ids, stack_conditioning

__all__ = ["UNetDenoiser", "UNetNullTextDenoiser", "branches_needed"]


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
        c, u = stack_conditioning(cond), stack_conditioning(uncond)
        # rows 0..B-1 conditional, B..2B-1 unconditional: each call gathers the rows it evaluates from these
        self._embeds = torch.cat([c[0], u[0]])
        self._pooled = torch.cat([c[1], u[1]]) if self.sdxl else None
        self._time_ids: dict[tuple[int, int], Tensor] = {}
        need = [branches_needed(c, u, self.guidance_scale) for c, u in zip(cond, uncond, strict=True)]
        self._need_cond = torch.tensor([c for c, _ in need])
        self._need_uncond = torch.tensor([u for _, u in need])
        self._any_both = any(c and u for c, u in need)  # guidance arithmetic needed for some row
        self._plans: dict[tuple[int, ...], tuple[Tensor, ...]] = {}
        self._timesteps: dict[int, Tensor] = {}

    def _added_cond(self, pooled: Tensor | None, z: Tensor) -> dict[str, Tensor] | None:
        if not self.sdxl:
            return None
        h, w = (s * self.vae_scale_factor for s in z.shape[-2:])
        if (h, w) not in self._time_ids:
            self._time_ids[h, w] = torch.tensor(sdxl_time_ids(h, w), device=self.device, dtype=self.dtype)
        return {"text_embeds": pooled, "time_ids": self._time_ids[h, w].expand(pooled.shape[0], -1)}

    def _plan(self, rows: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Index tensors for one set of rows, built once and kept on the device: no host-to-device copy (and so no
        stall of the CUDA queue) inside the step loop. Rows needing ε_c come first in the call, then those needing ε_u.
        """
        key = tuple(rows.tolist())
        if key not in self._plans:
            need_c, need_u = self._need_cond[rows], self._need_uncond[rows]
            c_idx, u_idx = torch.nonzero(need_c).flatten(), torch.nonzero(need_u).flatten()
            sel = torch.cat([rows[c_idx], rows[u_idx] + self.batch_size])  # rows of the stacked (cond, uncond) embeds
            both = need_c & need_u
            dev = self.device
            self._plans[key] = (c_idx.to(dev), u_idx.to(dev), sel.to(dev), need_c.to(dev)[:, None, None, None],
                                both.to(dev)[:, None, None, None], need_c.long() + need_u.long())
        return self._plans[key]

    def _timestep(self, t: int) -> Tensor:
        if t not in self._timesteps:
            self._timesteps[t] = torch.tensor(t, device=self.device)
        return self._timesteps[t]

    def predict(self, z: Tensor, t: int, rows: Tensor) -> tuple[Tensor, Tensor]:
        c_idx, u_idx, sel, need_c, both, cost = self._plan(rows.to(torch.long).cpu())
        z_in = torch.cat([z[c_idx], z[u_idx]]).to(self.dtype)  # one UNet call for both branches
        with torch.no_grad():
            out = self.unet(
                z_in,
                self._timestep(t),
                encoder_hidden_states=self._embeds[sel],
                added_cond_kwargs=self._added_cond(None if self._pooled is None else self._pooled[sel], z_in),
                return_dict=False,
            )[0].to(z.dtype)
        eps_c = torch.zeros_like(z)  # rows that skip a branch keep zeros there; torch.where never reads them
        eps_u = torch.zeros_like(z)
        eps_c[c_idx] = out[: len(c_idx)]
        eps_u[u_idx] = out[len(c_idx) :]
        eps = torch.where(need_c, eps_c, eps_u)
        if self._any_both:
            eps = torch.where(both, eps_u + self.guidance_scale * (eps_c - eps_u), eps)
        return eps, cost


class UNetNullTextDenoiser(NullTextDenoiser):
    """The SD UNet with an explicit, optimisable unconditional embedding per row (null-text inversion).

    The conditional branch uses the prompts' embeddings; the unconditional one takes ``u`` ``(B, L, D)`` (float32,
    cast to the UNet's dtype at the call) and, on SD-XL, the null pooled vector. The UNet is frozen: autograd reaches
    ``u`` only.
    """

    def __init__(self, unet: torch.nn.Module, cond: Sequence[TextConditioning], null: TextConditioning, *,
                 vae_scale_factor: int = 8):
        super().__init__(len(cond))
        self.unet = unet
        param = next(unet.parameters())
        self.device, self.dtype = param.device, param.dtype
        self._cond, self._cond_pooled = stack_conditioning(cond)
        self._null, self._null_pooled = stack_conditioning([null] * len(cond))
        self.vae_scale_factor = int(vae_scale_factor)

    def initial_embedding(self) -> Tensor:
        return self._null.float().clone()

    def _forward(self, z: Tensor, t: int, embeds: Tensor, pooled: Tensor | None) -> Tensor:
        added = None
        if pooled is not None:
            h, w = (s * self.vae_scale_factor for s in z.shape[-2:])
            ids = torch.tensor(sdxl_time_ids(h, w), device=self.device, dtype=self.dtype)
            added = {"text_embeds": pooled.to(self.dtype), "time_ids": ids.expand(z.shape[0], -1)}
        out = self.unet(z.to(self.dtype), torch.tensor(t, device=self.device),
                        encoder_hidden_states=embeds.to(self.dtype), added_cond_kwargs=added, return_dict=False)[0]
        return out.to(z.dtype)

    def predict(self, z: Tensor, t: int, rows: Tensor) -> tuple[Tensor, int]:
        idx = rows.to(self.device)
        pooled = None if self._cond_pooled is None else self._cond_pooled[idx]
        with torch.no_grad():
            return self._forward(z, t, self._cond[idx], pooled), 1

    def _uncond(self, z: Tensor, t: int, u: Tensor, rows: Tensor) -> Tensor:
        pooled = None if self._null_pooled is None else self._null_pooled[rows.to(self.device)]
        return self._forward(z, t, u, pooled)

    def _both(self, z: Tensor, t: int, u: Tensor) -> tuple[Tensor, Tensor]:
        pooled = None if self._cond_pooled is None else torch.cat([self._cond_pooled, self._null_pooled])
        with torch.no_grad():
            out = self._forward(torch.cat([z, z]), t, torch.cat([self._cond, u.to(self._cond.dtype)]), pooled)
        return out[: len(z)], out[len(z) :]
