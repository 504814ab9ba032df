"""The full-size SD-1.4 and SD3-medium architectures with random weights, for GPU timing without a checkpoint.

Shapes are those of ``CompVis/stable-diffusion-v1-4`` (UNet ~860 M, VAE ~84 M, CLIP ViT-L/14 text encoder ~123 M
parameters), so a UNet call costs what the real one costs; the numbers it produces mean nothing. The components are
built in memory (a 4 GB write to disk would only slow timing runs) and handed to the same
:class:`~easyinv.models.stable_diffusion.StableDiffusionModel` constructor, scheduler checks included. The tokenizer is
the tiny offline one (token ids stay far below CLIP's 49408): timing does not depend on the words. SD3-medium
(transformer ~2 B, CLIP-L and CLIP-G) goes to :class:`~easyinv.models.flow_transformer.FlowTransformerModel` likewise,
without T5-XXL (the pipeline feeds zeros in its place, as SD3 allows): prompt encoding runs once per batch, the
transformer at every step.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from easyinv.models.loading import Components
from easyinv.models.tiny import SD14_SCHEDULER, write_clip_tokenizer
from easyinv.validation import parse_dtype, resolve_device

__all__ = [
    "SD3_CLIP_G",
    "SD3_CLIP_L",
    "SD3_TRANSFORMER",
    "SD3_VAE",
    "SD14_TEXT",
    "SD14_UNET",
    "SD14_VAE",
    "build_sd3_pipeline",
    "build_sd14_components",
    "load_sd3_random",
    "load_sd14_random",
]

# unet/config.json, vae/config.json and text_encoder/config.json of CompVis/stable-diffusion-v1-4
SD14_UNET: dict[str, Any] = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, norm_eps=1e-5, act_fn="silu",
    center_input_sample=False, downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, mid_block_scale_factor=1,
)
SD14_VAE: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
    act_fn="silu", sample_size=512, scaling_factor=0.18215,
)
SD14_TEXT: dict[str, Any] = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=768,
    bos_token_id=0, eos_token_id=2, pad_token_id=1,  # as in the checkpoint (legacy ids: pooling uses argmax)
)


def build_sd14_components(seed: int = 0, device: str | torch.device = "cpu") -> Components:
    """Randomly initialised SD-1.4 components (seeded per component, built on ``device``; use ``meta`` for shapes)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    with torch.device(device):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**SD14_UNET)
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(**SD14_VAE)
        torch.manual_seed(seed + 2)
        text_encoder = CLIPTextModel(CLIPTextConfig(**SD14_TEXT))
    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer(Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(tmp)
    model_index = {"_class_name": "StableDiffusionPipeline", "requires_safety_checker": False}
    return Components(unet, vae, [text_encoder], [tokenizer], dict(SD14_SCHEDULER), model_index)


def load_sd14_random(*, name: str = "sd14-random", seed: int = 0, **kwargs: Any):
    """Hydra factory for ``configs/model/sd14-random.yaml`` (same keywords as ``StableDiffusionModel``)."""
    from easyinv.models.stable_diffusion import StableDiffusionModel

    kwargs.pop("family", None)
    # initialised where it will run: 1.1 G random parameters take seconds on a GPU and a minute on a CPU (the weights
    # differ between devices, which does not matter: this model exists for its cost, not its numbers)
    where = resolve_device(kwargs.get("device"))
    return StableDiffusionModel(build_sd14_components(seed, device=where), "sd1", name=name,
                                source=f"random:sd14:seed={seed}:{where.type}", **kwargs)


# stabilityai/stable-diffusion-3-medium-diffusers: transformer/, vae/ and text_encoder(_2)/config.json
SD3_TRANSFORMER: dict[str, Any] = dict(
    sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64,
    num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048,
    pos_embed_max_size=192,
)
SD3_VAE: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=16, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
    act_fn="silu", sample_size=1024, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False,
    use_post_quant_conv=False,
)
SD3_CLIP_L: dict[str, Any] = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768, bos_token_id=0, eos_token_id=2,
    pad_token_id=1,
)
SD3_CLIP_G: dict[str, Any] = dict(
    vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
    max_position_embeddings=77, hidden_act="gelu", projection_dim=1280, bos_token_id=0, eos_token_id=2,
    pad_token_id=1,
)


def build_sd3_pipeline(seed: int = 0, device: str | torch.device = "cpu"):
    """SD3-medium's transformer, VAE and two CLIP encoders with random weights, as a pipeline object (no T5: the
    pipeline then feeds zeros in its place, as SD3 allows; T5-XXL's 4.7 B parameters would only slow timing runs)."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    with torch.device(device):
        torch.manual_seed(seed)
        transformer = SD3Transformer2DModel(**SD3_TRANSFORMER)
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(**SD3_VAE)
        torch.manual_seed(seed + 2)
        clip_l = CLIPTextModelWithProjection(CLIPTextConfig(**SD3_CLIP_L))
        torch.manual_seed(seed + 3)
        clip_g = CLIPTextModelWithProjection(CLIPTextConfig(**SD3_CLIP_G))
    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer(Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(tmp)
    return StableDiffusion3Pipeline(transformer=transformer, vae=vae,
                                    scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), text_encoder=clip_l,
                                    text_encoder_2=clip_g, text_encoder_3=None, tokenizer=tokenizer,
                                    tokenizer_2=tokenizer, tokenizer_3=None)


def load_sd3_random(*, name: str = "sd3-random", seed: int = 0, **kwargs: Any):
    """Hydra factory for ``configs/model/sd3-random.yaml`` (same keywords as ``FlowTransformerModel``)."""
    from easyinv.models.flow_transformer import FlowTransformerModel

    kwargs.pop("family", None)
    where = resolve_device(kwargs.get("device"))
    parse_dtype(dict(kwargs.get("precision") or {}).get("unet", "float32"), "precision.unet")  # fail before building
    pipe = build_sd3_pipeline(seed, device=where)  # cast to the configured dtypes by the model's constructor
    return FlowTransformerModel(pipe, "sd3", name=name, source=f"random:sd3-medium:seed={seed}:{where.type}", **kwargs)
