"""A diffusion model with a closed-form optimal denoiser: data x ~ N(μ, diag σ²) in pixel space, SD-1.x schedule.

It gives every inversion method an exact reference. Under z_t = √ᾱ x + √(1−ᾱ) n the optimal noise prediction is
E[ε | z_t] = √(1−ᾱ) (z − √ᾱ μ) / (ᾱσ² + 1 − ᾱ), and along the probability-flow ODE the standardised value
u = (z − √ᾱ μ) / √(ᾱσ² + 1 − ᾱ) is constant (in x̄ = z/√ᾱ, σ̃ = √((1−ᾱ)/ᾱ) the ODE dx̄/dσ̃ = ε solves to
x̄ − μ = u·√(σ² + σ̃²)); so the exact inversion and reconstruction are one affine map each (:meth:`exact_transport`).

Pixel space: the encoder and decoder are the identity, 3 channels, latent = image in [-1, 1], any resolution when
μ and σ are scalars. The noise schedule is SD-1.x's (scaled_linear 0.00085-0.012, 1000 steps, steps_offset 1,
final ᾱ = ᾱ_0) computed in float32 as diffusers does, so grids equal SD's.

``error`` emulates a less precise network with a fixed, deterministic, smooth perturbation
ε̂(z, t) = E[ε | z] + error · sin(ω z + φ + κ t), ω = 2, κ = 0.003, φ ~ U[0, 2π) per pixel from a fixed seed (depends
only on the latent's shape). error = 0 gives the exact predictor.

Prompts and guidance are ignored: with no conditioning both CFG branches are the same, so any guidance scale gives
the same ε; a call costs 1 NFE per row, as the SD adapters cost when guidance cannot change the result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from easyinv.inversion import Denoiser, Grid, NullTextDenoiser
from easyinv.models.base import InversionModel
from easyinv.validation import parse_dtype

__all__ = ["GaussianDenoiser", "GaussianModel", "load_folder", "sd1_alphas_cumprod"]

NUM_TRAIN_TIMESTEPS = 1000
OMEGA, KAPPA, PHASE_SEED = 2.0, 0.003, 0  # the error term's frequency in z, drift per timestep, phase seed
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
BUNDLED_SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"  # ``fit_from: samples``

def sd1_alphas_cumprod() -> Tensor:
    """ᾱ_t of SD-1.x (and SD-XL): scaled_linear betas 0.00085-0.012 over 1000 steps, in float32 like diffusers."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, NUM_TRAIN_TIMESTEPS, dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def load_folder(folder: str | Path, resolution: int) -> Tensor:
    """Every image under ``folder`` (sub-folders included, sorted by path), RGB, resized to ``resolution``² (bicubic),
    as ``(N, 3, R, R)`` in [-1, 1]."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not files:
        raise ValueError(f"model.load.fit_from: no images in {folder}")
    images = []
    for path in files:
        with Image.open(path) as im:
            rgb = im.convert("RGB").resize((resolution, resolution), Image.Resampling.BICUBIC)
        images.append(torch.from_numpy(np.asarray(rgb, dtype=np.float32).copy()).permute(2, 0, 1) / 127.5 - 1.0)
    return torch.stack(images)


class GaussianDenoiser(Denoiser):
    """ε̂(z, t) of a :class:`GaussianModel` for a batch of B rows (prompts and guidance ignored, 1 NFE per row)."""

    def __init__(self, model: GaussianModel, batch_size: int):
        super().__init__(batch_size)
        self.model = model

    def predict(self, z: Tensor, t: int, rows: Tensor) -> tuple[Tensor, int]:
        return self.model.network(z, t), 1


class GaussianNullText(NullTextDenoiser):
    """Null-text ε of the (unconditional) Gaussian model: the embedding, one number per row, enters with weight 0,
    so its gradient is exactly zero and null-text inversion reduces to DDIM (more-methods.md §1.5)."""

    def __init__(self, model: GaussianModel, batch_size: int):
        super().__init__(batch_size)
        self.model = model

    def initial_embedding(self) -> Tensor:
        return torch.zeros(self.batch_size, 1, device=self.model.device)

    def predict(self, z: Tensor, t: int, rows: Tensor) -> tuple[Tensor, int]:
        return self.model.network(z, t), 1

    def _uncond(self, z: Tensor, t: int, u: Tensor, rows: Tensor) -> Tensor:
        return self.model.network(z, t) + 0.0 * u.to(z.dtype).view(-1, 1, 1, 1)

    def _both(self, z: Tensor, t: int, u: Tensor) -> tuple[Tensor, Tensor]:
        eps = self.model.network(z, t)
        return eps, eps


class GaussianModel(InversionModel):
    """The closed-form Gaussian diffusion model (``model=gaussian``); μ, σ scalars or ``(3, H, W)`` tensors."""

    family = "gaussian"

    def __init__(
        self,
        mu: float | Tensor = 0.0,
        sigma: float | Tensor = 0.5,
        *,
        error: float = 0.0,
        name: str = "gaussian",
        resolution: int = 64,
        device: str | torch.device = "cpu",
        net_dtype: torch.dtype = torch.float32,
        latent_dtype: torch.dtype = torch.float32,
        source: str = "given",
    ):
        if not float(error) >= 0.0:
            raise ValueError(f"model.error must be >= 0, got {error}")
        self.name, self.resolution, self.error, self.source = name, int(resolution), float(error), source
        self.device = torch.device(device)
        self.net_dtype, self.latent_dtype = net_dtype, latent_dtype
        self.mu = torch.as_tensor(mu, dtype=torch.float64).to(self.device)
        self.sigma = torch.as_tensor(sigma, dtype=torch.float64).to(self.device)
        if (self.sigma < 0).any():
            raise ValueError("model.load.sigma must be >= 0")
        self.alphas_cumprod = sd1_alphas_cumprod()
        self._phases: dict[tuple[int, ...], Tensor] = {}

    # ---- construction --------------------------------------------------------------------------------------------

    @classmethod
    def fit(cls, images: Tensor, **kwargs: Any) -> GaussianModel:
        """Per-pixel mean and standard deviation (maximum likelihood) of ``images`` ``(N, 3, H, W)`` in [-1, 1]."""
        if images.ndim != 4 or images.shape[0] < 2:
            raise ValueError(f"GaussianModel.fit needs (N >= 2, 3, H, W) images, got shape {tuple(images.shape)}")
        x = images.to(torch.float64)
        kwargs.setdefault("resolution", images.shape[-1])
        return cls(x.mean(dim=0), x.std(dim=0, correction=0), **kwargs)

    @classmethod
    def build(
        cls,
        *,
        name: str,
        resolution: int,
        precision: Mapping[str, Any],
        device: str,
        mu: float = 0.0,
        sigma: float = 0.5,
        fit_from: str | None = None,
        error: float = 0.0,
        **extra: Any,
    ) -> GaussianModel:
        """Runner factory (``model.load``): μ, σ given, or fitted from a folder (``samples``: the bundled images);
        ``extra`` keys go to the constructor (a subclass's own, e.g. the flow model's ``shift``)."""
        kwargs = {
            **extra,
            "error": error,
            "name": name,
            "resolution": resolution,
            "device": device,
            "net_dtype": parse_dtype(precision.get("unet", "float32"), "precision.unet"),
            "latent_dtype": parse_dtype(precision.get("latent", "float32"), "precision.latent"),
        }
        if fit_from is None:
            return cls(float(mu), float(sigma), **kwargs)
        folder = BUNDLED_SAMPLES if str(fit_from) == "samples" else Path(fit_from)
        return cls.fit(load_folder(folder, resolution), source=f"fit:{folder}", **kwargs)

    # ---- InversionModel ----------------------------------------------------------------------------------------

    def grid(self, steps: int) -> Grid:
        return Grid.from_schedule(self.alphas_cumprod, steps, steps_offset=1, final_alpha_cumprod=None)

    def encode(self, x: Tensor, seeds: Sequence[int] | None = None) -> Tensor:
        return x.to(device=self.device, dtype=self.latent_dtype).clone()

    def decode(self, z: Tensor) -> Tensor:
        return z.to(torch.float32).clone()

    def denoiser(
        self, prompts: Sequence[str], guidance_scale: float, negative_prompts: Sequence[str] | None = None
    ) -> GaussianDenoiser:
        return GaussianDenoiser(self, len(prompts))

    def null_text_denoiser(self, prompts: Sequence[str]) -> GaussianNullText:
        return GaussianNullText(self, len(prompts))

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "mu_mean": float(self.mu.mean()),
            "sigma_mean": float(self.sigma.mean()),
            "per_pixel": self.mu.ndim > 0,
            "source": self.source,
            "error": self.error,
            "schedule": "scaled_linear 0.00085-0.012, 1000 steps, steps_offset 1, final alpha = alpha_bar_0",
            "net_dtype": str(self.net_dtype).removeprefix("torch."),
        }

    # ---- the denoiser and the exact flow -----------------------------------------------------------------------

    def _params(self, like: Tensor) -> tuple[Tensor, Tensor]:
        mu, sigma = self.mu.to(like.device, like.dtype), self.sigma.to(like.device, like.dtype)
        if mu.ndim > 0 and tuple(mu.shape) != tuple(like.shape[1:]):
            raise ValueError(f"GaussianModel fitted at {tuple(mu.shape)}, got latents {tuple(like.shape[1:])}")
        return mu, sigma

    def expected_eps(self, z: Tensor, alpha_bar: float) -> Tensor:
        """E[ε | z_t = z] at level ᾱ (exact; no error term), in ``z``'s dtype."""
        mu, sigma = self._params(z)
        return (1.0 - alpha_bar) ** 0.5 * (z - alpha_bar**0.5 * mu) / (alpha_bar * sigma**2 + (1.0 - alpha_bar))

    def _phase(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        if shape not in self._phases:
            gen = torch.Generator().manual_seed(PHASE_SEED)
            self._phases[shape] = 2.0 * math.pi * torch.rand(shape, generator=gen, dtype=torch.float64)
        return self._phases[shape].to(like.device, like.dtype)

    def network(self, z: Tensor, t: int) -> Tensor:
        """What the model's "network" returns at time input ``t``: here ε̂ (a subclass may predict otherwise)."""
        return self.eps(z, t)

    def eps(self, z: Tensor, t: int) -> Tensor:
        """ε̂(z, t) ``(B, C, H, W)``: computed in the network dtype, returned in ``z``'s dtype."""
        x = z.to(self.net_dtype)
        out = self.expected_eps(x, float(self.alphas_cumprod[int(t)]))
        if self.error > 0:
            out = out + self.error * torch.sin(OMEGA * x + self._phase(tuple(z.shape[1:]), x) + KAPPA * int(t))
        return out.to(z.dtype)

    def exact_transport(self, z: Tensor, a_from: float, a_to: float) -> Tensor:
        """Move ``z`` along the exact probability-flow ODE from level ᾱ = a_from to a_to (keeps u constant)."""
        mu, sigma = self._params(z)
        std_from = (a_from * sigma**2 + 1.0 - a_from) ** 0.5
        std_to = (a_to * sigma**2 + 1.0 - a_to) ** 0.5
        return a_to**0.5 * mu + std_to * (z - a_from**0.5 * mu) / std_from

    def exact_invert(self, z0: Tensor, grid: Grid) -> Tensor:
        """The exact z_T for the grid: z_0 (at the first source level, ᾱ_0 for SD) carried to the last target level."""
        if grid.T == 0:
            return z0.clone()
        return self.exact_transport(z0, grid.alpha_src[0], grid.alpha_tgt[-1])

    def exact_reconstruct(self, z_T: Tensor, grid: Grid) -> Tensor:  # noqa: N803
        """The exact z_0 for a given z_T: the inverse map of :meth:`exact_invert`."""
        if grid.T == 0:
            return z_T.clone()
        return self.exact_transport(z_T, grid.alpha_tgt[-1], grid.alpha_src[0])
