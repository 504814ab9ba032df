"""What every job kind is built from: config → object with one-line errors, per-image seeds and labels, phase
timing, the model's denoisers bound to a batch, and NFE per image.

The reconstruction job (``easyinv.run.reconstruction``) and the editing job (``easyinv.run.editing``) both use these;
keeping them here, below both, is what lets a job kind be added without touching another.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from easyinv.inversion import Denoisers, PhaseTimer
from easyinv.models.base import InversionModel
from easyinv.validation import ConfigError

__all__ = [
    "PhaseTimer",
    "bind_denoisers",
    "build",
    "check_loaded_model",
    "check_method_on_model",
    "image_seed",
    "method_label",
]


def image_seed(run_seed: int, item_id: str) -> int:
    """Per-image seed from the run seed and the image id: independent of order, batching and resuming."""
    digest = hashlib.sha256(f"{run_seed}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def method_label(name: str, overrides: Sequence[str], group: str = "method", leave: Sequence[str] = ()) -> str:
    """``easyinv`` or, for a job with method overrides, ``easyinv[eta=0.3,k=2]`` (sweeps keep configs apart).

    ``group`` names the config group whose overrides are shown (``edit`` for an editor), ``leave`` the keys that
    are already part of the label elsewhere (``source``: the editing protocol spells its policy out)."""
    parts = []
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        for prefix in (f"{group}.", f"{group}/"):
            if key.startswith(prefix) and key.removeprefix(prefix) not in leave:
                parts.append(o.lstrip("+~").removeprefix(prefix))
    return f"{name}[{','.join(sorted(parts))}]" if parts else name


def build(node: DictConfig, **kwargs: Any) -> Any:
    """``instantiate`` that surfaces our own one-line errors instead of Hydra's wrapper around them.

    A ValueError from a constructor is a bad config value (its message names the key); a FileNotFoundError is a
    missing model folder, dataset or LPIPS trunk (its message names the path and the fix).
    """
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, FileNotFoundError):
            raise cause from None
        if isinstance(cause, (ValueError, TypeError)):
            raise ConfigError(str(cause).splitlines()[0]) from cause
        raise


def bind_denoisers(model: InversionModel, prompts: list[str], guidance: dict[str, float]) -> Denoisers:
    """The model's denoisers for one batch's prompts at each phase's guidance (and null-text's, if the model has it)."""
    return Denoisers(lambda w, negative: model.denoiser(prompts, w, negative_prompts=negative), prompts, guidance,
                     null_text=lambda: model.null_text_denoiser(prompts))


def check_method_on_model(method: Any, model_cfg: DictConfig) -> None:
    """Refuse, in one line and before any weight loads, a method the model cannot serve: one whose maths does not
    hold on the model's path (``model.path``: ``vp`` unless the model says ``flow``; the method's
    ``unsupported_paths``), one that needs an unconditional branch the model lacks (``model.cfg: false``; the
    method's ``needs_cfg``), or any inversion on a model that does not invert (``model.invertible: false``)."""
    path = str(model_cfg.get("path", "vp"))
    reason = getattr(method, "unsupported_paths", {}).get(path)
    if reason:
        raise ConfigError(f"method={method.name} does not run on model={model_cfg.name} ({path} path): {reason}")
    need = getattr(method, "needs_cfg", None)
    if need and not model_cfg.get("cfg", True):
        raise ConfigError(f"method={method.name} does not run on model={model_cfg.name}: {need}, and the model's "
                          "guidance is distilled (no unconditional branch)")
    if not model_cfg.get("invertible", True) and int(getattr(method, "num_steps", 0)) > 0:
        raise ConfigError(f"model={model_cfg.name} does not invert with any published solver; it loads and "
                          "generates, and inversion jobs refuse it (method.num_steps=0, method=vae_only, runs)")


def check_loaded_model(method: Any, model: InversionModel) -> None:
    """Refuse, in one line and before the first network call, an inversion on a model whose loaded weights do not
    invert (``model.inversion_refusal()``: FLUX.1-schnell given as ``model=flux model.load.source=<folder>``), as
    :func:`check_method_on_model` refuses one whose config says so."""
    reason = model.inversion_refusal()
    if reason and int(getattr(method, "num_steps", 0)) > 0:
        source = getattr(model, "source", None)
        raise ConfigError(f"model={model.name}{f' ({source})' if source else ''} does not invert: {reason}; it loads "
                          "and generates, and inversion jobs refuse it (method.num_steps=0, method=vae_only, runs)")
