"""A diffusers pipeline the user already loaded, seen as an :class:`~easyinv.models.base.InversionModel` without
reloading, copying or changing it.

The pipeline's modules are shared, never copied: the model wraps the same UNet / transformer, VAE and text encoders.
What the harness would change on them for a run (eval mode, ``requires_grad``, attention processors and forward hooks
an editor installs) is captured by :class:`PipelineState` before a call and put back after it, also when the call
fails; the scheduler is never touched (the harness builds its own from ``pipe.scheduler.config``). Offloaded
pipelines (accelerate hooks on a module) are refused in one line: the harness would have to move their weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from easyinv.models.base import InversionModel
from easyinv.validation import ConfigError

__all__ = ["DTYPE_NAMES", "PipelineState", "check_pipeline", "model_from_pipeline", "pipeline_dtypes",
           "pipeline_family"]

DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
_TRANSFORMERS = {"SD3Transformer2DModel": "sd3", "FluxTransformer2DModel": "flux"}


def is_pipeline(obj: Any) -> bool:
    """A diffusers pipeline object (anything with the ``components`` mapping diffusers pipelines have)."""
    return isinstance(getattr(obj, "components", None), Mapping) and hasattr(obj, "vae")


def pipeline_family(pipe: Any) -> str:
    """``sd1``, ``sdxl``, ``sd3`` or ``flux`` from the pipeline's parts (not its class name: an img2img or inpainting
    pipeline of a family holds the same parts); anything else is refused in one line."""
    parts = pipe.components
    transformer = parts.get("transformer")
    if transformer is not None:
        family = _TRANSFORMERS.get(type(transformer).__name__)
        if family is None:
            raise ConfigError(f"{type(pipe).__name__}: its transformer {type(transformer).__name__} is not one the "
                              f"harness walks ({', '.join(_TRANSFORMERS)})")
        return family
    if parts.get("unet") is not None and parts.get("text_encoder") is not None:
        return "sdxl" if parts.get("text_encoder_2") is not None else "sd1"
    raise ConfigError(f"{type(pipe).__name__} is not an SD-1.x, SD-XL, SD3 or FLUX pipeline (no UNet with a text "
                      "encoder, no SD3/FLUX transformer)")


def _network(pipe: Any) -> torch.nn.Module:
    return pipe.components.get("transformer") or pipe.components["unet"]


def _modules(pipe: Any) -> dict[str, torch.nn.Module]:
    return {k: v for k, v in pipe.components.items() if isinstance(v, torch.nn.Module)}


def check_pipeline(pipe: Any) -> None:
    """Refuse a pipeline whose weights are offloaded (accelerate hooks): running it would move them."""
    hooked = [name for name, module in _modules(pipe).items()
              if any(hasattr(m, "_hf_hook") for m in module.modules())]
    if hooked:
        raise ConfigError(f"{type(pipe).__name__} is offloaded ({', '.join(hooked)}: enable_model_cpu_offload or "
                          "sequential offload); the harness runs a pipeline whose modules sit on one device: load it "
                          "without offloading and .to(device) it first")


def pipeline_dtypes(pipe: Any) -> dict[str, str]:
    """The precision the pipeline is loaded in, by the config's part names (``unet`` = the denoising network and its
    text encoders, ``vae``), so the harness never casts the user's weights."""
    def dtype(module: torch.nn.Module) -> str:
        return DTYPE_NAMES.get(next(module.parameters()).dtype, str(next(module.parameters()).dtype))

    return {"unet": dtype(_network(pipe)), "vae": dtype(pipe.vae)}


def check_dtypes(pipe: Any) -> None:
    """The harness runs text encoders in the network's dtype; a pipeline holding them in another is refused, since
    matching them would cast the user's weights."""
    network = next(_network(pipe).parameters()).dtype
    other = [k for k, v in _modules(pipe).items() if k.startswith("text_encoder")
             and next(v.parameters()).dtype != network]
    if other:
        raise ConfigError(f"{type(pipe).__name__}: {', '.join(other)} not in the network's dtype {network}; the "
                          "harness would cast them: load the text encoders in the network's dtype")


def pipeline_device(pipe: Any) -> torch.device:
    """Where the pipeline computes: its network's device (offloaded pipelines are refused before this)."""
    return next(_network(pipe).parameters()).device


@dataclass
class PipelineState:
    """What a run may change on a pipeline's modules, captured so it can be put back exactly: every module's
    training flag, every parameter's ``requires_grad``, every module's forward (pre-)hooks and the networks'
    attention processors. Use as a context manager around anything that runs on a borrowed pipeline."""

    pipe: Any
    training: dict[int, bool] = field(default_factory=dict)
    grads: dict[int, bool] = field(default_factory=dict)
    hooks: dict[int, tuple[dict, dict]] = field(default_factory=dict)
    processors: dict[str, dict[str, Any]] = field(default_factory=dict)
    modules: list[torch.nn.Module] = field(default_factory=list)

    def __enter__(self) -> PipelineState:
        for name, root in _modules(self.pipe).items():
            for m in root.modules():
                self.modules.append(m)
                self.training[id(m)] = m.training
                self.hooks[id(m)] = (dict(m._forward_hooks), dict(m._forward_pre_hooks))
            for p in root.parameters():
                self.grads[id(p)] = p.requires_grad
            if hasattr(root, "attn_processors"):
                self.processors[name] = dict(root.attn_processors)
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def restore(self) -> None:
        """Put every captured flag, hook and processor back (hooks added since are removed)."""
        parts = _modules(self.pipe)
        for name, saved in self.processors.items():
            if dict(parts[name].attn_processors) != saved:
                parts[name].set_attn_processor(dict(saved))  # a dict argument is consumed: pass a copy
        for m in self.modules:  # parents come before their children: a parent's train() is undone below it
            if m.training != self.training[id(m)]:
                m.train(self.training[id(m)])
            forward, pre = self.hooks[id(m)]
            for hooks, saved in ((m._forward_hooks, forward), (m._forward_pre_hooks, pre)):
                for key in [k for k in hooks if k not in saved]:
                    del hooks[key]
        for root in parts.values():
            for p in root.parameters():
                if p.requires_grad != self.grads[id(p)]:
                    p.requires_grad_(self.grads[id(p)])


def model_from_pipeline(pipe: Any, *, name: str, resolution: int | None, precision: Mapping[str, Any],
                        **options: Any) -> InversionModel:
    """The harness's model over the pipeline's own modules (shared, in their dtypes, on their device), with a
    scheduler of its own built from ``pipe.scheduler.config``. ``options``: the model config's load options that
    apply to a loaded pipeline (``vae_sample``, ``null_embedding``, ``max_sequence_length``)."""
    check_pipeline(pipe)
    check_dtypes(pipe)
    family = pipeline_family(pipe)
    device = pipeline_device(pipe)
    parts = pipe.components
    if family in ("sd3", "flux"):
        from easyinv.models.flow_transformer import FlowTransformerModel

        own = {**parts, "scheduler": type(pipe.scheduler).from_config(pipe.scheduler.config)}
        private = type(pipe)(**{k: v for k, v in own.items() if k in _init_names(type(pipe))})
        keep = {k: options[k] for k in ("max_sequence_length",) if options.get(k) is not None}
        return FlowTransformerModel(private, family, name=name, resolution=resolution, precision=precision,
                                    device=device, source=f"{type(pipe).__name__} object", **keep)
    from easyinv.models.loading import Components
    from easyinv.models.stable_diffusion import StableDiffusionModel

    encoders = [parts[k] for k in ("text_encoder", "text_encoder_2") if parts.get(k) is not None]
    tokenizers = [parts[k] for k in ("tokenizer", "tokenizer_2") if parts.get(k) is not None]
    components = Components(unet=parts["unet"], vae=parts["vae"], text_encoders=encoders, tokenizers=tokenizers,
                            scheduler_config=dict(pipe.scheduler.config), model_index=dict(pipe.config))
    keep = {k: options[k] for k in ("vae_sample", "null_embedding") if options.get(k) is not None}
    return StableDiffusionModel(components, family, name=name, resolution=resolution, precision=precision,
                                device=device, source=f"{type(pipe).__name__} object", **keep)


def _init_names(cls: type) -> set[str]:
    import inspect

    return set(inspect.signature(cls.__init__).parameters) - {"self"}
