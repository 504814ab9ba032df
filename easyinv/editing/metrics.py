"""PIE-Bench editing metrics of PnPInversion (Table 1 of the paper), per image, in memory (editing.md §2, §6.3).

``EditMetrics.measure(source, edit, mask, source_prompt, target_prompt)`` returns one dict of floats.

With ``pnp_compat: true`` (default) the keys and semantics are the reference's, quirks included:

==========================================  =========================================================================
``structure_distance``                      DINO ViT-B/8 last-block key self-similarity distance, inputs 0–255 (§2.2)
``psnr_unedit_part``                        PSNR (data_range 1) of source × (1 − mask) vs edit × (1 − mask), over all
                                            values including the zeroed edit region (inflated by the mask area)
``mse_unedit_part``                         MSE of the same multiplied images, over all values (deflated likewise)
``ssim_unedit_part``                        SSIM (torchmetrics defaults, data_range 1) of the multiplied images
``lpips_unedit_part``                       LPIPS-squeeze of the multiplied images mapped ×2 − 1 (edit region → −1)
``clip_similarity_target_image``            CLIP score of the edit vs the target prompt
``clip_similarity_target_image_edit_part``  CLIP score of edit × mask (masked, not cropped) vs the target prompt
``clip_similarity_source_image``            CLIP score of the source vs the source prompt
``mask_area``                               fraction of pixels in the edit mask (not a reference metric)
==========================================  =========================================================================

``*_unedit_part`` are NaN when the background (1 − mask) is empty, the edit-part CLIP score when the mask is empty
(the reference writes the string "nan" there).

With ``pnp_compat: false`` cleaner variants are reported under *other* names, never mixed with Table-1 numbers:

==============================  =====================================================================================
``structure_distance_unit``     the same DINO distance on inputs divided by 255 first ([0, 1], as ImageNet
                                normalisation expects)
``psnr_background``             PSNR over background pixels only (no zeroed region diluting the error)
``mse_background``              MSE over background pixels only
``ssim_background``             SSIM map of the unmasked images, averaged over background pixels
``lpips_background``            LPIPS-squeeze spatial map of the unmasked images, averaged over background pixels
``clip_target_image``           CLIP score of the edit vs the target prompt (same computation as the reference)
``clip_source_image``           CLIP score of the source vs the source prompt (likewise)
``clip_edit_region_cropped``    CLIP score of the edit cropped to the mask's bounding box (with PIE-Bench's forced
                                1-px mask frame the box is the whole image: decode masks without the border rule)
``mask_area``                   as above
==============================  =====================================================================================

``jpeg_quality`` (e.g. 75) JPEG-encodes and decodes the edit with PIL before scoring: the reference scored the JPEG
files its editing scripts saved. ``random_for_tests`` lets missing weights fall back to tiny seeded random models
(DINO, CLIP) and a random LPIPS trunk; :attr:`EditMetrics.comparable` says per family whether real weights were used,
and the report marks the others † "not comparable".
"""

from __future__ import annotations

import importlib.metadata
import io
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchmetrics.functional import mean_squared_error
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from easyinv.checksums import file_sha256
from easyinv.editing.clip_score import CLIP_REPO, ClipScorer, ClipWeightsMissingError
from easyinv.editing.dino import (
    DINO_URL,
    DinoWeightsMissingError,
    StructureDistance,
    load_dino_vitb8,
    tiny_dino_vit,
)
from easyinv.metrics import TRUNK_FILES, TRUNK_URL, LpipsTrunkMissingError, default_trunk_path, load_lpips

__all__ = ["CLEAN_KEYS", "DEFAULTS", "KEY_FAMILY", "PNP_KEYS", "EditMetrics", "jpeg_roundtrip"]

log = logging.getLogger(__name__)

PNP_KEYS = (
    "structure_distance",
    "psnr_unedit_part",
    "lpips_unedit_part",
    "mse_unedit_part",
    "ssim_unedit_part",
    "clip_similarity_target_image",
    "clip_similarity_target_image_edit_part",
    "clip_similarity_source_image",
    "mask_area",
)
CLEAN_KEYS = (
    "structure_distance_unit",
    "psnr_background",
    "lpips_background",
    "mse_background",
    "ssim_background",
    "clip_target_image",
    "clip_edit_region_cropped",
    "clip_source_image",
    "mask_area",
)
# Which model each value depends on (None: no learned weights), so a report can mark random-model values †.
KEY_FAMILY: dict[str, str | None] = {
    "structure_distance": "structure", "structure_distance_unit": "structure",
    "lpips_unedit_part": "lpips", "lpips_background": "lpips",
    "clip_similarity_target_image": "clip", "clip_similarity_target_image_edit_part": "clip",
    "clip_similarity_source_image": "clip", "clip_target_image": "clip", "clip_edit_region_cropped": "clip",
    "clip_source_image": "clip",
    "psnr_unedit_part": None, "mse_unedit_part": None, "ssim_unedit_part": None, "psnr_background": None,
    "mse_background": None, "ssim_background": None, "mask_area": None,
}
DEFAULTS: dict[str, Any] = {
    "pnp_compat": True,
    "jpeg_quality": None,
    "random_for_tests": False,
    "dino": {"path": None, "antialias": False},
    "clip": {"path": None},
    "lpips": {"trunk_path": None},
    "seed": 0,
}
NAN = float("nan")


def jpeg_roundtrip(image_u8: np.ndarray, quality: int) -> np.ndarray:
    """JPEG-encode a uint8 (H, W, 3) image with PIL at ``quality`` (default 4:2:0 subsampling) and decode it again."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image_u8)).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB")).copy()


def _validated(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults merged with ``cfg``; unknown keys (top level or in a group) raise one ValueError naming them."""
    cfg = {k: v for k, v in cfg.items() if k != "_target_"}
    stray = sorted(set(cfg) - set(DEFAULTS))
    if stray:
        raise ValueError(f"edit_metrics: unknown keys {stray}; allowed: {sorted(DEFAULTS)}")
    out: dict[str, Any] = {}
    for key, default in DEFAULTS.items():
        value = cfg.get(key, default)
        if isinstance(default, dict):
            value = {} if value is None else value
            if not isinstance(value, Mapping):
                raise ValueError(f"edit_metrics.{key}: expected a mapping, got {value!r}")
            stray = sorted(set(value) - set(default))
            if stray:
                raise ValueError(f"edit_metrics.{key}: unknown keys {stray}; allowed: {sorted(default)}")
            value = {**default, **dict(value)}
        out[key] = value
    quality = out["jpeg_quality"]
    if quality is not None and (isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100):
        raise ValueError(f"edit_metrics.jpeg_quality: expected null or an int in [1, 100], got {quality!r}")
    for key in ("pnp_compat", "random_for_tests"):
        if not isinstance(out[key], bool):
            raise ValueError(f"edit_metrics.{key}: expected true or false, got {out[key]!r}")
    if isinstance(out["seed"], bool) or not isinstance(out["seed"], int):
        raise ValueError(f"edit_metrics.seed: expected an int, got {out['seed']!r}")
    if not isinstance(out["dino"]["antialias"], bool):
        raise ValueError(f"edit_metrics.dino.antialias: expected true or false, got {out['dino']['antialias']!r}")
    return out


def _path(value: Any) -> Path | None:
    return Path(str(value)).expanduser() if value not in (None, "") else None


class EditMetrics:
    """The PIE-Bench editing metrics for one (source, edit, mask, prompts) at a time; all models built up front.

    ``EditMetrics(cfg.edit_metrics, device=...)``, ``instantiate(cfg.edit_metrics)`` or keywords (keywords win).
    Missing weights stop here, before any image is scored, with one line naming the file — unless
    ``random_for_tests`` is true, in which case that family falls back to a random model and is not comparable.
    """

    def __init__(self, cfg: Mapping[str, Any] | None = None, *, device: str | torch.device = "cpu",
                 **overrides: Any) -> None:
        self.cfg = _validated({**dict(cfg or {}), **overrides})
        self.device = torch.device(device)
        self.pnp_compat: bool = self.cfg["pnp_compat"]
        self.jpeg_quality: int | None = self.cfg["jpeg_quality"]
        self.antialias: bool = self.cfg["dino"]["antialias"]
        random_ok: bool = self.cfg["random_for_tests"]
        seed = int(self.cfg["seed"])

        # Check every file before loading anything, so a long run fails in its first second.
        dino_path, clip_path = _path(self.cfg["dino"]["path"]), _path(self.cfg["clip"]["path"])
        trunk_cfg = _path(self.cfg["lpips"]["trunk_path"])
        trunk_path = trunk_cfg or default_trunk_path("squeeze")
        use_dino = dino_path is not None and dino_path.is_file()
        use_clip = clip_path is not None and clip_path.is_dir()
        if not random_ok:
            if not use_dino:
                raise DinoWeightsMissingError(
                    f"edit_metrics.dino.path: DINO ViT-B/8 weights not found at {dino_path or '(not set)'}; download "
                    f"{DINO_URL} on a machine with network and point the path at it"
                )
            if not use_clip:
                raise ClipWeightsMissingError(
                    f"edit_metrics.clip.path: CLIP folder not found at {clip_path or '(not set)'}; it must be a local "
                    f"copy of the Hugging Face repository {CLIP_REPO}"
                )
            if not trunk_path.is_file():
                raise LpipsTrunkMissingError(
                    f"edit_metrics.lpips.trunk_path: LPIPS-squeeze trunk not found at {trunk_path}; download "
                    f"{TRUNK_URL}{TRUNK_FILES['squeeze']} there (null = $TORCH_HOME/hub/checkpoints)"
                )

        if use_dino:
            dino = load_dino_vitb8(dino_path)
        else:
            log.warning("edit metrics: DINO weights not found at %s: tiny RANDOM ViT (seed %d), structure distance "
                        "not comparable", dino_path, seed)
            dino = tiny_dino_vit(seed)
        self.structure = StructureDistance(dino, unit_range=not self.pnp_compat, antialias=self.antialias,
                                           device=self.device)
        self.dino_path = dino_path if use_dino else None

        if use_clip:
            self.clip = ClipScorer.from_folder(clip_path, device=self.device)
        else:
            log.warning("edit metrics: CLIP folder not found at %s: tiny RANDOM CLIP (seed %d), CLIP scores not "
                        "comparable", clip_path, seed + 1)
            self.clip = ClipScorer.tiny(seed + 1, device=self.device)

        lpips_path = trunk_cfg if trunk_cfg is not None and trunk_cfg.is_file() else None
        self.lpips_model, self.lpips_info = load_lpips(net="squeeze", trunk_path=lpips_path, random_trunk=random_ok,
                                                       seed=seed + 2)
        self.lpips_model.to(self.device)
        self._sha: dict[str, str | None] = {}

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], device: str | torch.device = "cpu") -> EditMetrics:
        """Same as ``EditMetrics(cfg, device=device)``."""
        return cls(cfg, device=device)

    # ----------------------------------------------------------------------------------------------------------------

    @property
    def comparable(self) -> dict[str, bool]:
        """Per model family, whether real weights were used (False ⇒ values marked † not comparable)."""
        return {
            "structure": self.dino_path is not None,
            "clip": self.clip.comparable,
            "lpips": bool(self.lpips_info.get("lpips_comparable", False)),
        }

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys :meth:`measure` returns in this mode."""
        return PNP_KEYS if self.pnp_compat else CLEAN_KEYS

    @torch.no_grad()
    def measure(self, source_u8: np.ndarray, edit_u8: np.ndarray, mask: np.ndarray, source_prompt: str,
                target_prompt: str) -> dict[str, float]:
        """Score one edit; ``mask`` (H, W) is True in the edit region. Returns :attr:`keys` → float (NaN if empty)."""
        source, edit, mask = self._check(source_u8, edit_u8, mask)
        if self.jpeg_quality is not None:
            edit = jpeg_roundtrip(edit, self.jpeg_quality)
        if self.pnp_compat:
            values = self._reference(source, edit, mask, source_prompt, target_prompt)
        else:
            values = self._clean(source, edit, mask, source_prompt, target_prompt)
        values["mask_area"] = float(mask.mean())
        return {key: float(values[key]) for key in self.keys}

    def _check(self, source: Any, edit: Any, mask: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        source, edit, mask = np.asarray(source), np.asarray(edit), np.asarray(mask)
        for name, image in (("source", source), ("edit", edit)):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
                got = f"{image.dtype} {image.shape}"
                raise ValueError(f"EditMetrics.measure: {name} must be uint8 (H, W, 3), got {got}")
        if source.shape != edit.shape:
            raise ValueError(f"EditMetrics.measure: source {source.shape} and edit {edit.shape} differ in shape")
        if mask.shape != source.shape[:2]:
            raise ValueError(f"EditMetrics.measure: mask {mask.shape} does not match the images {source.shape[:2]}")
        if mask.dtype != np.bool_:
            if not np.isin(mask, (0, 1)).all():
                raise ValueError("EditMetrics.measure: mask must be boolean (or 0/1)")
            mask = mask.astype(bool)
        return source, edit, mask

    def _unit(self, image_u8: np.ndarray) -> Tensor:
        """uint8 (H, W, 3) → float32 (1, 3, H, W) in [0, 1] on the device."""
        image = torch.from_numpy(np.array(image_u8)).to(self.device)  # a copy: read-only arrays are fine too
        return image.permute(2, 0, 1).unsqueeze(0).float().contiguous() / 255.0

    def _reference(self, source: np.ndarray, edit: np.ndarray, mask: np.ndarray, source_prompt: str,
                   target_prompt: str) -> dict[str, float]:
        """PnPInversion's definitions: background by multiplication with (1 − mask), edit region masked not cropped."""
        values: dict[str, float] = {"structure_distance": self.structure(source, edit)}
        if mask.all():  # (1 − mask) is all zero
            values.update(psnr_unedit_part=NAN, mse_unedit_part=NAN, ssim_unedit_part=NAN, lpips_unedit_part=NAN)
        else:
            background = torch.from_numpy(~mask).to(self.device, torch.float32)[None, None]  # broadcast over RGB
            src, edt = self._unit(source) * background, self._unit(edit) * background
            values["psnr_unedit_part"] = float(peak_signal_noise_ratio(edt, src, data_range=1.0))
            values["mse_unedit_part"] = float(mean_squared_error(edt, src))  # over all 3·H·W values
            values["ssim_unedit_part"] = float(structural_similarity_index_measure(edt, src, data_range=1.0))
            values["lpips_unedit_part"] = float(self.lpips_model(edt * 2 - 1, src * 2 - 1).flatten()[0])
        values["clip_similarity_target_image"] = self.clip.score(edit, target_prompt)
        values["clip_similarity_target_image_edit_part"] = (
            self.clip.score(edit * mask[..., None].astype(np.uint8), target_prompt) if mask.any() else NAN
        )
        values["clip_similarity_source_image"] = self.clip.score(source, source_prompt)
        return values

    def _clean(self, source: np.ndarray, edit: np.ndarray, mask: np.ndarray, source_prompt: str,
               target_prompt: str) -> dict[str, float]:
        """Variants without the reference's dilution by the masked region, under their own names."""
        values: dict[str, float] = {"structure_distance_unit": self.structure(source, edit)}
        background = ~mask
        if not background.any():
            values.update(psnr_background=NAN, mse_background=NAN, ssim_background=NAN, lpips_background=NAN)
        else:
            src, edt = self._unit(source), self._unit(edit)
            bg = torch.from_numpy(background).to(self.device)
            mse = float((edt - src).pow(2).double()[..., bg].mean())  # (1, 3, n_background) → all values
            values["mse_background"] = mse
            values["psnr_background"] = 10.0 * math.log10(1.0 / mse) if mse > 0 else math.inf
            _, ssim_map = structural_similarity_index_measure(edt, src, data_range=1.0, return_full_image=True)
            values["ssim_background"] = float(ssim_map.double()[..., bg].mean())
            spatial = self.lpips_model.spatial
            try:
                self.lpips_model.spatial = True  # per-pixel map, upsampled to the image size
                lpips_map = self.lpips_model(edt * 2 - 1, src * 2 - 1)
            finally:
                self.lpips_model.spatial = spatial
            values["lpips_background"] = float(lpips_map.double()[..., bg].mean())
        values["clip_target_image"] = self.clip.score(edit, target_prompt)
        values["clip_source_image"] = self.clip.score(source, source_prompt)
        if mask.any():
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            crop = edit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
            values["clip_edit_region_cropped"] = self.clip.score(np.ascontiguousarray(crop), target_prompt)
        else:
            values["clip_edit_region_cropped"] = NAN
        return values

    # ----------------------------------------------------------------------------------------------------------------

    def _file_sha(self, path: Path | None) -> str | None:
        if path is None or not path.is_file():
            return None
        key = str(path)
        if key not in self._sha:
            self._sha[key] = file_sha256(path)
        return self._sha[key]

    def describe(self) -> dict[str, Any]:
        """Settings, implementations, versions, weight files and their sha256: what a reader needs to trust a table."""
        versions = {}
        for package in ("torch", "torchvision", "transformers", "torchmetrics", "lpips", "pillow"):
            try:
                versions[package] = importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                versions[package] = None
        clip = self.clip.describe()
        clip_file = clip.get("weights_file")
        clip["weights_sha256"] = self._file_sha(Path(clip_file)) if clip_file else None
        structure = self.structure.describe()
        structure.update(weights=str(self.dino_path) if self.dino_path else f"random (seed {self.cfg['seed']})",
                         weights_sha256=self._file_sha(self.dino_path))
        return {
            "pnp_compat": self.pnp_compat,
            "jpeg_quality": self.jpeg_quality,
            "antialias": self.antialias,
            "random_for_tests": self.cfg["random_for_tests"],
            "seed": self.cfg["seed"],
            "keys": list(self.keys),
            "input": "uint8 RGB; edit JPEG round trip first" if self.jpeg_quality else "uint8 RGB",
            "background": {
                "semantics": "images x (1 - mask), all values (reference)" if self.pnp_compat
                else "background pixels only",
                "psnr": "torchmetrics.functional.peak_signal_noise_ratio, data_range 1",
                "mse": "mean squared error in [0, 1] units",
                "ssim": "torchmetrics.functional.structural_similarity_index_measure, data_range 1, defaults",
                "lpips": "lpips squeeze on x * 2 - 1",
            },
            "structure": structure,
            "clip": clip,
            "lpips": dict(self.lpips_info),
            "comparable": self.comparable,
            "versions": versions,
        }
