"""What the runner needs from a model: encode, decode, a timestep grid and a bound denoiser.

Stable Diffusion (``models/stable_diffusion.py``) and the closed-form Gaussian model (``models/gaussian.py``) both
implement it, so the runner, the demo and the tests treat them alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from easyinv.inversion import Denoiser, Grid


class InversionModel(ABC):
    """A latent diffusion model seen through the inversion protocol.

    Images are ``(B, 3, H, W)`` float32 in [-1, 1]; latents are ``(B, C, h, w)`` in ``latent_dtype`` (float32 by
    default: the trajectory is kept in float32 and cast to the network's dtype only at the network boundary).
    """

    name: str
    family: str  # "sd1", "sdxl" or "gaussian"
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
    def denoiser(self, prompts: Sequence[str], guidance_scale: float) -> Denoiser:
        """ε(z, t) bound to one prompt per row and a guidance scale (CFG only where it changes the result)."""

    def describe(self) -> dict[str, Any]:
        """Facts recorded in the run manifest (scheduler config, dtypes, sources)."""
        return {"name": self.name, "family": self.family, "resolution": self.resolution}
