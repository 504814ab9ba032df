"""One editing job: PIE-Bench items through encode → invert (any method) → edit walk → decode → editing metrics.

It is the reconstruction :class:`~easyinv.run.reconstruction.Job` with another per-batch computation: the same resuming,
sharding, records, fp32 fallback, OOM halving and PNG writing apply. The config adds ``edit`` (the editor, its
knobs and the source-branch policy) and ``edit_metrics``; a record is named by its protocol
``<inversion>+<policy>+<editor>`` (editing.md §6.2) and holds the source branch's reconstruction metrics
(``psnr``, ``ssim``, ``lpips`` against the source image) beside PnPInversion's eight editing metrics.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from easyinv.data.base import Item
from easyinv.editing.editor import EditBatch
from easyinv.editing.walk import to_uint8_truncated
from easyinv.metrics import to_uint8
from easyinv.run.files import edit_png_path, recon_png_path, ref_png_path, save_png
from easyinv.run.job_parts import PhaseTimer, bind_denoisers, images_to_tensor, method_label
from easyinv.run.reconstruction import Job
from easyinv.run.records import flatten

__all__ = ["EditJob"]

log = logging.getLogger(__name__)


class EditJob(Job):
    """A job whose config has an ``edit`` group: every item is inverted, then edited from its source to its target
    prompt; the dataset must carry PIE-Bench's fields (``dataset=piebench`` or ``dataset=mini_piebench``)."""

    edits = True  # check_config builds the editor, lets its protocol fix T and checks the pairing and the dataset

    def __init__(self, cfg: DictConfig, run_dir: Path, overrides: Any = ()):
        super().__init__(cfg, run_dir, overrides)
        self.method_name = self.label
        editor_label = method_label(self.editor.name, overrides, group="edit", leave=("source",))
        self.protocol = f"{self.label}+{self.editor.source}+{editor_label}"
        self.label = self.protocol  # names the PNG folders and the report's rows
        self.extra.update(flatten({"edit": OmegaConf.to_container(cfg.edit, resolve=True)}))

    def run(self) -> float | None:
        from easyinv.editing.metrics import EditMetrics

        # missing DINO / CLIP / LPIPS weights stop the job here, before any model loads
        self.edit_metrics = EditMetrics(self.cfg.get("edit_metrics"), device=self.device)
        return super().run()

    def _base_row(self, item: Item, seed: int) -> dict[str, Any]:
        row = super()._base_row(item, seed)
        row.update(protocol=self.protocol, editor=self.editor.name, source_policy=self.editor.source,
                   inversion=self.method_name, edit_type=item.meta.get("edit_type"),
                   source_prompt=item.meta.get("source_prompt"), target_prompt=item.meta.get("target_prompt"))
        # what else moves published editing numbers (flow-matching.md §6): the prompts' brackets, the edit types run
        types = getattr(self.dataset, "edit_types", None)
        row.update(prompt_brackets=getattr(self.dataset, "brackets", "as given"),
                   edit_type_set="all" if types is None else ",".join(str(t) for t in types))
        return row

    def _save_pngs(self, item: Item, ref: np.ndarray, rec: Any) -> None:
        recon, edited = rec
        save_png(ref, ref_png_path(self.run_dir, item.id))
        save_png(recon, recon_png_path(self.run_dir, self.protocol, item.id))
        save_png(edited, edit_png_path(self.run_dir, self.protocol, item.id))

    def _to_uint8(self, x: torch.Tensor) -> np.ndarray:
        x = torch.nan_to_num(x.float().cpu())
        u8 = to_uint8_truncated(x) if self.editor.uint8 == "truncate" else to_uint8(x)
        return u8.permute(0, 2, 3, 1).numpy()

    @torch.no_grad()
    def _compute(self, items: list[Item], images: np.ndarray, seeds: list[int], model: Any = None
                 ) -> tuple[list[dict[str, Any]], list[tuple[np.ndarray, np.ndarray]]]:
        """One batch: the editor inverts and edits; both branches are decoded and measured."""
        model = model if model is not None else self.model
        B = len(items)  # noqa: N806
        timer = PhaseTimer(self.device)
        with timer("encode"):
            z0 = model.encode(images_to_tensor(images, self.device), seeds)
        batch = EditBatch(model=model, method=self.method, grid=self.grid, z0=z0, seeds=tuple(int(s) for s in seeds),
                          source_prompts=[str(it.meta.get("source_prompt", "")) for it in items],
                          target_prompts=[str(it.meta.get("target_prompt", "")) for it in items],
                          blend_words=[it.meta.get("blend_words") for it in items],
                          denoisers=lambda prompts, guidance: bind_denoisers(model, prompts, guidance), timer=timer)
        result = self.editor.edit(batch)
        with timer("decode"):
            x_both = model.decode(torch.cat([result.z_source, result.z_target]))
        finite = torch.isfinite(x_both).flatten(1).all(1).cpu()
        recon_u8, edit_u8 = np.split(self._to_uint8(x_both), 2)
        with timer("metrics"):
            recon_scores = self.metrics.measure(recon_u8, images)
            edit_scores = [self._edit_scores(item, edited) for item, edited in zip(items, edit_u8, strict=True)]
        unet_s = result.network_seconds / B
        phases = {f"t_{k}": v / B for k, v in timer.seconds.items()}
        comparable = self.edit_metrics.comparable
        notes, inv_steps = result.notes, result.invert_nonfinite
        out = []
        for b in range(B):
            nfe = int(result.nfe_invert[b] + result.nfe_offsets[b] + result.nfe_edit[b])
            row: dict[str, Any] = {
                "nfe": nfe, "nfe_invert": int(result.nfe_invert[b]), "nfe_offsets": int(result.nfe_offsets[b]),
                "nfe_edit": int(result.nfe_edit[b]), "state_bytes": result.inversion.state_bytes(), **phases,
                "t_total": sum(phases.values()), "unet_seconds": unet_s, "ms_per_nfe": 1000 * unet_s / max(nfe, 1),
                "structure_comparable": bool(comparable.get("structure")),
                "clip_comparable": bool(comparable.get("clip")),
                "bg_lpips_comparable": bool(comparable.get("lpips")),
                **_notes(notes[b] if b < len(notes) else {}), **result.fields,
                **(result.row_fields[b] if b < len(result.row_fields) else {}),
            }
            failure = (f"invert step {inv_steps[b]}" if inv_steps[b] >= 0 else
                       f"edit step {result.edit_nonfinite[b]}" if result.edit_nonfinite[b] >= 0 else
                       "decode" if not (finite[b] and finite[B + b]) else None)
            if failure:
                row |= {"status": "nonfinite", "reason": "non-finite values in the edit", "first_failure": failure}
            else:
                row |= {"status": "ok", "reason": "", **recon_scores[b], **edit_scores[b]}
            out.append(row)
        return out, list(zip(recon_u8, edit_u8, strict=True))

    def _edit_scores(self, item: Item, edited: np.ndarray) -> dict[str, float]:
        """PnPInversion's metrics on the 512×512 grid of the masks: the source image as the dataset holds it, the
        edit resized there (bicubic) when the model works at another resolution."""
        mask = self.dataset.edit_mask(item)
        source = self.dataset.load(item, mask.shape[0])
        if edited.shape[:2] != mask.shape:
            edited = np.array(Image.fromarray(edited).resize(mask.shape[::-1], Image.Resampling.BICUBIC))
        return self.edit_metrics.measure(source, edited, mask, str(item.meta.get("source_prompt", "")),
                                         str(item.meta.get("target_prompt", "")))


def _notes(note: dict[str, Any]) -> dict[str, Any]:
    """The controller's per-image notes (e.g. whether each blend word was found in its prompt) as record fields:
    primitives as they are, lists as JSON; the image index is the row itself."""
    import json

    names = {"missing": "missing_words"}
    return {names.get(key, key): (value if isinstance(value, (str, int, float, bool)) or value is None
                                  else json.dumps(value))
            for key, value in note.items() if key != "image"}
