"""The full-size SD-1.4 architecture with random weights, for GPU timing without downloading a checkpoint.

Shapes are those of ``CompVis/stable-diffusion-v1-4`` (UNet ~860 M, VAE ~84 M, CLIP ViT-L/14 text encoder ~123 M
parameters), so a UNet call costs what the real one costs; the numbers it produces mean nothing. The components are
built in memory (a 4 GB write to disk would only slow timing runs) and handed to the same
:class:`~easyinv.models.stable_diffusion.StableDiffusionModel` constructor, scheduler checks included. The tokenizer is
the tiny offline one (token ids stay far below CLIP's 49408): timing does not depend on the words.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from easyinv.models.loading import Components
from easyinv.models.tiny import SD14_SCHEDULER, write_clip_tokenizer
from easyinv.validation import resolve_device

__all__ = ["SD14_TEXT", "SD14_UNET", "SD14_VAE", "build_sd14_components", "load_sd14_random"]

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
