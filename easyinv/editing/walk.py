"""The editing walk: source and target branches sampled together from an inversion, under an attention controller.

The walk starts both branches at the inversion's z_T and runs the UNet on the fixed layout of
:class:`~easyinv.editing.layout.RowLayout` with classifier-free guidance; the controller edits attention inside the
UNet (``easyinv.editing.attention``) and may blend latents after each step (LocalBlend). What happens to the source
branch is the *policy* (editing.md §3.4-3.5):

- ``free``: plain DDIM sampling from z_T (the "DDIM + P2P" protocol);
- ``direct_offsets``: DirectInversion. A first pass with the controller passive (same kernels, no edit) stores per
  step ``offset = z*_prev − ẑ`` against the inversion trajectory z*; the edit pass adds it to the source row after
  each step, *before* LocalBlend, so the source branch retraces the inversion and supplies clean attention;
- ``ref_latents``: MasaCtrl's variant: before each step the source row is replaced by the inversion latent of
  that level.

Any inversion of the harness feeds it: only ``Inversion.trajectory`` (z_0 … z_T) is read, and a null-text
inversion's per-step unconditional embeddings (``state["null_embeddings"]``) replace the unconditional rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from easyinv.editing.attention import EditController, install
from easyinv.editing.editor import SOURCE_POLICIES
from easyinv.editing.layout import RowLayout
from easyinv.inversion import Denoiser, FiniteWatch, Grid, ddim_step
from easyinv.models.conditioning import sdxl_time_ids, stack_conditioning

__all__ = ["EditOutcome", "EditUNet", "edit", "to_uint8_truncated"]



class EditUNet(Denoiser):
    """The SD UNet on the editing layout for B images: rows ``[u_src, u_tgt, c_src, c_tgt]``, guided per branch.

    Every call evaluates all 4B rows (no branch is skipped, so the controller always finds its rows) and costs
    4 NFE per image. ``null_embeddings`` ``(B, T, L, D)``, if given, are per-step unconditional embeddings (null-text
    inversion) used in both unconditional rows at sampling step ``n``; ``negative_prompts`` (one per image) replace
    the model's null embedding in both unconditional rows (negative-prompt inversion).
    """

    def __init__(self, model, source_prompts: Sequence[str], target_prompts: Sequence[str], guidance_scale: float,
                 null_embeddings: Tensor | None = None, negative_prompts: Sequence[str] | None = None):
        if len(source_prompts) != len(target_prompts):
            raise ValueError(f"{len(source_prompts)} source prompts for {len(target_prompts)} target prompts")
        super().__init__(len(source_prompts))
        self.layout = RowLayout(len(source_prompts))
        self.unet = model.unet
        self.guidance_scale = float(guidance_scale)
        self.vae_scale_factor = int(model.vae_scale_factor)
        param = next(self.unet.parameters())
        self.device, self.dtype = param.device, param.dtype
        if negative_prompts is None:
            null = [model.prompts.null(model.null_embedding)] * self.batch_size
        else:  # negative-prompt inversion edits with the source prompt as both branches' negative prompt
            null = [model.prompts(p) for p in negative_prompts]
        cond = [model.prompts(p) for p in source_prompts] + [model.prompts(p) for p in target_prompts]
        self._embeds, self._pooled = stack_conditioning(null + null + cond)
        self._null_steps = None if null_embeddings is None else null_embeddings.to(self.device, self.dtype)
        self._time_ids: dict[tuple[int, int], Tensor] = {}

    def predict(self, z: Tensor, t: int, rows: Tensor) -> tuple[Tensor, int]:
        raise TypeError("EditUNet evaluates both branches together: call guided(z_source, z_target, t, step)")

    def _added_cond(self, rows: int, z: Tensor) -> dict[str, Tensor] | None:
        if self._pooled is None:
            return None
        h, w = (s * self.vae_scale_factor for s in z.shape[-2:])
        if (h, w) not in self._time_ids:  # built once: no host-to-device copy inside the step loop
            self._time_ids[h, w] = torch.tensor(sdxl_time_ids(h, w), device=self.device, dtype=self.dtype)
        return {"text_embeds": self._pooled, "time_ids": self._time_ids[h, w].expand(rows, -1)}

    def guided(self, z_source: Tensor, z_target: Tensor, t: int, step: int) -> tuple[Tensor, Tensor]:
        """Guided ε of the source and the target branch, each ``(B, C, h, w)`` in the latents' dtype."""
        x = self.layout.stack(z_source, z_target)
        embeds = self._embeds
        if self._null_steps is not None:
            u = self._null_steps[:, step]
            embeds = torch.cat([u, u, embeds[2 * self.batch_size:]])

        def call() -> tuple[tuple[Tensor, Tensor], int]:
            with torch.no_grad():
                out = self.unet(x.to(self.dtype), torch.tensor(int(t), device=self.device),
                                encoder_hidden_states=embeds, added_cond_kwargs=self._added_cond(len(x), x),
                                return_dict=False)[0].to(z_source.dtype)
            return self.layout.guide(out, self.guidance_scale), 4

        return self._counted(call, torch.arange(self.batch_size), x.is_cuda)  # type: ignore[return-value]


@dataclass
class EditOutcome:
    """Final latents of both branches, NFE per image of the offset pass and the edit pass, and (when asked) the
    source branch after every sampling step (``source_path[n]`` is the latent after step n, level of
    ``trajectory[T − 1 − n]``)."""

    z_source: Tensor
    z_target: Tensor
    nfe_offsets: Tensor
    nfe_edit: Tensor
    unet_seconds: float
    source_path: list[Tensor] = field(default_factory=list, repr=False)
    first_nonfinite: list[int] = field(default_factory=list)  # per image, first sampling step with a non-finite value


def edit(
    unet: EditUNet,
    controller: EditController,
    grid: Grid,
    trajectory: Sequence[Tensor],
    source: str = "free",
    keep_source_path: bool = False,
) -> EditOutcome:
    """Sample both branches from ``trajectory[-1]`` (z_T) with ``controller`` installed on the UNet.

    ``trajectory`` is the inversion's ``[z_0, …, z_T]`` on ``grid``; ``source`` the source-branch policy.
    """
    if source not in SOURCE_POLICIES:
        raise ValueError(f"edit.source must be one of {', '.join(SOURCE_POLICIES)}, got {source!r}")
    if len(trajectory) != grid.T + 1:
        raise ValueError(f"the inversion trajectory has {len(trajectory)} latents, the grid needs {grid.T + 1}")
    layout = unet.layout
    B = layout.images  # noqa: N806
    nfe_start = unet.nfe.clone()
    offsets: list[Tensor] = []
    with install(unet.unet, controller):
        if source == "direct_offsets":
            offsets = _offsets(unet, controller, grid, trajectory, layout)
        nfe_offsets = unet.nfe - nfe_start
        controller.active = True
        controller.begin(layout)
        z_src = z_tgt = trajectory[-1]
        path: list[Tensor] = []
        watch = FiniteWatch(B, z_src.device)  # one reduction per step on the device, read back once
        for n, i in enumerate(reversed(range(grid.T))):
            controller.step = n
            if source == "ref_latents":
                z_src = trajectory[i + 1]
            eps_src, eps_tgt = unet.guided(z_src, z_tgt, grid.timesteps[i], n)
            z_src = ddim_step(z_src, eps_src, grid.alpha_tgt[i], grid.alpha_src[i])
            z_tgt = ddim_step(z_tgt, eps_tgt, grid.alpha_tgt[i], grid.alpha_src[i])
            if offsets:
                z_src = z_src + offsets[n]  # DirectInversion: before LocalBlend, as the reference does
            z_tgt = controller.after_step(z_src, z_tgt)
            watch.see(z_src, n + 1)
            watch.see(z_tgt, n + 1)
            if keep_source_path:
                path.append(z_src)
    return EditOutcome(z_source=z_src, z_target=z_tgt, nfe_offsets=nfe_offsets,
                       nfe_edit=unet.nfe - nfe_start - nfe_offsets, unet_seconds=unet.seconds, source_path=path,
                       first_nonfinite=watch.steps())


def _offsets(unet: EditUNet, controller: EditController, grid: Grid, trajectory: Sequence[Tensor],
             layout: RowLayout) -> list[Tensor]:
    """DirectInversion's offset pass, the controller passive (the same attention kernels and batch as the edit pass,
    so the source row is computed identically there): per step ``offset = z*_prev − ẑ``, and the pass carries
    ``ẑ + offset``, not z*_prev, as PnPInversion's ``offset_calculate`` does (``latent_cur = latents_prev_rec +
    loss``). The two differ in the last bit, and ẑ + offset is the very number the edit pass puts in its source row,
    so both passes evaluate the same latents and the source branch stays on the trajectory to float rounding; seeding
    the pass with z*_prev instead lets the guided steps amplify that bit with nothing to correct it."""
    controller.active = False
    controller.begin(layout)
    offsets = []
    z = trajectory[-1]
    for n, i in enumerate(reversed(range(grid.T))):
        controller.step = n
        eps_src, _ = unet.guided(z, z, grid.timesteps[i], n)
        z_hat = ddim_step(z, eps_src, grid.alpha_tgt[i], grid.alpha_src[i])
        offsets.append(trajectory[i] - z_hat)
        z = z_hat + offsets[-1]
    return offsets


def to_uint8_truncated(x: Tensor) -> Tensor:
    """Images in [-1, 1] → uint8 as PnPInversion saves them: ``(x / 2 + 0.5).clamp(0, 1) · 255`` truncated.

    (The reconstruction benchmark rounds instead, as diffusers does; see ``easyinv.metrics.to_uint8``.)"""
    if not torch.isfinite(x).all():
        raise ValueError("to_uint8_truncated: the image has non-finite pixels")
    return (x.detach().float() / 2 + 0.5).clamp(0, 1).mul(255).to(torch.uint8)
