"""The attention editors of Stable Diffusion (Prompt-to-Prompt, MasaCtrl): invert with the protocol's method, then
sample the source and the target branch together under an attention controller (``walk.edit``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from easyinv.editing.attention import EditController
from easyinv.editing.editor import EditBatch, Editor, EditResult
from easyinv.editing.walk import EditUNet, edit
from easyinv.inversion import FiniteWatch, invert_with

__all__ = ["AttentionEditor"]

UNET_FAMILIES = ("sd1", "sdxl")


@dataclass(frozen=True)
class AttentionEditor(Editor):
    """An editor that acts inside the UNet's attention through a controller built per batch."""

    def unsupported(self, model_cfg: Any, method: Any) -> str | None:
        if model_cfg.get("family") not in UNET_FAMILIES:
            return "it edits the UNet's cross- and self-attention, which only Stable Diffusion 1.x / XL have"
        return None

    def controller(self, source_prompts: Sequence[str], target_prompts: Sequence[str],
                   blend_words: Sequence[Any] | None, tokenizer: Any, num_steps: int) -> EditController:
        raise NotImplementedError

    def edit(self, batch: EditBatch) -> EditResult:
        """Invert with the editor's inversion prompt, then run the editing walk under this editor's controller."""
        model, B = batch.model, len(batch.source_prompts)  # noqa: N806
        inv_prompts = self.prompts(self.inversion_prompt, batch.source_prompts)
        src_prompts = self.prompts(self.source_prompt, batch.source_prompts)
        guidance = float(self.invert_guidance)
        den = batch.denoisers(inv_prompts, {"invert": guidance, "reconstruct": guidance})
        watch = FiniteWatch(B, batch.z0.device)
        with batch.timer("invert"):
            inversion = invert_with(batch.method, den, batch.z0, batch.grid, batch.seeds, watch=watch)
        controller = self.controller(src_prompts, batch.target_prompts, batch.blend_words,
                                     model.prompts.tokenizers[0], batch.grid.T)
        # a method may ask for its inversion prompt as the editing walk's negative prompt (negative-prompt inversion)
        negative = inv_prompts if getattr(batch.method, "negative_prompt_in_editing", False) else None
        unet = EditUNet(model, src_prompts, batch.target_prompts, self.guidance_scale,
                        null_embeddings=inversion.state.get("null_embeddings"), negative_prompts=negative)
        with batch.timer("edit"):
            outcome = edit(unet, controller, batch.grid, inversion.trajectory, self.source)
        return EditResult(inversion=inversion, z_source=outcome.z_source, z_target=outcome.z_target,
                          nfe_invert=den.nfe("invert").cpu(), nfe_offsets=outcome.nfe_offsets.cpu(),
                          nfe_edit=outcome.nfe_edit.cpu(), network_seconds=den.seconds + outcome.unet_seconds,
                          invert_nonfinite=watch.steps(), edit_nonfinite=outcome.first_nonfinite,
                          notes=controller.report())
