"""Negative-prompt inversion (NPI; Miyake et al., arXiv 2305.16807; more-methods.md §2).

Null-text inversion's optimised unconditional embeddings replaced by the source prompt's own embedding, with nothing
optimised. Inversion: DDIM with the conditional branch only (w = 1, the source prompt). Reconstruction: guidance at
the protocol's w with the source prompt as negative prompt, ε_u + w (ε_c − ε_u) with u = c, which is ε_c for any w
(the CFG-skipping denoiser evaluates it once: 50 NFE, not 100).

Under EasyInv's protocol (prompt "" and w = 1 on SD-1.x) this is DDIM inversion and reconstruction, bit for bit; it
differs only with captions and w > 1 (``experiment=table1_captions``), and in editing, where the target branch uses
the source prompt as its negative prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor

from baselines.ddim import DDIM
from easyinv.inversion import Denoisers, FiniteWatch, Grid, Inversion, invert, reconstruct
from easyinv.method_checks import check_no_blend, check_num_steps

__all__ = ["NegativePrompt"]


@dataclass(frozen=True)
class NegativePrompt:
    """NPI: conditional DDIM pivots, reconstruction with the source prompt as negative prompt."""

    # read by the job before any weight loads (easyinv.run.job_parts.check_method_on_model)
    needs_cfg: ClassVar[str | None] = "it puts the prompt into the unconditional branch of classifier-free guidance"
    unsupported_paths: ClassVar[dict[str, str]] = {}
    exact: ClassVar[bool] = False

    name: str = "negative_prompt"
    num_steps: int = 50
    blend: None = None
    negative_prompt_in_editing: bool = field(default=True, init=False)  # the editing walk's uncond rows: the prompt

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_steps", check_num_steps(self.num_steps))
        check_no_blend(self.name, self.blend)

    def nfe_per_image(self, T: int) -> tuple[int, int] | None:  # noqa: N803
        return T, T  # u = c: the guided reconstruction is ε_c, one call

    def invert(
        self, den: Denoisers, z0: Tensor, grid: Grid, seeds: tuple[int, ...], watch: FiniteWatch | None
    ) -> Inversion:
        return invert(DDIM(num_steps=self.num_steps), den.at(1.0), z0, grid, seeds, watch=watch)

    def reconstruct(self, den: Denoisers, inversion: Inversion, grid: Grid, watch: FiniteWatch | None) -> Tensor:
        eps = den.at(den.guidance["reconstruct"], negative_prompts=den.prompts)
        return reconstruct(eps, inversion.z_T, grid, watch=watch)[-1]
