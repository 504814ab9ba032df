"""FlowEdit (Kulikov et al., ICCV 2025; flow-matching.md §4.6): inversion-free editing along the difference of two
velocities.

For the last ``n_max`` of T sampling steps, a fresh noise N per step puts the source at the step's level,
z_s = (1 − σ)·x_src + σ·N, the edit follows it, z_t = z_e + z_s − x_src, and the edit moves by the difference of the
target and source velocities, z_e += (σ' − σ)·[v(z_t; c_t, w_t) − v(z_s; c_s, w_s)] (averaged over ``n_avg`` noises);
the last ``n_min`` steps are plain sampling of z_t with the target prompt. Nothing is inverted: run it with
``method=vae_only`` (the source branch is then the VAE round trip), and the edit depends on the seed (one per row).

Any Gaussian path: a level (α, σ) is a rectified-flow level in the coordinates z̃ = z/(α + σ), s = σ/(α + σ), where
the velocity is ṽ = ε̂ − x̂₀ (both read off the network's output at the latent's own level). On a flow model this is
the update above, the velocity used as the network returns it; on Stable Diffusion it is the authors' ε-form,
ṽ_t − ṽ_s = [ε̂(z_t) − ε̂(z_s) − (z̃_e − x_src)]/(1 − s), so FlowEdit joins the UNet editing table too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from easyinv.editing.editor import EditBatch, EditResult
from easyinv.editing.flow_editor import FlowEditor
from easyinv.inversion import Denoiser, FiniteWatch, Inversion, Level, as_level, ddim_step

__all__ = ["FlowEditEditor", "flow_coordinates", "path_velocity", "row_noise"]


def flow_coordinates(level: float | Level) -> tuple[float, float]:
    """(c, s) of a level: z = c·z̃ with z̃ = (1 − s)·x₀ + s·ε on the rectified-flow path (c = 1, s = σ for flow)."""
    lv = as_level(level)
    if lv.prediction == "flow":
        return 1.0, lv.sigma
    c = lv.alpha + lv.sigma
    return c, lv.sigma / c


def path_velocity(level: float | Level, z: Tensor, out: Tensor) -> Tensor:
    """The rectified-flow velocity ε̂ − x̂₀ of the network output ``out`` at ``z``'s level (itself on flow models)."""
    lv = as_level(level)
    if lv.prediction == "flow":
        return out
    x0, eps = lv.split(z, out)
    return eps - x0


def row_noise(like: Tensor, generators: list[torch.Generator]) -> Tensor:
    """One standard normal draw per row from that row's generator: a batch draws what single runs draw."""
    return torch.stack([torch.randn(like.shape[1:], generator=g, dtype=like.dtype, device="cpu")
                        for g in generators]).to(like.device)


@dataclass(frozen=True)
class FlowEditEditor(FlowEditor):
    """FlowEdit's knobs: ``num_steps`` T, ``n_max`` / ``n_min`` / ``n_avg``, ``source_guidance`` w_s and
    ``guidance_scale`` w_t (defaults FLUX.1-dev's: T 28, n_max 24, 1.5 / 5.5; SD3: 50, 33, 3.5 / 13.5)."""

    name: str = "flowedit"
    num_steps: int | None = 28
    n_max: int = 24
    n_min: int = 0
    n_avg: int = 1
    guidance_scale: float = 5.5
    source_guidance: float | None = 1.5
    paths: ClassVar[tuple[str, ...]] = ("flow", "vp")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_steps is None:
            raise ValueError("edit.num_steps must be set for flowedit (it builds its own grid)")
        if not 0 <= self.n_min <= self.n_max <= self.num_steps:
            raise ValueError(f"flowedit needs 0 <= n_min <= n_max <= num_steps, got n_min={self.n_min}, "
                             f"n_max={self.n_max}, num_steps={self.num_steps}")
        if self.n_avg < 1:
            raise ValueError(f"edit.n_avg must be >= 1, got {self.n_avg}")

    def unsupported(self, model_cfg: Any, method: Any) -> str | None:
        if int(getattr(method, "num_steps", 0)) != 0:
            return "FlowEdit is inversion-free: run it with method=vae_only"
        return super().unsupported(model_cfg, method)

    def edit(self, batch: EditBatch) -> EditResult:
        B, z0 = len(batch.source_prompts), batch.z0  # noqa: N806
        grid = batch.model.grid(int(self.num_steps))
        T = grid.T  # noqa: N806
        den_s = self.denoisers(batch, self.prompts(self.source_prompt, batch.source_prompts), self.source_w)
        den_t = self.denoisers(batch, list(batch.target_prompts), float(self.guidance_scale))
        eps_s, eps_t = den_s.for_phase(), den_t.for_phase()
        generators = [torch.Generator().manual_seed(int(s)) for s in batch.seeds]
        watch = FiniteWatch(B, z0.device)
        z_e, x_tar = z0.clone(), None
        with batch.timer("edit"):
            for n, i in enumerate(reversed(range(T))):
                if T - n > self.n_max:
                    continue
                here, there, t = grid.alpha_tgt[i], grid.alpha_src[i], grid.timesteps[i]
                c, s = flow_coordinates(here)
                if T - n > self.n_min:
                    dv = self._delta(eps_s, eps_t, z0, z_e, here, t, c, s, generators)
                    z_e = z_e + (flow_coordinates(there)[1] - s) * dv
                    watch.see(z_e, n + 1)
                    continue
                if x_tar is None:  # the last n_min steps: plain sampling of z_t with the target prompt
                    z_s = c * ((1.0 - s) * z0 + s * row_noise(z0, generators))
                    x_tar = z_s + c * (z_e - z0)
                x_tar = ddim_step(x_tar, eps_t(x_tar, t), here, there)
                watch.see(x_tar, n + 1)
        z_edit = z_e if x_tar is None else x_tar  # the latent at the grid's last level, as sampling ends there
        nothing = Inversion(z_T=z0, trajectory=[z0], nfe=torch.zeros(B, dtype=torch.long))
        zero = torch.zeros(B, dtype=torch.long)
        return EditResult(inversion=nothing, z_source=z0, z_target=z_edit, nfe_invert=zero, nfe_offsets=zero,
                          nfe_edit=den_s.nfe("reconstruct").cpu() + den_t.nfe("reconstruct").cpu(),
                          network_seconds=den_s.seconds + den_t.seconds, invert_nonfinite=[-1] * B,
                          edit_nonfinite=watch.steps(), fields={"nfe_source": 0})

    def _delta(self, eps_s: Denoiser, eps_t: Denoiser, x_src: Tensor, z_e: Tensor, level: float | Level,
               t: int | float, c: float, s: float, generators: list[torch.Generator]) -> Tensor:
        """The mean over ``n_avg`` noises of ṽ(z_t; target) − ṽ(z_s; source) at one level."""
        total: Tensor | None = None
        for _ in range(self.n_avg):
            z_s = c * ((1.0 - s) * x_src + s * row_noise(x_src, generators))
            z_t = z_s + c * (z_e - x_src)  # equals z_s exactly while the edit is still the source
            diff = path_velocity(level, z_t, eps_t(z_t, t)) - path_velocity(level, z_s, eps_s(z_s, t))
            total = diff if total is None else total + diff
        assert total is not None
        return total if self.n_avg == 1 else total / self.n_avg
