"""The fixed batch layout of an editing UNet call, shared by the walk and the attention controllers.

For B images the call holds 4B rows: ``[uncond source (B), uncond target (B), cond source (B), cond target (B)]``.
The layout never changes during a walk (no branch is skipped), so a controller can find an image's source and
target rows by index, in every layer and at every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["RowLayout"]


@dataclass(frozen=True)
class RowLayout:
    """Where the rows of B images sit in an editing call of ``4 * images`` rows."""

    images: int

    def __post_init__(self) -> None:
        if self.images < 1:
            raise ValueError(f"RowLayout needs at least one image, got {self.images}")

    @property
    def rows(self) -> int:
        return 4 * self.images

    def _block(self, k: int) -> Tensor:
        return torch.arange(k * self.images, (k + 1) * self.images)

    @property
    def uncond_source(self) -> Tensor:
        return self._block(0)

    @property
    def uncond_target(self) -> Tensor:
        return self._block(1)

    @property
    def cond_source(self) -> Tensor:
        return self._block(2)

    @property
    def cond_target(self) -> Tensor:
        return self._block(3)

    @property
    def source_rows(self) -> Tensor:
        """Source rows of both halves, ``[uncond (B), cond (B)]``, aligned with :attr:`target_rows`."""
        return torch.cat([self.uncond_source, self.cond_source])

    @property
    def target_rows(self) -> Tensor:
        """Target rows of both halves; ``target_rows[j]`` edits the image of ``source_rows[j]``."""
        return torch.cat([self.uncond_target, self.cond_target])

    def stack(self, z_source: Tensor, z_target: Tensor) -> Tensor:
        """Latents ``(B, …)`` of the two branches → the call's input ``(4B, …)`` (each branch twice: uncond, cond)."""
        return torch.cat([z_source, z_target, z_source, z_target])

    def guide(self, eps: Tensor, guidance_scale: float) -> tuple[Tensor, Tensor]:
        """The call's output ``(4B, …)`` → guided ε of the source and of the target branch, ``(B, …)`` each."""
        u_src, u_tgt, c_src, c_tgt = eps.chunk(4)
        return u_src + guidance_scale * (c_src - u_src), u_tgt + guidance_scale * (c_tgt - u_tgt)
