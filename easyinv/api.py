"""The Python API: the harness's methods on your own images and your own loaded pipeline, and the benchmark in process.

    import easyinv
    result = easyinv.reconstruct(pipe, image, "a cat", method="easyinv", eta=0.5)
    result.z_T, result.nfe, result.seconds, result.images, result.metrics()

``model`` is a diffusers pipeline you loaded (SD-1.x, SD-XL, SD3, FLUX.1; its weights are used in place, never
reloaded, copied or cast, and it is left as it was: :class:`easyinv.models.pipelines.PipelineState`), a model config
name (``"tiny-sd"``, ``"sd14"``: loaded as ``easyinv-bench model=...`` loads it) or a model :func:`load_model`
returned. Method keys go by their config names (``method="easyinv", eta=0.5``) and are checked, with the CLI's
one-line errors (:class:`~easyinv.validation.ConfigError`), before any network call. Every call composes the same
config as the command line and walks the batch with the job's own function (``run.job_parts.walk_batch``), so on the
same image, model and keys z_T and the reconstruction are the CLI's bit for bit.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from easyinv.validation import CONFIG_DIR, ConfigError

__all__ = ["EditOutput", "InversionResult", "benchmark", "compose_config", "edit", "invert", "load_model",
           "reconstruct"]

_FAMILY_CONFIGS = {"sd1": "sd14", "sdxl": "sdxl", "sd3": "sd3", "flux": "flux"}  # a pipeline's settings by default
_PRECISIONS = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


# -- configs ------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _hydra_compose() -> Iterator[Any]:
    """Hydra's compose API on this project's configs, also from inside another Hydra app (its state is put back)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from easyinv.plugins import register_search_path

    register_search_path()  # installed plugins' config groups are choices here too, as on the command line
    outer = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            yield compose
    finally:
        if outer is not None:
            GlobalHydra.instance().initialize(outer)


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The config ``easyinv-bench <overrides>`` runs with (group choices checked first, in one line)."""
    from easyinv.validation import check_cli_choices

    check_cli_choices(list(overrides))
    with _hydra_compose() as compose:
        return compose("config", overrides=list(overrides))


def _set(cfg: DictConfig, group: str, keys: Mapping[str, Any], what: str) -> None:
    """Set ``group.<key>`` for each key, refusing a key the group does not have in one line."""
    node = OmegaConf.select(cfg, group)
    for key, value in keys.items():
        if node is None or key not in node:
            known = ", ".join(sorted(k for k in (node or {}) if not str(k).startswith("_")))
            raise ConfigError(f"{what} has no key {key!r} (its keys: {known})")
        current = node.get(key)
        if isinstance(current, DictConfig) and isinstance(value, Mapping):
            OmegaConf.update(cfg, f"{group}.{key}", dict(value), merge=True)
        else:
            OmegaConf.update(cfg, f"{group}.{key}", value, merge=False)


def _guidance(value: float | Mapping[str, float] | None) -> dict[str, float]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"invert", "reconstruct"})
        if unknown:
            raise ConfigError(f"guidance: unknown phases {unknown}; allowed: invert, reconstruct")
        return {k: float(v) for k, v in value.items()}
    return {"invert": float(value), "reconstruct": float(value)}


# -- models -------------------------------------------------------------------------------------------------------


def load_model(model: str, *, precision: str = "fp32", device: str = "auto", **keys: Any) -> Any:
    """Load ``model=<model>`` once as the CLI loads it (``keys``: ``model.<key>`` values), to pass to several calls."""
    from easyinv.run.job_parts import load_model as load_configured
    from easyinv.validation import resolve_device

    cfg = compose_config(["experiment=none", f"model={model}", f"precision={precision}", f"device={device}"])
    _set(cfg, "model", keys, f"model={model}")
    return load_configured(cfg, resolve_device(str(cfg.device)))


@dataclass
class _Setup:
    """What a call runs with: the composed, checked config and the objects built from it."""

    cfg: DictConfig
    method: Any
    editor: Any
    model: Any
    state: Any  # a PipelineState around a borrowed pipeline, else a null context

    @property
    def device(self) -> torch.device:
        return self.model.device


def _setup(model: Any, method: str | None, keys: Mapping[str, Any], *, guidance: Any, precision: str | None,
           device: str | None, model_config: str | None, batch_size: int | None, metrics: Mapping[str, Any] | None,
           editor: str | None = None, edit_options: Mapping[str, Any] | None = None) -> _Setup:
    """Compose the config the CLI would run, set the keys, check it (one line, nothing computed), then build the
    model: wrap a pipeline, take a loaded model as it is, or load a model config."""
    from easyinv.models.base import InversionModel
    from easyinv.models.pipelines import (
        PipelineState,
        is_pipeline,
        pipeline_device,
        pipeline_dtypes,
        pipeline_family,
    )
    from easyinv.run.job_parts import check_config, check_loaded_model
    from easyinv.run.job_parts import load_model as load_configured

    pipe = model if is_pipeline(model) else None
    loaded = model if isinstance(model, InversionModel) else None
    if pipe is None and loaded is None and not isinstance(model, str):
        raise ConfigError(f"model must be a diffusers pipeline, a model config name or a model from "
                          f"easyinv.load_model, got {type(model).__name__}")
    if pipe is not None:
        dtypes = pipeline_dtypes(pipe)
        config_name = model_config or _FAMILY_CONFIGS[pipeline_family(pipe)]
        chosen = _PRECISIONS.get(dtypes["unet"], "fp32")
        if precision is not None and precision != chosen:
            raise ConfigError(f"precision={precision}: the pipeline's network is {dtypes['unet']} ({chosen}); the "
                              "harness does not cast your weights: load the pipeline in the precision you want")
        precision = chosen
    elif loaded is not None:
        config_name = model_config or loaded.name
    else:
        config_name = model
    overrides = ["experiment=none", f"model={config_name}"]
    overrides += [f"method={method}"] if method else []
    overrides += [f"precision={precision}"] if precision else []
    overrides += [f"edit={editor}"] if editor else []
    overrides += [f"device={device}"] if device and pipe is None and loaded is None else []
    cfg = compose_config(overrides)
    if isinstance(keys.get("blend"), str):  # blend="easyinv": the method/blend group, as +method/blend=easyinv
        cfg = compose_config([*overrides, f"+method/blend={keys['blend']}"])
        keys = {k: v for k, v in keys.items() if k != "blend"}
    _set(cfg, "method", keys, f"method={cfg.method.name}")
    _set(cfg, "guidance", _guidance(guidance), "guidance")
    _set(cfg, "metrics", dict(metrics or {}), "metrics")
    if editor:
        _set(cfg, "edit", dict(edit_options or {}), f"edit={editor}")
    if batch_size is not None:
        cfg.batch_size = batch_size
    if pipe is not None:
        cfg.precision.unet, cfg.precision.vae = dtypes["unet"], dtypes["vae"]
        cfg.device = str(pipeline_device(pipe))
    elif loaded is not None:
        cfg.device = str(loaded.device)
    checked = check_config(cfg, edit=editor is not None, dataset=False)
    state: Any = contextlib.nullcontext()
    if pipe is not None:
        from easyinv.models.pipelines import model_from_pipeline

        load = cfg.model.load
        state = PipelineState(pipe)
        with state:  # wrapping freezes the modules: put back at once, and again around every call
            net = model_from_pipeline(pipe, name=str(getattr(pipe, "name_or_path", "") or cfg.model.name),
                                      resolution=int(cfg.model.resolution) if model_config else None,
                                      precision=OmegaConf.to_container(cfg.precision, resolve=True),
                                      **{k: load.get(k) for k in ("vae_sample", "null_embedding",
                                                                  "max_sequence_length")})
        state = PipelineState(pipe)
        cfg.model.resolution = int(net.resolution)
    elif loaded is not None:
        net = loaded
    else:
        from easyinv.validation import resolve_device

        net = load_configured(cfg, resolve_device(str(cfg.device)))
    check_loaded_model(checked.method, net)
    return _Setup(cfg=cfg, method=checked.method, editor=checked.editor, model=net, state=state)


# -- images -------------------------------------------------------------------------------------------------------


def _as_list(images: Any) -> list[Any]:
    if isinstance(images, (list, tuple)):
        return list(images)
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return list(images)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    return [images]


def _to_pil(image: Any) -> Any:
    """One image (PIL, a path, an ``(H, W, 3)`` array or a ``(3, H, W)`` tensor; uint8, or float in [0, 1]) as an RGB
    PIL image."""
    from PIL import Image

    if isinstance(image, (str, Path)):
        from easyinv.data.images import open_rgb

        return open_rgb(Path(image))
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        image = image.permute(1, 2, 0).numpy() if image.ndim == 3 and image.shape[0] in (1, 3) else image.numpy()
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (1, 3):
        raise ConfigError(f"an image must be (H, W, 3) or (3, H, W), got shape {tuple(array.shape)}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.dtype != np.uint8:
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ConfigError("a float image must hold values in [0, 1] (uint8 arrays hold 0-255)")
        array = np.round(array.astype(np.float64) * 255).astype(np.uint8)
    return Image.fromarray(array, "RGB")


def _prepare(images: Any, size: int, dataset: Mapping[str, Any]) -> np.ndarray:
    """uint8 ``(B, size, size, 3)``: each image preprocessed as the configured dataset preprocesses its files
    (``dataset.resize``, ``dataset.resample``)."""
    from easyinv.data.images import Preprocess, resize_square

    opts = Preprocess(resize=str(dataset.get("resize", "stretch")), resample=str(dataset.get("resample", "bicubic")))
    return np.stack([np.array(resize_square(_to_pil(im), size, opts), dtype=np.uint8) for im in _as_list(images)])


def _prompts(prompts: str | Sequence[str] | None, n: int, what: str = "prompts") -> list[str]:
    if prompts is None:
        return [""] * n
    if isinstance(prompts, str):
        return [prompts] * n
    out = [str(p) for p in prompts]
    if len(out) != n:
        raise ConfigError(f"{len(out)} {what} for {n} images")
    return out


def _seeds(seed: int, ids: Sequence[str] | None, n: int) -> tuple[list[str], list[int]]:
    """Per-image seeds as the job derives them from (run seed, image id); ids default to "0", "1", ..."""
    from easyinv.run.job_parts import image_seed

    names = [str(i) for i in ids] if ids is not None else [str(i) for i in range(n)]
    if len(names) != n:
        raise ConfigError(f"{len(names)} ids for {n} images")
    return names, [image_seed(int(seed), i) for i in names]


# -- results ------------------------------------------------------------------------------------------------------


@dataclass
class InversionResult:
    """What :func:`invert` / :func:`reconstruct` computed, per image in input order.

    ``z_T``: the inverted noise ``(B, C, h, w)``; ``z_0``: the encoded images; ``nfe``: network evaluations per image
    by phase (``invert``, ``reconstruct``); ``seconds``: per-image seconds by phase (``encode``, ``invert``, ...,
    as the records' ``t_*``); ``inversion_latents`` / ``reconstruction_latents``: the per-step latents when asked
    (inversion steps 0 … T from z_0; reconstruction steps 0 = z_T … T, as ``save_latents`` numbers them);
    ``images``: uint8 reconstructions ``(B, H, W, 3)`` (``reconstruct``); ``references``: the inputs as the harness
    preprocessed them; ``state``: what a method's own reconstruction needs besides z_T; ``config``: the resolved
    config the CLI would record, and ``config_hash`` its hash."""

    z_T: torch.Tensor  # noqa: N815
    z_0: torch.Tensor
    nfe: dict[str, list[int]]
    seconds: dict[str, list[float]]
    references: np.ndarray
    prompts: list[str]
    ids: list[str]
    config: dict[str, Any]
    config_hash: str
    label: str
    state: list[dict[str, torch.Tensor]] = field(default_factory=list, repr=False)
    z_rec: torch.Tensor | None = field(default=None, repr=False)
    images: np.ndarray | None = field(default=None, repr=False)
    inversion_latents: list[torch.Tensor] | None = field(default=None, repr=False)
    reconstruction_latents: dict[int, torch.Tensor] | None = field(default=None, repr=False)

    def metrics(self, reference: Any = None) -> list[dict[str, Any]]:
        """Per image, the record's numbers: the configured metrics of the reconstruction against ``reference``
        (default: the inputs as preprocessed; images as for :func:`reconstruct`), and ``latent_mse`` against z_0."""
        from easyinv.metrics import ImageMetrics, latent_mse

        if self.images is None or self.z_rec is None:
            raise ValueError("no reconstruction: call easyinv.reconstruct (invert returns z_T only)")
        size = self.images.shape[1]
        refs = self.references if reference is None else _prepare(reference, size, self.config["dataset"])
        scorer = ImageMetrics(self.config["metrics"], device=self.z_rec.device)
        scores = scorer.measure(self.images, refs)
        mse = latent_mse(self.z_rec.float(), self.z_0.float()).cpu().tolist()
        return [{**s, "latent_mse": float(m)} for s, m in zip(scores, mse, strict=True)]

    def to_pil(self) -> list[Any]:
        """The reconstructions as PIL images."""
        from PIL import Image

        if self.images is None:
            raise ValueError("no reconstruction: call easyinv.reconstruct")
        return [Image.fromarray(im) for im in self.images]


@dataclass
class EditOutput:
    """What :func:`edit` computed: the source branch (the reconstruction) and the edit as uint8 ``(B, H, W, 3)``,
    their latents, z_T, NFE per image by phase (``invert``, ``offsets``, ``edit``), per-image seconds by phase, and
    the protocol's label (``<inversion>+<source policy>+<editor>``)."""

    source: np.ndarray
    edited: np.ndarray
    z_T: torch.Tensor  # noqa: N815
    z_source: torch.Tensor
    z_target: torch.Tensor
    nfe: dict[str, list[int]]
    seconds: dict[str, list[float]]
    references: np.ndarray
    protocol: str
    config: dict[str, Any]
    config_hash: str

    def metrics(self, reference: Any = None) -> list[dict[str, Any]]:
        """The record's reconstruction metrics of the source branch against ``reference`` (default: the inputs)."""
        from easyinv.metrics import ImageMetrics

        size = self.source.shape[1]
        refs = self.references if reference is None else _prepare(reference, size, self.config["dataset"])
        return ImageMetrics(self.config["metrics"], device=self.z_T.device).measure(self.source, refs)


def _hash(cfg: DictConfig) -> tuple[dict[str, Any], str]:
    from easyinv.run.records import config_hash

    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    return resolved, config_hash(resolved)


def _batches(n: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


# -- the calls ----------------------------------------------------------------------------------------------------


def _walk(model: Any, images: Any, prompts: str | Sequence[str] | None, method: str | None, keys: Mapping[str, Any],
          *, reconstruct: bool, guidance: Any, seed: int, ids: Sequence[str] | None, precision: str | None,
          device: str | None, model_config: str | None, batch_size: int | None, keep_latents: bool,
          metrics: Mapping[str, Any] | None) -> InversionResult:
    from easyinv.inversion import PhaseTimer
    from easyinv.metrics import to_uint8
    from easyinv.run.job_parts import images_to_tensor, walk_batch

    setup = _setup(model, method, keys, guidance=guidance, precision=precision, device=device,
                   model_config=model_config, batch_size=batch_size, metrics=metrics)
    cfg, net, m = setup.cfg, setup.model, setup.method
    refs = _prepare(images, int(net.resolution), cfg.dataset)
    n = len(refs)
    texts = _prompts(prompts, n)
    names, seeds = _seeds(seed, ids, n)
    grid = net.grid(m.num_steps)
    keep = tuple(range(1, grid.T + 1)) if keep_latents and reconstruct else ()
    parts: dict[str, list[Any]] = {k: [] for k in ("z_T", "z0", "z_rec", "x", "traj", "rec", "state")}
    nfe: dict[str, list[int]] = {"invert": [], "reconstruct": []}
    seconds: dict[str, list[float]] = {}
    with setup.state, torch.no_grad():
        for rows in _batches(n, int(cfg.batch_size)):
            timer = PhaseTimer(net.device)
            walk = walk_batch(net, m, grid, images_to_tensor(refs[rows], net.device), texts[rows], seeds[rows],
                              cfg.guidance, timer, keep=keep, reconstruct=reconstruct)
            b = len(texts[rows])
            parts["z_T"].append(walk.inversion.z_T)
            parts["z0"].append(walk.z0)
            parts["state"] += [{k: v[j] for k, v in walk.inversion.state.items()} for j in range(b)]
            if keep_latents:
                parts["traj"].append(torch.stack(walk.inversion.trajectory))
            if reconstruct:
                parts["z_rec"].append(walk.z_rec)
                parts["x"].append(to_uint8(torch.nan_to_num(walk.x_rec.float().cpu())).permute(0, 2, 3, 1).numpy())
                if keep_latents:
                    parts["rec"].append(torch.stack([walk.inversion.z_T, *(walk.watch_rec.latents[s] for s in keep)]))
            for phase in nfe:
                nfe[phase] += [int(v) for v in walk.den.nfe(phase).cpu()]
            for phase, value in timer.seconds.items():
                seconds.setdefault(phase, []).extend([value / b] * b)
    resolved, digest = _hash(cfg)
    from easyinv.run.job_parts import method_label

    label = method_label(str(cfg.method.name), [f"method.{k}={v}" for k, v in keys.items()])
    result = InversionResult(z_T=torch.cat(parts["z_T"]), z_0=torch.cat(parts["z0"]), nfe=nfe, seconds=seconds,
                             references=refs, prompts=texts, ids=names, config=resolved, config_hash=digest,
                             label=label, state=parts["state"])
    if keep_latents:
        result.inversion_latents = list(torch.cat(parts["traj"], dim=1))
    if reconstruct:
        result.z_rec, result.images = torch.cat(parts["z_rec"]), np.concatenate(parts["x"])
        if keep_latents:
            stacked = torch.cat(parts["rec"], dim=1)
            result.reconstruction_latents = {s: stacked[k] for k, s in enumerate((0, *keep))}
    return result


def invert(model: Any, images: Any, prompts: str | Sequence[str] | None = None, *, method: str = "ddim",
           guidance: float | Mapping[str, float] | None = None, seed: int = 0, ids: Sequence[str] | None = None,
           precision: str | None = None, device: str | None = None, model_config: str | None = None,
           batch_size: int | None = None, keep_latents: bool = False, **keys: Any) -> InversionResult:
    """Invert ``images`` (one or a batch: PIL, paths, numpy or tensors) with ``method`` and its ``keys`` (config
    names: ``num_steps=50, eta=0.5``); returns z_T, NFE and timings per image (:class:`InversionResult`).

    ``prompts``: one for all images or one each (default ""); ``guidance``: a scale for both phases or
    ``{"invert": w, "reconstruct": w}`` (default: the model config's); ``seed`` and ``ids``: per-image seeds as the
    job derives them; ``model_config``: the model config whose settings a pipeline runs with (default: its family's,
    e.g. ``sd14``); ``precision``/``device``: for a model config name (a pipeline runs as it is loaded)."""
    return _walk(model, images, prompts, method, keys, reconstruct=False, guidance=guidance, seed=seed, ids=ids,
                 precision=precision, device=device, model_config=model_config, batch_size=batch_size,
                 keep_latents=keep_latents, metrics=None)


def reconstruct(model: Any, images: Any, prompts: str | Sequence[str] | None = None, *, method: str = "ddim",
                guidance: float | Mapping[str, float] | None = None, seed: int = 0, ids: Sequence[str] | None = None,
                precision: str | None = None, device: str | None = None, model_config: str | None = None,
                batch_size: int | None = None, keep_latents: bool = False, metrics: Mapping[str, Any] | None = None,
                **keys: Any) -> InversionResult:
    """Invert and reconstruct ``images`` as the benchmark does (arguments as :func:`invert`); the result also holds
    the uint8 reconstructions, and ``result.metrics()`` the record's numbers (``metrics``: keys of the ``metrics``
    config, e.g. ``{"lpips": {"random_trunk": True}}``)."""
    return _walk(model, images, prompts, method, keys, reconstruct=True, guidance=guidance, seed=seed, ids=ids,
                 precision=precision, device=device, model_config=model_config, batch_size=batch_size,
                 keep_latents=keep_latents, metrics=metrics)


def edit(model: Any, images: Any, source_prompts: str | Sequence[str], target_prompts: str | Sequence[str], *,
         editor: str = "p2p", method: str | None = None, blend_words: Sequence[Any] | None = None,
         edit_options: Mapping[str, Any] | None = None, guidance: float | Mapping[str, float] | None = None,
         seed: int = 0, ids: Sequence[str] | None = None, precision: str | None = None, device: str | None = None,
         model_config: str | None = None, batch_size: int | None = None, **keys: Any) -> EditOutput:
    """Edit ``images`` from ``source_prompts`` to ``target_prompts`` with ``editor`` (an ``edit`` config name: p2p,
    masactrl, v_inject, uni_edit, rf_inversion, flowedit) over the inversion ``method`` (default: the editor's
    protocol's), ``edit_options`` its keys by config name, ``blend_words`` PIE-Bench's per image (e.g.
    ``[("cat", "dog")]``)."""
    from easyinv.editing.editor import EditBatch
    from easyinv.editing.walk import to_uint8_truncated
    from easyinv.inversion import PhaseTimer
    from easyinv.metrics import to_uint8
    from easyinv.run.job_parts import bind_denoisers, images_to_tensor, method_label

    setup = _setup(model, method, keys, guidance=guidance, precision=precision, device=device,
                   model_config=model_config, batch_size=batch_size, metrics=None, editor=editor,
                   edit_options=edit_options)
    cfg, net, ed = setup.cfg, setup.model, setup.editor
    refs = _prepare(images, int(net.resolution), cfg.dataset)
    n = len(refs)
    sources, targets = _prompts(source_prompts, n, "source prompts"), _prompts(target_prompts, n, "target prompts")
    words = list(blend_words) if blend_words is not None else [None] * n
    if len(words) != n:
        raise ConfigError(f"{len(words)} blend_words for {n} images")
    _, seeds = _seeds(seed, ids, n)
    grid = net.grid(setup.method.num_steps)
    out: dict[str, list[Any]] = {k: [] for k in ("z_T", "src", "tgt", "x")}
    nfe: dict[str, list[int]] = {"invert": [], "offsets": [], "edit": []}
    seconds: dict[str, list[float]] = {}

    def pixels(x: torch.Tensor) -> np.ndarray:
        x = torch.nan_to_num(x.float().cpu())
        return (to_uint8_truncated(x) if ed.uint8 == "truncate" else to_uint8(x)).permute(0, 2, 3, 1).numpy()

    with setup.state, torch.no_grad():
        for rows in _batches(n, int(cfg.batch_size)):
            timer = PhaseTimer(net.device)
            with timer("encode"):
                z0 = net.encode(images_to_tensor(refs[rows], net.device), seeds[rows])
            batch = EditBatch(model=net, method=setup.method, grid=grid, z0=z0, seeds=tuple(seeds[rows]),
                              source_prompts=sources[rows], target_prompts=targets[rows], blend_words=words[rows],
                              denoisers=lambda p, g: bind_denoisers(net, p, g), timer=timer)
            result = ed.edit(batch)
            with timer("decode"):
                x = net.decode(torch.cat([result.z_source, result.z_target]))
            b = z0.shape[0]
            out["z_T"].append(result.inversion.z_T)
            out["src"].append(result.z_source)
            out["tgt"].append(result.z_target)
            out["x"].append(pixels(x))
            for phase, counts in (("invert", result.nfe_invert), ("offsets", result.nfe_offsets),
                                  ("edit", result.nfe_edit)):
                nfe[phase] += [int(v) for v in counts.cpu()]
            for phase, value in timer.seconds.items():
                seconds.setdefault(phase, []).extend([value / b] * b)
    resolved, digest = _hash(cfg)
    source, edited = [], []
    for x in out["x"]:
        half = x.shape[0] // 2
        source.append(x[:half])
        edited.append(x[half:])
    inversion = method_label(str(cfg.method.name), [f"method.{k}={v}" for k, v in keys.items()])
    editor_label = method_label(ed.name, [f"edit.{k}={v}" for k, v in (edit_options or {}).items()], group="edit",
                                leave=("source",))
    return EditOutput(source=np.concatenate(source), edited=np.concatenate(edited), z_T=torch.cat(out["z_T"]),
                      z_source=torch.cat(out["src"]), z_target=torch.cat(out["tgt"]), nfe=nfe, seconds=seconds,
                      references=refs, protocol=f"{inversion}+{ed.source}+{editor_label}", config=resolved,
                      config_hash=digest)


def benchmark(overrides: Sequence[str] = (), *, root: str | Path | None = None) -> Any:
    """Run ``easyinv-bench <overrides>`` in this process (a sweep included) and return its records as a DataFrame:
    the same run directories, records and report as the command line (it *is* the command line's app). ``root``:
    ``paths.root`` (default: the current directory, as the CLI)."""
    from easyinv import __main__ as app
    from easyinv.run.records import read_records, records_files

    args = [*overrides, *([f"paths.root={root}"] if root is not None else [])]
    app.RUNS.clear()
    argv = sys.argv
    sys.argv = ["easyinv-bench", *args]
    try:
        app.main()
    except SystemExit as e:
        if e.code not in (None, 0):
            raise ConfigError(str(e.code).removeprefix("easyinv-bench: ")) from None
    finally:
        sys.argv = argv
    import pandas as pd

    frames = []
    for run_dir, digest in app.RUNS:
        files = records_files(run_dir, recursive=False)
        if files:
            df = read_records(files)
            frames.append(df[df.config_hash == digest])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
