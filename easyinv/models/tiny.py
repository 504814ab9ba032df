"""Tiny, seeded, randomly initialised SD-1.x, SD-XL, SD3 / SD3.5 and FLUX.1 checkpoints written as real diffusers
folders.

They let tests, CI and the demo run the exact code path of real weights (the folder is read back by
:func:`easyinv.models.loading.load_components`) on a CPU, offline. Shapes follow feasibility.md §2: a 4-block VAE keeps
SD's 8× factor (64 px → 8×8 latent); SD-XL has two text encoders, pooled embeddings, time ids and
``force_zeros_for_empty_prompt``. The scheduler config is written as the real checkpoints ship it (SD-1.4: PNDM,
SD-XL: Euler), so the DDIM conversion and its checks are exercised too. The flow models (flow-matching.md §2) have the
real classes (SD3Transformer2DModel with three text encoders, FluxTransformer2DModel with CLIP-L and T5, 16-channel
VAEs with shift factors, FlowMatchEulerDiscreteScheduler as each checkpoint configures it) and an offline T5
tokenizer. The weights are random: image metrics are meaningless, latent agreement with diffusers is not.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "TINY_MODELS",
    "build_tiny_model",
    "byte_alphabet",
    "ensure_tiny_model",
    "load_tiny",
    "tiny_model_dir",
    "write_clip_tokenizer",
]

TINY_MODELS = ("tiny-sd", "tiny-sdxl", "tiny-sd3", "tiny-sd35", "tiny-flux", "tiny-flux-schnell")
FLOW_TINY = {"tiny-sd3": "sd3", "tiny-sd35": "sd3", "tiny-flux": "flux", "tiny-flux-schnell": "flux"}
_FORMAT = 1  # bump when the recipe changes, so stale cached folders are rebuilt
_MARKER = ".easyinv-tiny-complete"

# -- tokenizer --------------------------------------------------------------------------------------------------------

# A handful of merges so that "a photo of the cat" has word-level tokens; everything else falls back to bytes.
_MERGES = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("i", "n"), ("o", "n</w>"), ("c", "a"), ("ca", "t</w>"),
           ("d", "o"), ("do", "g</w>")]
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def byte_alphabet() -> list[str]:
    """The 256 symbols byte-level BPE (GPT-2, CLIP) uses for bytes, in CLIP's vocabulary order.

    Printable Latin-1 bytes stand for themselves and come first ("!" is token 0); the other bytes follow, mapped to
    code points from 256 up so that no symbol is whitespace or a control character.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + k) for k in range(len(others))]


def write_clip_tokenizer(folder: Path) -> int:
    """Write vocab.json, merges.txt and tokenizer_config.json as SD checkpoints ship them; return the vocab size.

    Loaded with ``CLIPTokenizer.from_pretrained`` (transformers 5 ignores the old ``vocab_file=`` keywords).
    """
    folder.mkdir(parents=True, exist_ok=True)
    chars = byte_alphabet()
    tokens = chars + [c + "</w>" for c in chars] + [a + b for a, b in _MERGES] + [BOS, EOS]
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(tokens)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in _MERGES))
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "bos_token": BOS, "eos_token": EOS,
              "unk_token": EOS, "pad_token": EOS, "do_lower_case": True, "add_prefix_space": False}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return len(tokens)


# -- scheduler configs as the real checkpoints ship them (ecosystem.md §2.1, algorithms.md §1.2) ----------------------

_SCHEDULE = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
             "steps_offset": 1, "set_alpha_to_one": False, "skip_prk_steps": True, "clip_sample": False,
             "trained_betas": None}
SD14_SCHEDULER = {"_class_name": "PNDMScheduler", **_SCHEDULE}
SDXL_SCHEDULER = {"_class_name": "EulerDiscreteScheduler", **_SCHEDULE, "prediction_type": "epsilon",
                  "interpolation_type": "linear", "sample_max_value": 1.0, "timestep_spacing": "leading",
                  "use_karras_sigmas": False}


# -- components -------------------------------------------------------------------------------------------------------


def _text_config(vocab_size: int, **extra: Any):
    from transformers import CLIPTextConfig

    ids = {"bos_token_id": vocab_size - 2, "eos_token_id": vocab_size - 1, "pad_token_id": vocab_size - 1}
    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=37, num_attention_heads=4,
                          num_hidden_layers=2, max_position_embeddings=77, **ids, **extra)


def _vae(scaling_factor: float, force_upcast: bool):
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(32, 32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=1,
                         norm_num_groups=32, sample_size=64, scaling_factor=scaling_factor, force_upcast=force_upcast)


def _unet(sdxl: bool):
    from diffusers import UNet2DConditionModel

    shape: dict[str, Any] = dict(block_out_channels=(32, 64), layers_per_block=2, sample_size=8, in_channels=4,
                                 out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), norm_num_groups=32)
    if not sdxl:
        return UNet2DConditionModel(**shape, cross_attention_dim=32, attention_head_dim=8)
    # cross_attention_dim = hidden(te1) + hidden(te2); projection input = 6 * addition_time_embed_dim + projection_dim
    return UNet2DConditionModel(**shape, cross_attention_dim=64, attention_head_dim=(2, 4), use_linear_projection=True,
                                addition_embed_type="text_time", addition_time_embed_dim=8,
                                transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80)


def _model_index(name: str) -> dict[str, Any]:
    diff, tf = "diffusers", "transformers"
    if name == "tiny-sd":
        return {"_class_name": "StableDiffusionPipeline", "unet": [diff, "UNet2DConditionModel"],
                "vae": [diff, "AutoencoderKL"], "text_encoder": [tf, "CLIPTextModel"],
                "tokenizer": [tf, "CLIPTokenizer"], "scheduler": [diff, "PNDMScheduler"],
                "safety_checker": [None, None], "feature_extractor": [None, None], "image_encoder": [None, None],
                "requires_safety_checker": False}
    return {"_class_name": "StableDiffusionXLPipeline", "unet": [diff, "UNet2DConditionModel"],
            "vae": [diff, "AutoencoderKL"], "text_encoder": [tf, "CLIPTextModel"],
            "text_encoder_2": [tf, "CLIPTextModelWithProjection"], "tokenizer": [tf, "CLIPTokenizer"],
            "tokenizer_2": [tf, "CLIPTokenizer"], "scheduler": [diff, "EulerDiscreteScheduler"],
            "feature_extractor": [None, None], "image_encoder": [None, None], "force_zeros_for_empty_prompt": True}


# -- flow models (flow-matching.md §2: shapes, and the rules tying the text encoders to the transformer) -------------

_T5_WORDS = ("a", "photo", "of", "the", "cat", "dog", "sitting", "on", "mat", "painting", "red", "blue")


def write_t5_tokenizer(folder: Path) -> int:
    """An offline T5 (Unigram) tokenizer: pad, eos, unk, the word boundary, letters and digits, a few words."""
    import string

    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(c, -3.0) for c in string.ascii_lowercase + string.digits] + [("▁" + w, -1.0) for w in _T5_WORDS]
    T5Tokenizer(vocab=vocab, extra_ids=0).save_pretrained(folder)
    return len(vocab)


def _t5(vocab_size: int, d_model: int):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                   relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
                                   decoder_start_token_id=0))


def _flow_vae(scaling_factor: float, shift_factor: float):
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(32, 32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=16, layers_per_block=1,
                         norm_num_groups=32, sample_size=64, scaling_factor=scaling_factor, shift_factor=shift_factor,
                         use_quant_conv=False, use_post_quant_conv=False)


def _build_flow(name: str, out: Path, seed: int) -> None:
    """The tiny SD3 / SD3.5 / FLUX.1-dev / FLUX.1-schnell folder, saved through the diffusers pipeline class."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer, T5Tokenizer

    tokenizers = out / ".tokenizers"
    clip_vocab = write_clip_tokenizer(tokenizers / "clip")
    t5_vocab = write_t5_tokenizer(tokenizers / "t5")
    clip_tok = CLIPTokenizer.from_pretrained(tokenizers / "clip")
    t5_tok = T5Tokenizer.from_pretrained(tokenizers / "t5")
    if FLOW_TINY[name] == "sd3":
        extra = {"dual_attention_layers": (0,), "qk_norm": "rms_norm"} if name == "tiny-sd35" else {}
        torch.manual_seed(seed)
        transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=2,
                                            attention_head_dim=8, num_attention_heads=4, joint_attention_dim=64,
                                            caption_projection_dim=32, pooled_projection_dim=64, pos_embed_max_size=16,
                                            **extra)
        torch.manual_seed(seed + 1)
        vae = _flow_vae(1.5305, 0.0609)
        encoders = []
        for k in range(2):
            torch.manual_seed(seed + 2 + k)
            encoders.append(CLIPTextModelWithProjection(_text_config(clip_vocab, projection_dim=32)))
        torch.manual_seed(seed + 4)
        t5 = _t5(t5_vocab, 64)
        pipe = StableDiffusion3Pipeline(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(
            shift=3.0), text_encoder=encoders[0], text_encoder_2=encoders[1], text_encoder_3=t5, tokenizer=clip_tok,
            tokenizer_2=clip_tok, tokenizer_3=t5_tok)
    else:
        dev = name == "tiny-flux"
        torch.manual_seed(seed)
        transformer = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=1, num_single_layers=2,
                                             attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                             pooled_projection_dim=32, guidance_embeds=dev, axes_dims_rope=(4, 6, 6))
        torch.manual_seed(seed + 1)
        vae = _flow_vae(0.3611, 0.1159)
        torch.manual_seed(seed + 2)
        clip = CLIPTextModel(_text_config(clip_vocab))
        torch.manual_seed(seed + 3)
        t5 = _t5(t5_vocab, 32)
        scheduler = (FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                                                     max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
                     if dev else FlowMatchEulerDiscreteScheduler(shift=1.0))  # FLUX.1-dev's and schnell's configs
        pipe = FluxPipeline(transformer=transformer, vae=vae, scheduler=scheduler, text_encoder=clip,
                            text_encoder_2=t5, tokenizer=clip_tok, tokenizer_2=t5_tok)
    pipe.save_pretrained(out)
    shutil.rmtree(tokenizers)


def build_tiny_model(name: str, out: str | os.PathLike, seed: int = 0) -> Path:
    """Write the diffusers folder of a tiny model (:data:`TINY_MODELS`) into ``out`` (overwriting it); each component
    is initialised after ``torch.manual_seed(seed + k)`` so the weights do not depend on build order."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    if name not in TINY_MODELS:
        raise ValueError(f"tiny model must be one of {TINY_MODELS}, got {name!r}")
    out = Path(out)
    if name in FLOW_TINY:
        out.mkdir(parents=True, exist_ok=True)
        _build_flow(name, out, seed)
        return out
    out.mkdir(parents=True, exist_ok=True)
    sdxl = name == "tiny-sdxl"
    vocab_size = write_clip_tokenizer(out / "tokenizer")
    parts: dict[str, Any] = {}
    torch.manual_seed(seed)
    parts["unet"] = _unet(sdxl)
    torch.manual_seed(seed + 1)
    parts["vae"] = _vae(0.13025 if sdxl else 0.18215, force_upcast=sdxl)  # the real checkpoints' factors
    torch.manual_seed(seed + 2)
    parts["text_encoder"] = CLIPTextModel(_text_config(vocab_size))
    if sdxl:
        write_clip_tokenizer(out / "tokenizer_2")
        torch.manual_seed(seed + 3)
        parts["text_encoder_2"] = CLIPTextModelWithProjection(_text_config(vocab_size, projection_dim=32))
    for sub, module in parts.items():
        module.save_pretrained(out / sub)
    (out / "scheduler").mkdir(exist_ok=True)
    scheduler = SDXL_SCHEDULER if sdxl else SD14_SCHEDULER
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler, indent=2))
    (out / "model_index.json").write_text(json.dumps(_model_index(name), indent=2))
    return out


def tiny_model_dir(name: str, cache_dir: str | os.PathLike) -> Path:
    """Where ``ensure_tiny_model`` keeps ``name``: ``<cache_dir>/tiny-models/<name>``."""
    return Path(cache_dir).expanduser() / "tiny-models" / name


def ensure_tiny_model(name: str, cache_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Return the folder of a complete tiny model, building it first if needed.

    Built in a temporary sibling folder and renamed into place, so concurrent jobs never see half a model; a folder
    is reused only if its marker records the same recipe version and seed.
    """
    target = tiny_model_dir(name, cache_dir)
    stamp = json.dumps({"format": _FORMAT, "seed": seed})
    marker = target / _MARKER
    if marker.is_file() and marker.read_text() == stamp:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the renamed folder should read like any other
    try:
        build_tiny_model(name, tmp, seed=seed)
        (tmp / _MARKER).write_text(stamp)
        if target.exists():  # stale or incomplete: replace it
            if (target / _MARKER).is_file() and (target / _MARKER).read_text() == stamp:
                return target  # another process finished first
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:  # lost the race to another builder
            if not ((target / _MARKER).is_file() and (target / _MARKER).read_text() == stamp):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_tiny(which: str, *, cache_dir: str | os.PathLike, seed: int = 0, family: str | None = None, **kwargs: Any):
    """Hydra factory for ``configs/model/tiny-*.yaml``: build the folder if needed, then load it like real weights."""
    from easyinv.models.stable_diffusion import StableDiffusionModel

    if which in FLOW_TINY:
        from easyinv.models.flow_transformer import FlowTransformerModel

        torch.set_flush_denormal(True)  # tiny random transformers hit denormals: ~160x slower on the CPU otherwise
        kwargs.pop("vae_sample", None), kwargs.pop("null_embedding", None)
        kwargs.setdefault("name", which)
        return FlowTransformerModel.from_pretrained(ensure_tiny_model(which, cache_dir, seed=seed), FLOW_TINY[which],
                                                    **kwargs)
    expected = "sdxl" if which == "tiny-sdxl" else "sd1"
    if family not in (None, expected):
        raise ValueError(f"model.family={family!r} does not match tiny model {which!r} ({expected})")
    kwargs.setdefault("name", which)
    return StableDiffusionModel.from_pretrained(ensure_tiny_model(which, cache_dir, seed=seed), expected, **kwargs)
