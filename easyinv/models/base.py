"""What the runner needs from a model: encode, decode, a timestep grid and a bound denoiser.

Stable Diffusion 1.x and SDXL (``models/stable_diffusion.py``), the flow transformers SD3 and FLUX
(``models/flow_transformer.py``) and the closed-form Gaussian models (``models/gaussian.py`` on the VP path,
``models/gaussian_flow.py`` on the flow path) all implement it, so the runner, the demo and the tests treat them alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from easyinv.inversion import Denoiser, Grid, NullTextDenoiser
from easyinv.validation import COMPILE_MODES, check_fast_paths  # the check is the config's; models re-check here

__all__ = ["COMPILE_MODES", "InversionModel", "check_fast_paths", "freeze_on", "set_tf32"]


def freeze_on(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """A frozen module on ``device``, cast only if needed (``.to(dtype)`` on a model loaded in its dtype warns)."""
    module = module.to(device)
    if next(module.parameters()).dtype != dtype:
        module = module.to(dtype)
    return module.eval().requires_grad_(False)


def set_tf32(*dtypes: torch.dtype) -> bool:
    """TF32 matmuls and convolutions on CUDA only when no part runs in fp32: precision fp32 means fp32 (cuDNN's TF32,
    on by default, would round to 10-bit mantissas). Returns whether TF32 is on."""
    tf32 = all(d != torch.float32 for d in dtypes)
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    return tf32


class InversionModel(ABC):
    """A latent diffusion model seen through the inversion protocol.

    Images are ``(B, 3, H, W)`` float32 in [-1, 1]; latents are ``(B, C, h, w)`` in ``latent_dtype`` (float32 by
    default: the trajectory is kept in float32 and cast to the network's dtype only at the network boundary).
    """

    name: str
    family: str  # model.family: "sd1", "sdxl", "sd3", "flux", "gaussian" or "gaussian_flow"
    resolution: int
    device: torch.device
    latent_dtype: torch.dtype = torch.float32

    @abstractmethod
    def grid(self, steps: int) -> Grid:
        """The DDIM grid for ``steps`` inference steps, from this model's noise schedule."""

    @abstractmethod
    def encode(self, x: Tensor, seeds: Sequence[int] | None = None) -> Tensor:
        """Image batch in [-1, 1] → scaled latent z_0 (posterior mean unless configured to sample with ``seeds``)."""

    @abstractmethod
    def decode(self, z: Tensor) -> Tensor:
        """Scaled latent → image batch in [-1, 1] (float32, not clamped)."""

    @abstractmethod
    def denoiser(
        self, prompts: Sequence[str], guidance_scale: float, negative_prompts: Sequence[str] | None = None
    ) -> Denoiser:
        """ε(z, t) bound to one prompt per row and a guidance scale (CFG only where it changes the result); the
        unconditional branch uses ``negative_prompts`` when given (one per row)."""

    def null_text_denoiser(self, prompts: Sequence[str]) -> NullTextDenoiser:
        """ε with an optimisable unconditional embedding (null-text inversion); models without one say so."""
        raise ValueError(f"model {self.name!r} has no unconditional embedding to optimise (null-text inversion)")

    def inversion_refusal(self) -> str | None:
        """Why this model, as loaded, does not invert (None: it does). Read from the weights themselves, so a folder
        given as ``model.load.source`` is judged by what it holds, not by the config's name; jobs refuse any
        inversion (method.num_steps > 0) on it before the first network call."""
        return None

    def accelerate(self, compile: str = "none", channels_last: bool = False) -> dict[str, Any]:  # noqa: A002
        """Apply GPU fast paths (``model.compile``, ``model.channels_last``); returns what was done, for run.json.

        A model without a network (the closed-form Gaussian model) has nothing to speed up.
        """
        check_fast_paths(compile, channels_last)
        return {"compile": "none", "channels_last": False, "note": "no network: GPU fast paths do not apply"}

    def describe(self) -> dict[str, Any]:
        """Facts recorded in the run manifest (scheduler config, dtypes, sources)."""
        return {"name": self.name, "family": self.family, "resolution": self.resolution}
