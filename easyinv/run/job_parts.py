"""What every job kind is built from: the one check of a config before anything loads (:func:`check_config`),
config → object with one-line errors, per-image seeds and labels, phase timing, and the model's denoisers bound to a
batch.

The reconstruction job (``easyinv.run.reconstruction``) and the editing job (``easyinv.run.editing``) both use these;
keeping them here, below both, is what lets a job kind be added without touching another.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from torch import Tensor

from easyinv.inversion import (
    Denoisers,
    FiniteWatch,
    Grid,
    Inversion,
    PhaseTimer,
    TrajectoryWatch,
    invert_with,
    reconstruct_with,
)
from easyinv.models.base import InversionModel
from easyinv.run.shards import Shard, resolve_shard
from easyinv.validation import ConfigError, check_run_config

__all__ = [
    "CheckedConfig",
    "PhaseTimer",
    "Walk",
    "bind_denoisers",
    "build",
    "check_config",
    "check_loaded_model",
    "check_method_on_model",
    "image_seed",
    "images_to_tensor",
    "latent_steps",
    "load_model",
    "method_label",
    "walk_batch",
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


def images_to_tensor(images: np.ndarray, device: torch.device | str) -> Tensor:
    """uint8 ``(B, H, W, 3)`` images, as a dataset loads them → the ``(B, 3, H, W)`` float batch in [-1, 1] a model
    encodes (every job kind and the Python API feed the model this way)."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(device)


@dataclass
class Walk:
    """One batch through encode → invert (→ reconstruct → decode): what the reconstruction job records and the Python
    API returns. ``z_rec``/``x_rec`` are None for an inversion alone; ``watch_rec.latents`` holds the kept
    reconstruction steps (1 … T)."""

    z0: Tensor
    inversion: Inversion
    den: Denoisers
    watch_inv: FiniteWatch
    watch_rec: TrajectoryWatch
    z_rec: Tensor | None = None
    x_rec: Tensor | None = None


def walk_batch(model: InversionModel, method: Any, grid: Grid, x: Tensor, prompts: list[str], seeds: list[int],
               guidance: Mapping[str, float], timer: PhaseTimer, keep: Sequence[int] = (),
               reconstruct: bool = True) -> Walk:
    """Encode ``x`` (``images_to_tensor``), invert with ``method`` on ``grid`` at each phase's ``guidance``, and
    (``reconstruct``) sample back and decode, each phase timed by ``timer``: the one place the harness walks a
    batch, so the job's records and the API's results are the same numbers."""
    B = x.shape[0]  # noqa: N806
    with timer("encode"):
        z0 = model.encode(x, seeds)
    den = bind_denoisers(model, prompts, {p: float(guidance[p]) for p in ("invert", "reconstruct")})
    watch_inv = FiniteWatch(B, z0.device)
    watch_rec = TrajectoryWatch(B, z0.device, keep=keep)  # steps 1..T; step 0 is z_T
    with timer("invert"):
        inversion = invert_with(method, den, z0, grid, seeds, watch=watch_inv)
    walk = Walk(z0=z0, inversion=inversion, den=den, watch_inv=watch_inv, watch_rec=watch_rec)
    if reconstruct:
        den.phase = "reconstruct"
        with timer("reconstruct"):
            walk.z_rec = reconstruct_with(method, den, inversion, grid, watch=watch_rec)
        with timer("decode"):
            walk.x_rec = model.decode(walk.z_rec)
    return walk


# what a model that does not invert still does, said by both refusals (by config and by what is loaded)
NOT_INVERTED = "it loads and generates, and inversion jobs refuse it (method.num_steps=0, method=vae_only, runs)"


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
        raise ConfigError(f"model={model_cfg.name} does not invert with any published solver; {NOT_INVERTED}")


def check_loaded_model(method: Any, model: InversionModel) -> None:
    """Refuse, in one line and before the first network call, an inversion on a model whose loaded weights do not
    invert (``model.inversion_refusal()``: FLUX.1-schnell given as ``model=flux model.load.source=<folder>``), as
    :func:`check_method_on_model` refuses one whose config says so."""
    reason = model.inversion_refusal()
    if reason and int(getattr(method, "num_steps", 0)) > 0:
        source = getattr(model, "source", None)
        raise ConfigError(f"model={model.name}{f' ({source})' if source else ''} does not invert: {reason}; "
                          f"{NOT_INVERTED}")


@dataclass(frozen=True)
class CheckedConfig:
    """What :func:`check_config` built while checking: the objects a job runs with (nothing loaded yet)."""

    method: Any
    dataset: Any
    shard: Shard  # this process's slice of the items and its device
    save_latents: tuple[int, ...]  # reconstruction steps whose latents are stored
    editor: Any = None  # the editing job's editor (None for a reconstruction job)


def check_config(cfg: DictConfig, edit: bool = False, dataset: bool = True) -> CheckedConfig:
    """Every check of a job's config, in one place, run by every job kind first: each fails in one line
    (:class:`ConfigError`, or FileNotFoundError naming a missing folder) before any dataset is read or any weight is
    loaded. (The app checks the command line's group choices before Hydra composes: ``validation.check_cli_choices``;
    what the loaded weights are is checked after loading: :func:`check_loaded_model`.)

    With ``edit`` (the editing job) the ``edit`` group is built and checked too, and an editor whose protocol fixes T
    sets ``cfg.method.num_steps`` to it (recorded and hashed as the method's) unless the method takes no step (an
    inversion-free editor such as FlowEdit runs with method=vae_only and builds its own grid). Without ``dataset``
    (the Python API, which is handed its images) the dataset is neither built nor asked for PIE-Bench's fields."""
    editor = build(cfg.edit) if edit else None
    if editor is not None and editor.num_steps is not None and int(cfg.method.get("num_steps", 0)) != 0:
        with open_dict(cfg):
            cfg.method.num_steps = int(editor.num_steps)
    method = build(cfg.method)  # the method's constructor checks its own keys
    blend = getattr(method, "blend", None)
    if blend is not None:  # a window that selects nothing at this T is a config error, not 2,298 error rows
        try:
            blend.iterations(method.num_steps)
        except ValueError as e:
            raise ConfigError(str(e)) from e
    check_run_config(cfg)  # the keys no constructor checks: dtypes, batch size, guidance, device, fast paths, ...
    check_method_on_model(method, cfg.model)
    data = build(cfg.dataset) if dataset else None  # its constructor checks its own keys (not its files' contents)
    shard = resolve_shard(cfg.get("shard"), str(cfg.device))
    save = latent_steps(cfg.get("save_latents"), int(method.num_steps))
    if editor is not None:
        reason = editor.unsupported(cfg.model, method)
        if reason:
            raise ConfigError(f"edit={editor.name} does not run with model={cfg.model.name} and "
                              f"method={method.name}: {reason}")
        if dataset and not hasattr(data, "edit_mask"):
            raise ConfigError(f"edit={editor.name} needs an editing dataset (dataset=piebench or mini_piebench), "
                              f"got dataset={cfg.dataset.name}")
    return CheckedConfig(method=method, dataset=data, shard=shard, save_latents=save, editor=editor)


def load_model(cfg: DictConfig, device: torch.device | str, precision_override: Mapping[str, str] | None = None
               ) -> InversionModel:
    """The configured model (``cfg.model.load``) on ``device`` in the configured precision (parts overridden if
    asked), as every job kind and the Python API load it."""
    from omegaconf import OmegaConf

    precision = {**OmegaConf.to_container(cfg.precision, resolve=True), **(precision_override or {})}
    return build(cfg.model.load, name=cfg.model.name, resolution=cfg.model.resolution, precision=precision,
                 device=str(device))


def latent_steps(value: Any, num_steps: int) -> tuple[int, ...]:
    """``save_latents``: reconstruction steps whose latent is stored (0 = z_T, ``num_steps`` = the reconstruction;
    "mid" = ``num_steps // 2``, the paper's midpoint whatever a method's step count)."""
    steps = [num_steps // 2 if s == "mid" else s for s in ([] if value is None else list(value))]
    bad = [s for s in steps if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s <= num_steps]
    if bad:
        raise ConfigError(f"save_latents must list reconstruction steps in [0, {num_steps}] (method.num_steps) or "
                          f"'mid', got {bad}")
    return tuple(sorted(set(steps)))
