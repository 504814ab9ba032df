"""Load Stable Diffusion components one by one from a local diffusers folder or a Hugging Face hub id.

Components are loaded individually (``subfolder=``), never through a pipeline: no safety checker, no watermarker, no
scheduler rewriting. A missing folder, or a hub id that is neither cached nor reachable, gives one
:class:`ModelNotFoundError` that says how to get the weights, instead of a hub traceback.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

__all__ = ["FAMILIES", "Components", "ModelNotFoundError", "hub_offline", "load_components", "resolve_source"]

log = logging.getLogger(__name__)

FAMILIES = ("sd1", "sdxl")

# Where each family's weights come from, for the "how to download" hint.
_HUB_IDS = {
    "sd1": "CompVis/stable-diffusion-v1-4",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
}
_HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# Subfolders each family needs (a real checkpoint has more, e.g. safety_checker/, which we never load).
_REQUIRED = {
    "sd1": ("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
    "sdxl": ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"),
}


class ModelNotFoundError(FileNotFoundError):
    """Model weights are not where the config says; the message names the path and how to provide it."""


_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DIFFUSERS_OFFLINE")


def hub_offline() -> bool:
    """True when the hub must not be contacted (read at call time: the hub library reads it only at import)."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on") for k in _OFFLINE_VARS)


def _how_to_get(folder: str, family: str) -> str:
    """The remedy: which repo to download where, or which setting points at existing weights."""
    name = Path(folder).name
    hub_id = next((h for h in _HUB_IDS.values() if h.split("/")[1] == name), _HUB_IDS.get(family, _HUB_IDS["sd1"]))
    return (
        f"download it with `huggingface-cli download {hub_id} --local-dir {folder}`, or point paths.models "
        f"(env EASYINV_MODELS, or configs/local/default.yaml) at the folder that holds {name}/"
    )


def resolve_source(source: str | os.PathLike, family: str, *, local_files_only: bool | None = None) -> tuple[str, bool]:
    """Return ``(source, local_files_only)`` ready for ``from_pretrained``, or raise :class:`ModelNotFoundError`.

    A source that exists on disk is a local folder and must hold the family's subfolders. Otherwise it must look like
    a hub id (``owner/name``); offline (``HF_HUB_OFFLINE``) it must then already be in the hub cache.
    """
    if family not in FAMILIES:
        raise ValueError(f"model.family must be one of {FAMILIES}, got {family!r}")
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.exists():
        missing = [sub for sub in _REQUIRED[family] if not (path / sub).is_dir()]
        if not path.is_dir() or missing:
            raise ModelNotFoundError(
                f"model folder {path} is incomplete for {family} (missing {', '.join(missing) or 'the folder'}); "
                + _how_to_get(str(path), family)
            )
        return str(path), True
    offline = hub_offline() if local_files_only is None else bool(local_files_only)
    if not _HUB_ID_PATTERN.match(text) or text.startswith((".", "~")):
        raise ModelNotFoundError(f"model folder {path} does not exist; " + _how_to_get(str(path), family))
    return text, offline


@dataclass
class Components:
    """The parts of a checkpoint the harness uses, plus the configs it must record."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoders: list[torch.nn.Module]
    tokenizers: list[CLIPTokenizer]
    scheduler_config: dict[str, Any]
    model_index: dict[str, Any] = field(default_factory=dict)


def _read_model_index(source: str, local_files_only: bool) -> dict[str, Any]:
    if Path(source).is_dir():
        index = Path(source) / "model_index.json"
        return json.loads(index.read_text()) if index.is_file() else {}
    from huggingface_hub import hf_hub_download

    return json.loads(Path(hf_hub_download(source, "model_index.json", local_files_only=local_files_only)).read_text())


def load_components(
    source: str | os.PathLike,
    family: str,
    *,
    unet_dtype: torch.dtype = torch.float32,
    vae_dtype: torch.dtype = torch.float32,
    variant: str | None = None,
    local_files_only: bool | None = None,
) -> Components:
    """Load UNet, VAE, text encoder(s), tokenizer(s) and the scheduler config of an SD-1.x or SD-XL checkpoint.

    The text encoders take the UNet's dtype (they feed it). Nothing is moved to a device here.
    """
    src, local_only = resolve_source(source, family, local_files_only=local_files_only)
    common: dict[str, Any] = {"local_files_only": local_only}
    if variant is not None:
        common["variant"] = variant
    try:
        scheduler_config = dict(DDIMScheduler.load_config(src, subfolder="scheduler", local_files_only=local_only))
        model_index = _read_model_index(src, local_only)
        unet = UNet2DConditionModel.from_pretrained(src, subfolder="unet", dtype=unet_dtype, **common)
        vae = AutoencoderKL.from_pretrained(src, subfolder="vae", dtype=vae_dtype, **common)
        encoder_classes = [CLIPTextModel] if family == "sd1" else [CLIPTextModel, CLIPTextModelWithProjection]
        text_encoders = [
            cls.from_pretrained(src, subfolder=sub, dtype=unet_dtype, **common)
            for cls, sub in zip(encoder_classes, ("text_encoder", "text_encoder_2"), strict=False)
        ]
        tokenizers = [
            CLIPTokenizer.from_pretrained(src, subfolder=sub, local_files_only=local_only)
            for sub in ("tokenizer", "tokenizer_2")[: len(encoder_classes)]
        ]
    except (OSError, ValueError) as err:
        if Path(src).is_dir():
            raise
        mode = "HF_HUB_OFFLINE is set and it is not in the hub cache" if local_only else "it could not be fetched"
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        remedy = _how_to_get(f"models/{src.split('/')[-1]}", family)
        raise ModelNotFoundError(f"model {src!r} could not be loaded: {mode} ({first_line}); {remedy}") from None
    log.info("loaded %s components from %s (unet %s, vae %s)", family, src, unet_dtype, vae_dtype)
    return Components(unet, vae, text_encoders, tokenizers, scheduler_config, model_index)
