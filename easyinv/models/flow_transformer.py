"""Stable Diffusion 3 / 3.5 and FLUX.1 seen through :class:`~easyinv.models.base.InversionModel`.

Flow-matching transformers predict the rectified-flow velocity; the core steps them with the same update as DDIM
(``easyinv.inversion.ddim_step`` on flow levels is Euler). What is model-specific lives here:

- loading: each component from a local diffusers folder (or hub id), a missing subfolder named in one line;
- the σ grid, taken from the checkpoint's own ``FlowMatchEulerDiscreteScheduler`` exactly as the pipelines call it
  (SD3: ``set_timesteps(T)``, shifted by the config's ``shift``; FLUX: ``sigmas = linspace(1, 1/T, T)`` with the
  resolution-dependent ``mu`` of the packed token count), walked backwards for inversion (flow-matching.md §2, §7);
- the network time input: SD3 takes 1000·σ, FLUX σ (the pipeline's ``timestep / 1000``) and its guidance scale as an
  input (distilled guidance: 1 row per call); SD3 takes classifier-free guidance (2 rows where it changes the result,
  off at w ≤ 1 as in its pipeline);
- the VAE's ``scaling_factor`` and ``shift_factor``: z = (E(x) − shift)·scale, x = D(z/scale + shift);
- FLUX's 2×2-packed latents and image ids, only at the transformer boundary: methods see ``(B, 16, h, w)``.

Prompts are encoded by the diffusers pipeline's own ``encode_prompt`` (built from the loaded components, never used
to sample), so the conditioning is the pipeline's: SD3's CLIP-L, CLIP-G and T5, FLUX's CLIP-L pooled vector and T5.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from easyinv.inversion import Denoiser, Grid, NullTextDenoiser
from easyinv.models.base import InversionModel, check_fast_paths, freeze_on, set_tf32
from easyinv.models.loading import ModelNotFoundError, hub_offline
from easyinv.validation import parse_dtype, resolve_device

__all__ = ["FLOW_FAMILIES", "FlowTransformerModel", "flow_grid", "load_flow_pipeline"]

log = logging.getLogger(__name__)

FLOW_FAMILIES = ("sd3", "flux")
_REQUIRED = {
    "sd3": ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3", "tokenizer", "tokenizer_2",
            "tokenizer_3", "scheduler"),
    "flux": ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"),
}
_HUB_IDS = {"sd3": "stabilityai/stable-diffusion-3-medium-diffusers", "flux": "black-forest-labs/FLUX.1-dev"}
_UNSUPPORTED_SCHEDULER_KEYS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "shift_terminal",
                               "stochastic_sampling", "invert_sigmas")
MAX_SEQUENCE_LENGTH = {"sd3": 256, "flux": 512}  # T5 tokens, the pipelines' defaults
PROMPT_CACHE = 4  # prompt lists whose encodings are kept (a batch's prompts, its negatives, "")


def _check_folder(source: str | os.PathLike, family: str) -> tuple[str, bool]:
    """``(source, local_files_only)``; a folder must hold the family's subfolders, else one line naming them."""
    if family not in FLOW_FAMILIES:
        raise ValueError(f"model.family must be one of {FLOW_FAMILIES} for a flow transformer, got {family!r}")
    path = Path(os.fspath(source)).expanduser()
    hint = (f"download it with `huggingface-cli download {_HUB_IDS[family]} --local-dir {path}`, or point "
            f"paths.models at the folder that holds {path.name}/")
    if path.exists():
        missing = [sub for sub in _REQUIRED[family] if not (path / sub).is_dir()]
        if missing:
            raise ModelNotFoundError(f"model folder {path} is not a {family} checkpoint (missing "
                                     f"{', '.join(missing)}); {hint}")
        return str(path), True
    if "/" not in os.fspath(source) or os.fspath(source).startswith((".", "/", "~")):
        raise ModelNotFoundError(f"model folder {path} does not exist; {hint}")
    return os.fspath(source), hub_offline()


def load_flow_pipeline(
    source: str | os.PathLike,
    family: str,
    *,
    transformer_dtype: torch.dtype = torch.float32,
    vae_dtype: torch.dtype = torch.float32,
    local_files_only: bool | None = None,
) -> Any:
    """The diffusers pipeline object of an SD3 or FLUX folder, its components loaded one by one in their dtypes
    (text encoders in the transformer's). Nothing is moved to a device here."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

    src, local_only = _check_folder(source, family)
    if local_files_only is not None:
        local_only = bool(local_files_only)
    common: dict[str, Any] = {"local_files_only": local_only}
    try:
        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(src, subfolder="scheduler", **common)
        vae = AutoencoderKL.from_pretrained(src, subfolder="vae", dtype=vae_dtype, **common)
        tokenizer = CLIPTokenizer.from_pretrained(src, subfolder="tokenizer", **common)
        if family == "sd3":
            parts = {
                "transformer": SD3Transformer2DModel.from_pretrained(src, subfolder="transformer",
                                                                     dtype=transformer_dtype, **common),
                "text_encoder": CLIPTextModelWithProjection.from_pretrained(src, subfolder="text_encoder",
                                                                            dtype=transformer_dtype, **common),
                "text_encoder_2": CLIPTextModelWithProjection.from_pretrained(src, subfolder="text_encoder_2",
                                                                              dtype=transformer_dtype, **common),
                "text_encoder_3": T5EncoderModel.from_pretrained(src, subfolder="text_encoder_3",
                                                                 dtype=transformer_dtype, **common),
                "tokenizer_2": CLIPTokenizer.from_pretrained(src, subfolder="tokenizer_2", **common),
                "tokenizer_3": T5TokenizerFast.from_pretrained(src, subfolder="tokenizer_3", **common),
            }
            return StableDiffusion3Pipeline(scheduler=scheduler, vae=vae, tokenizer=tokenizer, **parts)
        parts = {
            "transformer": FluxTransformer2DModel.from_pretrained(src, subfolder="transformer", dtype=transformer_dtype,
                                                                  **common),
            "text_encoder": CLIPTextModel.from_pretrained(src, subfolder="text_encoder", dtype=transformer_dtype,
                                                          **common),
            "text_encoder_2": T5EncoderModel.from_pretrained(src, subfolder="text_encoder_2", dtype=transformer_dtype,
                                                             **common),
            "tokenizer_2": T5TokenizerFast.from_pretrained(src, subfolder="tokenizer_2", **common),
        }
        return FluxPipeline(scheduler=scheduler, vae=vae, tokenizer=tokenizer, **parts)
    except (OSError, ValueError) as err:
        if Path(src).is_dir():
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelNotFoundError(f"model {src!r} could not be loaded ({first}); download "
                                 f"{_HUB_IDS[family]} into a local folder and point model.load.source at it") from None


def check_flow_scheduler(scheduler: Any, origin: str) -> dict[str, Any]:
    """The scheduler must be the flow-matching Euler scheduler with none of the σ transforms the walk does not
    reproduce; returns the facts recorded in ``run.json``."""
    name = type(scheduler).__name__
    if name != "FlowMatchEulerDiscreteScheduler":
        raise ValueError(f"{origin}: expected FlowMatchEulerDiscreteScheduler, got {name}")
    config = dict(scheduler.config)
    on = [k for k in _UNSUPPORTED_SCHEDULER_KEYS if config.get(k)]
    if on:
        raise ValueError(f"{origin}: scheduler options {on} are not reproduced by the inversion grid")
    keys = ("shift", "use_dynamic_shifting", "base_shift", "max_shift", "base_image_seq_len", "max_image_seq_len",
            "num_train_timesteps", "time_shift_type")
    return {"class": name, **{k: config.get(k) for k in keys}}


def flow_grid(pipe: Any, family: str, steps: int, latent_hw: tuple[int, int]) -> Grid:
    """The pipeline's σ list and timesteps for ``steps`` sampling steps at a latent of ``latent_hw``, as an ascending
    flow grid: level 0 is the data (σ = 0, time 0), level T the pipeline's first σ. The time input of each level is
    the scheduler's timestep (1000·σ in float32); the FLUX denoiser divides it by 1000 as its pipeline does."""
    if steps == 0:
        return Grid(timesteps=(), alpha_src=(), alpha_tgt=())
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    scheduler = pipe.scheduler
    config = scheduler.config
    h, w = latent_hw
    kwargs: dict[str, Any] = {}
    if family == "flux" or config.get("use_dynamic_shifting", None):  # the resolution-dependent shift μ
        patch = 2 if family == "flux" else int(pipe.transformer.config.patch_size)  # FLUX's packing, SD3's patches
        tokens = (h // patch) * (w // patch)
        kwargs["mu"] = calculate_shift(tokens, config.get("base_image_seq_len", 256),
                                       config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5),
                                       config.get("max_shift", 1.15 if family == "flux" else 1.16))  # each pipeline's
    if family == "flux":
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), device="cpu", **kwargs)
    else:
        scheduler.set_timesteps(steps, device="cpu", **kwargs)
    sigmas_desc = scheduler.sigmas.tolist()  # T + 1 values, the last 0
    times_desc = scheduler.timesteps.tolist()
    if len(sigmas_desc) != steps + 1 or sigmas_desc[-1] != 0.0:
        raise ValueError(f"unexpected sigma schedule of {len(sigmas_desc)} values ending at {sigmas_desc[-1]}")
    levels = [0.0, *reversed(sigmas_desc[:-1])]
    times = [0.0, *reversed(times_desc)]
    return Grid.from_sigmas(levels, times)


class FlowTransformerModel(InversionModel):
    """An SD3 / SD3.5 (``family="sd3"``) or FLUX.1 (``"flux"``) checkpoint: VAE, flow grid and a bound velocity."""

    def __init__(self, pipe: Any, family: str, *, name: str, resolution: int | None = None,
                 precision: Mapping[str, Any] | None = None, device: str | torch.device | None = "cpu",
                 source: str | None = None, max_sequence_length: int | None = None):
        if family not in FLOW_FAMILIES:
            raise ValueError(f"model.family must be one of {FLOW_FAMILIES}, got {family!r}")
        precision = dict(precision or {})
        self.name, self.family, self.source = name, family, source
        self.device = resolve_device(device)
        self.transformer_dtype = parse_dtype(precision.get("unet", "float32"), "precision.unet")
        self.vae_dtype = parse_dtype(precision.get("vae", "float32"), "precision.vae")
        self.latent_dtype = parse_dtype(precision.get("latent", "float32"), "precision.latent")
        for part in ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
            module = getattr(pipe, part, None)
            if module is not None:  # text encoders in the transformer's dtype (they feed it), the VAE in its own
                dtype = self.vae_dtype if part == "vae" else self.transformer_dtype
                setattr(pipe, part, freeze_on(module, self.device, dtype))
        self.pipe = pipe
        self.transformer = pipe.transformer
        self.transformer_fn: torch.nn.Module = self.transformer  # what the denoisers call: it, or its compiled form
        self.vae = pipe.vae
        self.scheduler_facts = check_flow_scheduler(pipe.scheduler, f"{source or name}/scheduler")
        self.scaling_factor = float(self.vae.config.scaling_factor)
        shift = getattr(self.vae.config, "shift_factor", None)
        self.shift_factor = float(shift) if shift is not None else 0.0
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.guidance_embeds = bool(getattr(self.transformer.config, "guidance_embeds", False))
        self.max_sequence_length = int(max_sequence_length or MAX_SEQUENCE_LENGTH[family])
        self._prompt_cache: dict[tuple[str, ...], tuple[Tensor, Tensor, Tensor | None]] = {}
        default = int(getattr(pipe, "default_sample_size", 128)) * self.vae_scale_factor
        self.resolution = int(resolution or default)
        multiple = self.vae_scale_factor * (2 if family == "flux" else int(self.transformer.config.patch_size))
        if self.resolution % multiple:
            raise ValueError(f"model.resolution={self.resolution} must be a multiple of {multiple} for {family}")

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, family: str, *, name: str | None = None,
                        resolution: int | None = None, precision: Mapping[str, Any] | None = None,
                        device: str | torch.device | None = "cpu", local_files_only: bool | None = None,
                        max_sequence_length: int | None = None) -> FlowTransformerModel:
        """Load a diffusers folder or hub id (one :class:`ModelNotFoundError` line when it is not there)."""
        precision = dict(precision or {})
        pipe = load_flow_pipeline(source, family,
                                  transformer_dtype=parse_dtype(precision.get("unet", "float32"), "precision.unet"),
                                  vae_dtype=parse_dtype(precision.get("vae", "float32"), "precision.vae"),
                                  local_files_only=local_files_only)
        return cls(pipe, family, name=name or Path(os.fspath(source)).name, resolution=resolution,
                   precision=precision, device=device, source=os.fspath(source),
                   max_sequence_length=max_sequence_length)

    def inversion_refusal(self) -> str | None:
        """FLUX.1-schnell, told by its transformer: no guidance embedding (``guidance_embeds: false``; FLUX.1-dev has
        one), timestep-distilled for 1-4 sampling steps (its scheduler: shift 1.0, no dynamic shifting). No
        published solver inverts it (flow-matching.md §7), whatever the config's name says."""
        if self.family != "flux" or self.guidance_embeds:
            return None
        facts = self.scheduler_facts
        schnell_scheduler = not facts.get("use_dynamic_shifting") and float(facts.get("shift") or 1.0) == 1.0
        scheduler = "; its scheduler has shift 1.0 and no dynamic shifting" if schnell_scheduler else ""
        return (f"its FLUX transformer has no guidance embedding (guidance_embeds: false{scheduler}): FLUX.1-schnell, "
                "timestep-distilled, which no published solver inverts")

    def accelerate(self, compile: str = "none", channels_last: bool = False) -> dict[str, Any]:  # noqa: A002
        """On CUDA: TF32 only when no part runs in fp32, and ``torch.compile`` of the transformer (``mode`` =
        ``compile`` unless "none"); ``channels_last`` has no meaning for a transformer. Skipped, with the reason
        recorded, on the CPU."""
        check_fast_paths(compile, channels_last)
        if self.device.type != "cuda":
            note = f"requested compile={compile}, channels_last={channels_last}; not applied on {self.device.type}"
            return {"compile": "none", "channels_last": False, "note": note}
        tf32 = set_tf32(self.transformer_dtype, self.vae_dtype)
        if compile != "none":
            self.transformer_fn = torch.compile(self.transformer, mode=None if compile == "default" else compile)
        return {"compile": compile, "channels_last": False, "tf32": tf32,
                **({"note": "channels_last does not apply to a transformer"} if channels_last else {})}

    # -- inversion protocol ----------------------------------------------------------------------------------------

    def latent_hw(self) -> tuple[int, int]:
        side = self.resolution // self.vae_scale_factor
        return side, side

    def grid(self, steps: int) -> Grid:
        return flow_grid(self.pipe, self.family, steps, self.latent_hw())

    @torch.no_grad()
    def encode(self, x: Tensor, seeds: Sequence[int] | None = None) -> Tensor:
        """``(B, 3, H, W)`` in [-1, 1] → ``(B, 16, H/8, W/8)``: (posterior mean − shift)·scale."""
        z = self.vae.encode(x.to(self.device, self.vae_dtype)).latent_dist.mean
        return ((z.to(self.latent_dtype) - self.shift_factor) * self.scaling_factor).contiguous()

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        z = z.to(self.device, self.latent_dtype) / self.scaling_factor + self.shift_factor
        return self.vae.decode(z.to(self.vae_dtype), return_dict=False)[0].float()

    @torch.no_grad()
    def _encode_prompts(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor, Tensor | None]:
        """(embeddings, pooled, FLUX's text ids) for one prompt per row, as the pipeline encodes them. The last few
        prompt lists are kept: a batch asks again for each phase (and SD3 for "" as its negative)."""
        key = tuple(prompts)
        if key not in self._prompt_cache:
            if self.family == "sd3":
                embeds, _, pooled, _ = self.pipe.encode_prompt(
                    prompt=list(prompts), prompt_2=None, prompt_3=None, device=self.device,
                    do_classifier_free_guidance=False, max_sequence_length=self.max_sequence_length)
                text_ids = None
            else:
                embeds, pooled, text_ids = self.pipe.encode_prompt(
                    prompt=list(prompts), prompt_2=None, device=self.device,
                    max_sequence_length=self.max_sequence_length)
            if len(self._prompt_cache) >= PROMPT_CACHE:
                self._prompt_cache.pop(next(iter(self._prompt_cache)))  # the oldest
            self._prompt_cache[key] = (embeds, pooled, text_ids)
        return self._prompt_cache[key]

    def denoiser(self, prompts: Sequence[str], guidance_scale: float,
                 negative_prompts: Sequence[str] | None = None) -> Denoiser:
        """v(z, t) for one prompt per row: SD3 with classifier-free guidance against ``negative_prompts`` (default
        ""; off at w ≤ 1, as in its pipeline), FLUX with the guidance scale as its guidance input (a negative prompt
        has no meaning there)."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence with one prompt per image, not a single string")
        from easyinv.models.flow_denoisers import FluxDenoiser, SD3Denoiser

        embeds, pooled, text_ids = self._encode_prompts(prompts)
        if self.family == "flux":
            if negative_prompts is not None:
                raise ValueError(f"model {self.name!r} (FLUX) has distilled guidance: no unconditional branch, so no "
                                 "negative prompt")
            return FluxDenoiser(self.transformer_fn, embeds, pooled, text_ids, guidance_scale,
                                guidance_embeds=self.guidance_embeds)
        negative = list(negative_prompts) if negative_prompts is not None else [""] * len(prompts)
        if len(negative) != len(prompts):
            raise ValueError(f"{len(negative)} negative prompts for {len(prompts)} prompts")
        n_embeds, n_pooled, _ = self._encode_prompts(negative)
        return SD3Denoiser(self.transformer_fn, embeds, pooled, n_embeds, n_pooled, guidance_scale)

    def null_text_denoiser(self, prompts: Sequence[str]) -> NullTextDenoiser:
        """SD3: v with an optimisable unconditional sequence embedding starting from ""'s (null-text inversion)."""
        if self.family != "sd3":
            return super().null_text_denoiser(prompts)
        from easyinv.models.flow_denoisers import SD3NullTextDenoiser

        embeds, pooled, _ = self._encode_prompts(prompts)
        null_embeds, null_pooled, _ = self._encode_prompts([""] * len(prompts))
        return SD3NullTextDenoiser(self.transformer, embeds, pooled, null_embeds, null_pooled)

    def describe(self) -> dict[str, Any]:
        facts = super().describe()
        facts.update(
            source=self.source, device=str(self.device), path="flow",
            dtypes={"transformer": str(self.transformer_dtype), "vae": str(self.vae_dtype),
                    "latent": str(self.latent_dtype)},
            scheduler=self.scheduler_facts, vae_scaling_factor=self.scaling_factor, vae_shift_factor=self.shift_factor,
            guidance="distilled (an input)" if self.family == "flux" else "classifier-free",
            guidance_embeds=self.guidance_embeds, max_sequence_length=self.max_sequence_length,
            parameters={"transformer": sum(p.numel() for p in self.transformer.parameters()),
                        "vae": sum(p.numel() for p in self.vae.parameters())},
        )
        return facts
