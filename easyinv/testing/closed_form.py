"""The closed-form models and the round trip the kit's checks run on (offline, CPU, milliseconds per call).

Every check of :class:`~easyinv.testing.methods.MethodContract` inverts and reconstructs a few random images on the
Gaussian model of a path (``configs/model/gaussian.yaml`` for ``vp``, ``gaussian_flow.yaml`` for ``flow``) whose
network is made imprecise on purpose (``error``): an exact network would let an approximate method look exact. For
the "any network" half of the exactness check, :class:`SmoothNetwork` is a smooth function that denoises nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from easyinv.inversion import Denoiser, Denoisers, Inversion, invert_with, reconstruct_with
from easyinv.models.gaussian import GaussianModel
from easyinv.models.gaussian_flow import GaussianFlowModel

__all__ = ["MODEL_OF_PATH", "RoundTrip", "SmoothNetwork", "closed_form_model", "images", "round_trip"]

MODEL_OF_PATH = {"vp": "gaussian", "flow": "gaussian_flow"}  # the closed-form model config of each path
SEEDS = (1, 2, 3)  # one per image of a round trip


def closed_form_model(path: str, dtype: torch.dtype = torch.float64, error: float = 0.05,
                      resolution: int = 8) -> GaussianModel | GaussianFlowModel:
    """The closed-form model of ``path`` with per-pixel data statistics drawn from a fixed seed and an imprecise
    network (``error``), its network and latents in ``dtype``."""
    gen = torch.Generator().manual_seed(4)
    mu = (torch.rand(3, resolution, resolution, generator=gen, dtype=torch.float64) - 0.5) * 0.8
    s = 0.1 + 0.5 * torch.rand(3, resolution, resolution, generator=gen, dtype=torch.float64)
    cls = GaussianModel if path == "vp" else GaussianFlowModel
    return cls(mu, s, error=error, resolution=resolution, net_dtype=dtype, latent_dtype=dtype)


class SmoothNetwork(Denoiser):
    """ε(z, t) = tanh(1.3 z + φ + 0.003 t): deterministic and smooth, but no denoiser; a method declared exact must
    round-trip through it too (``exact`` means "for any network output")."""

    def __init__(self, batch_size: int, phase: Tensor):
        super().__init__(batch_size)
        self.phase = phase  # (C, H, W), the same for every image

    def predict(self, z: Tensor, t: Any, rows: Tensor) -> tuple[Tensor, int]:
        return torch.tanh(1.3 * z + self.phase.to(z.dtype) + 0.003 * float(t)), 1


@dataclass
class RoundTrip:
    """One inversion and reconstruction: the encoded images, the inversion, the reconstruction, the denoisers (their
    NFE per phase) and the relative error ‖z − z₀‖ / ‖z₀‖."""

    z0: Tensor
    inversion: Inversion
    z: Tensor
    denoisers: Denoisers
    error: float


def images(n: int, resolution: int, scales: tuple[float, ...] | None = None) -> Tensor:
    """``n`` random images in [-1, 1] from a fixed seed; ``scales`` gives each its own contrast (images that converge
    at different speeds, for the batch check)."""
    gen = torch.Generator().manual_seed(0)
    scale = torch.tensor(scales or (0.5,) * n).view(n, 1, 1, 1)
    return (scale * torch.randn(n, 3, resolution, resolution, generator=gen)).clamp(-1, 1)


def round_trip(method: Any, model: GaussianModel | GaussianFlowModel, x: Tensor | None = None,
               seeds: tuple[int, ...] = SEEDS, network: str = "model") -> RoundTrip:
    """Invert ``x`` (default: three random images) with ``method`` on ``model`` and reconstruct, as the job does
    (guidance 1 both ways, the empty prompt, one seed per image). ``network="smooth"``: :class:`SmoothNetwork`
    instead of the model's network."""
    x = images(len(seeds), model.resolution) if x is None else x
    n = x.shape[0]
    z0 = model.encode(x).to(model.latent_dtype)
    prompts = [""] * n
    phase = torch.rand(*x.shape[1:], generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def make(w: float, negative: Any = None) -> Denoiser:
        return SmoothNetwork(n, phase) if network == "smooth" else model.denoiser(prompts, w, negative)

    den = Denoisers(make, prompts, {"invert": 1.0, "reconstruct": 1.0},
                    null_text=lambda: model.null_text_denoiser(prompts))
    grid = model.grid(method.num_steps)
    inversion = invert_with(method, den, z0, grid, list(seeds[:n]))
    den.phase = "reconstruct"
    z = reconstruct_with(method, den, inversion, grid)
    return RoundTrip(z0, inversion, z, den, float((z - z0).norm() / z0.norm()))
