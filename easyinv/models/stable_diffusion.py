"""Stable Diffusion 1.x and SD-XL seen through :class:`~easyinv.models.base.InversionModel`.

The runner builds it with ``hydra.utils.instantiate(cfg.model.load, name=..., resolution=..., precision=...,
device=...)``, which lands in :meth:`StableDiffusionModel.from_pretrained`. Real checkpoints, the tiny offline models
(``models/tiny.py``) and the random full-size SD-1.4 (``models/full_size.py``) all end in the same constructor.

Dtypes (``configs/precision``): UNet and text encoders in ``precision["unet"]``, VAE in ``precision["vae"]``
(float32 by default: SD-XL's VAE gives NaNs in fp16, ecosystem.md §2.4), latents and trajectory in
``precision["latent"]``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from easyinv.inversion import Denoiser, Grid
from easyinv.models.base import InversionModel, check_fast_paths, freeze_on, set_tf32
from easyinv.models.conditioning import PromptEncoder, check_time_embedding, resolve_null_embedding
from easyinv.models.denoisers import UNetDenoiser, UNetNullTextDenoiser
from easyinv.models.loading import FAMILIES, Components, load_components
from easyinv.models.scheduler import build_ddim_scheduler, grid_from_scheduler, scheduler_facts
from easyinv.validation import parse_dtype, resolve_device

__all__ = ["StableDiffusionModel"]

log = logging.getLogger(__name__)


class StableDiffusionModel(InversionModel):
    """An SD-1.x (``family="sd1"``) or SD-XL (``"sdxl"``) checkpoint: VAE, DDIM grid and a bound denoiser."""

    def __init__(
        self,
        components: Components,
        family: str,
        *,
        name: str,
        resolution: int | None = None,
        precision: Mapping[str, Any] | None = None,
        device: str | torch.device | None = "cpu",
        vae_sample: bool = False,
        null_embedding: str = "auto",
        source: str | None = None,
    ):
        if family not in FAMILIES:
            raise ValueError(f"model.family must be one of {FAMILIES}, got {family!r}")
        precision = dict(precision or {})
        self.name = name
        self.family = family
        self.device = resolve_device(device)
        self.unet_dtype = parse_dtype(precision.get("unet", "float32"), "precision.unet")
        self.vae_dtype = parse_dtype(precision.get("vae", "float32"), "precision.vae")
        self.latent_dtype = parse_dtype(precision.get("latent", "float32"), "precision.latent")
        self.source = source
        self.vae_sample = bool(vae_sample)

        self.unet = freeze_on(components.unet, self.device, self.unet_dtype)
        self.unet_fn: torch.nn.Module = self.unet  # what the denoiser calls: the UNet, or its torch.compile wrapper
        self.fast_paths: dict[str, Any] = {"compile": "none", "channels_last": False}
        self.vae = freeze_on(components.vae, self.device, self.vae_dtype)
        encoders = [freeze_on(te, self.device, self.unet_dtype) for te in components.text_encoders]
        self.prompts = PromptEncoder(family, components.tokenizers, encoders, self.device)
        if family == "sdxl":
            check_time_embedding(self.unet, self.prompts.projection_dim)
        if self.vae_dtype == torch.float16 and getattr(self.vae.config, "force_upcast", False):
            log.warning("precision.vae=float16 on a VAE marked force_upcast (SD-XL): expect NaNs in encode/decode")

        origin = f"{source or name}/scheduler"
        self.scheduler = build_ddim_scheduler(components.scheduler_config, family, origin)
        self.force_zeros_for_empty_prompt = bool(components.model_index.get("force_zeros_for_empty_prompt", False))
        self.null_embedding = resolve_null_embedding(null_embedding, family, self.force_zeros_for_empty_prompt)
        self.scaling_factor = float(self.vae.config.scaling_factor)
        shift = getattr(self.vae.config, "shift_factor", None)
        self.shift_factor = float(shift) if shift is not None else 0.0
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        # like the pipelines: the UNet's sample size in pixels (512 SD-1.x, 1024 SD-XL) unless the config says
        self.resolution = int(resolution or int(self.unet.config.sample_size) * self.vae_scale_factor)
        if self.resolution % self.vae_scale_factor:
            raise ValueError(f"model.resolution={self.resolution} is not a multiple of the VAE factor "
                             f"{self.vae_scale_factor}")

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike,
        family: str,
        *,
        name: str | None = None,
        resolution: int | None = None,
        precision: Mapping[str, Any] | None = None,
        device: str | torch.device | None = "cpu",
        vae_sample: bool = False,
        null_embedding: str = "auto",
        variant: str | None = None,
        local_files_only: bool | None = None,
    ) -> StableDiffusionModel:
        """Load a diffusers folder or hub id (see :func:`easyinv.models.loading.load_components` for errors).

        Weights are loaded directly in their target dtypes, so an fp16 run never holds an fp32 copy.
        """
        precision = dict(precision or {})
        components = load_components(
            source,
            family,
            unet_dtype=parse_dtype(precision.get("unet", "float32"), "precision.unet"),
            vae_dtype=parse_dtype(precision.get("vae", "float32"), "precision.vae"),
            variant=variant,
            local_files_only=local_files_only,
        )
        return cls(
            components,
            family,
            name=name or os.path.basename(os.fspath(source).rstrip("/")),
            resolution=resolution,
            precision=precision,
            device=device,
            vae_sample=vae_sample,
            null_embedding=null_embedding,
            source=os.fspath(source),
        )

    def accelerate(self, compile: str = "none", channels_last: bool = False) -> dict[str, Any]:  # noqa: A002
        """``torch.compile`` the UNet (``mode`` = ``compile`` unless "none") and/or store it channels-last, on CUDA
        only: on the CPU both are skipped with a logged reason, so a config meant for a GPU still runs here.

        Compilation happens at the first call; the runner makes that call before the first image and records its
        time apart from every per-image timing.
        """
        check_fast_paths(compile, channels_last)
        if self.device.type != "cuda":
            if compile != "none" or channels_last:
                log.info("model.compile=%s, model.channels_last=%s: GPU fast paths, not applied on %s", compile,
                         channels_last, self.device.type)
                self.fast_paths = {"compile": "none", "channels_last": False,
                                   "note": f"requested compile={compile}, channels_last={channels_last}; "
                                           f"not applied on {self.device.type}"}
            return dict(self.fast_paths)
        tf32 = set_tf32(self.unet_dtype, self.vae_dtype)
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)
        if compile != "none":
            self.unet_fn = torch.compile(self.unet, mode=None if compile == "default" else compile)
        self.fast_paths = {"compile": compile, "channels_last": bool(channels_last), "tf32": tf32}
        return dict(self.fast_paths)

    def attention(self) -> dict[str, Any]:
        """Which attention implementation the UNet runs: diffusers' processor classes (``AttnProcessor2_0`` is
        PyTorch's scaled_dot_product_attention) and, on CUDA, which SDPA kernels PyTorch may pick."""
        info: dict[str, Any] = {"processors": sorted({type(p).__name__ for p in self.unet.attn_processors.values()})}
        if self.device.type == "cuda":
            info["sdpa_kernels"] = {"flash": torch.backends.cuda.flash_sdp_enabled(),
                                    "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                                    "math": torch.backends.cuda.math_sdp_enabled()}
        return info

    # -- inversion protocol ----------------------------------------------------------------------------------------

    def grid(self, steps: int) -> Grid:
        return grid_from_scheduler(self.scheduler, steps)

    @torch.no_grad()
    def encode(self, x: Tensor, seeds: Sequence[int] | None = None) -> Tensor:
        """``(B, 3, H, W)`` in [-1, 1] → ``(B, 4, H/8, W/8)`` scaled latent in ``latent_dtype``.

        Posterior mean by default (EasyInv, PnP); with ``vae_sample`` the posterior is sampled with one CPU generator
        per row seeded by ``seeds``, so a row's latent is the same in any batch and on any device.
        """
        posterior = self.vae.encode(x.to(self.device, self.vae_dtype)).latent_dist
        z = posterior.mean
        if self.vae_sample:
            if seeds is None or len(seeds) != x.shape[0]:
                raise ValueError("model.load.vae_sample=true needs one seed per image")
            noise = torch.stack(
                [torch.randn(z.shape[1:], generator=torch.Generator("cpu").manual_seed(int(s))) for s in seeds]
            )
            z = z + posterior.std * noise.to(z.device, z.dtype)
        return ((z.to(self.latent_dtype) - self.shift_factor) * self.scaling_factor).contiguous()

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """Scaled latent → ``(B, 3, H, W)`` float32 image in [-1, 1] (not clamped)."""
        z = z.to(self.device, self.latent_dtype) / self.scaling_factor + self.shift_factor
        return self.vae.decode(z.to(self.vae_dtype), return_dict=False)[0].float()

    def denoiser(
        self, prompts: Sequence[str], guidance_scale: float, negative_prompts: Sequence[str] | None = None
    ) -> Denoiser:
        """ε(z, t) for one prompt per row; the unconditional branch follows ``null_embedding`` unless
        ``negative_prompts`` are given (one per row)."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence with one prompt per image, not a single string")
        cond = [self.prompts(p) for p in prompts]
        if negative_prompts is None:
            uncond = [self.prompts.null(self.null_embedding)] * len(prompts)
        else:
            if len(negative_prompts) != len(prompts):
                raise ValueError(f"{len(negative_prompts)} negative prompts for {len(prompts)} prompts")
            uncond = [self.prompts(p) for p in negative_prompts]
        return UNetDenoiser(self.unet_fn, cond, uncond, guidance_scale, vae_scale_factor=self.vae_scale_factor)

    def null_text_denoiser(self, prompts: Sequence[str]) -> UNetNullTextDenoiser:
        """ε with an optimisable unconditional embedding, starting from this model's null (null-text inversion)."""
        cond = [self.prompts(p) for p in prompts]
        return UNetNullTextDenoiser(self.unet, cond, self.prompts.null(self.null_embedding),
                                    vae_scale_factor=self.vae_scale_factor)

    def describe(self) -> dict[str, Any]:
        facts = super().describe()
        facts.update(
            source=self.source,
            device=str(self.device),
            dtypes={"unet": str(self.unet_dtype), "vae": str(self.vae_dtype), "latent": str(self.latent_dtype)},
            scheduler=scheduler_facts(self.scheduler),
            vae_scaling_factor=self.scaling_factor,
            vae_scale_factor=self.vae_scale_factor,
            vae_sample=self.vae_sample,
            null_embedding=self.null_embedding,
            force_zeros_for_empty_prompt=self.force_zeros_for_empty_prompt,
            fast_paths=dict(self.fast_paths),
            attention=self.attention(),
            parameters={
                "unet": sum(p.numel() for p in self.unet.parameters()),
                "vae": sum(p.numel() for p in self.vae.parameters()),
                "text_encoders": sum(p.numel() for te in self.prompts.text_encoders for p in te.parameters()),
            },
        )
        return facts
