"""Text conditioning equals what diffusers' pipelines feed the UNet (embeddings, pooled vector, time ids)."""

from __future__ import annotations

import pytest
import torch

from easyinv.models.conditioning import check_time_embedding, resolve_null_embedding, sdxl_time_ids

CAT = "a photo of the cat"


def test_tokenizer_gives_word_tokens(tiny_sd):
    ids = tiny_sd.prompts.tokenizers[0](CAT).input_ids
    assert ids == [521, 320, 79, 71, 78, 83, 334, 78, 325, 513, 518, 522]  # bos a photo of the cat eos (feasibility §2)
    assert tiny_sd.prompts.tokenizers[0].model_max_length == 77


def test_sd1_embeddings_match_pipeline(tiny_sd, reference_pipeline):
    pipe = reference_pipeline(tiny_sd)
    cond, uncond = pipe.encode_prompt(CAT, "cpu", 1, True, negative_prompt=None)
    assert torch.equal(tiny_sd.prompts(CAT).embeds, cond[0])
    assert torch.equal(tiny_sd.prompts.null("encode_empty").embeds, uncond[0])
    assert tiny_sd.prompts(CAT).pooled is None
    assert tiny_sd.prompts(CAT) is tiny_sd.prompts(CAT)  # cached per string


@pytest.mark.parametrize("prompt", [CAT, ""])
def test_sdxl_embeddings_match_pipeline(tiny_sdxl, reference_pipeline, prompt):
    pipe = reference_pipeline(tiny_sdxl)
    cond, uncond, pooled, pooled_u = pipe.encode_prompt(prompt, device="cpu", do_classifier_free_guidance=True)
    ours = tiny_sdxl.prompts(prompt)
    assert ours.embeds.shape == (77, 64)  # penultimate states of both encoders, 32 + 32 channels
    assert torch.equal(ours.embeds, cond[0]) and torch.equal(ours.pooled, pooled[0])
    null = tiny_sdxl.prompts.null(tiny_sdxl.null_embedding)  # zeros: force_zeros_for_empty_prompt
    assert torch.equal(null.embeds, uncond[0]) and torch.equal(null.pooled, pooled_u[0])
    assert not null.embeds.any()


def test_sdxl_time_ids_match_pipeline(tiny_sdxl, reference_pipeline):
    pipe = reference_pipeline(tiny_sdxl)
    proj = tiny_sdxl.prompts.projection_dim
    ref = pipe._get_add_time_ids((64, 96), (0, 0), (64, 96), dtype=torch.float32, text_encoder_projection_dim=proj)
    assert torch.equal(torch.tensor([sdxl_time_ids(64, 96)], dtype=torch.float32), ref)
    unet = tiny_sdxl.unet
    assert unet.config.addition_time_embed_dim * 6 + proj == unet.add_embedding.linear_1.in_features
    with pytest.raises(ValueError, match="add_embedding"):
        check_time_embedding(unet, proj + 1)


def test_null_embedding_choice():
    assert resolve_null_embedding("auto", "sdxl", True) == "zeros"
    assert resolve_null_embedding("auto", "sdxl", False) == "encode_empty"
    assert resolve_null_embedding("auto", "sd1", True) == "encode_empty"
    assert resolve_null_embedding("zeros", "sd1", False) == "zeros"
    with pytest.raises(ValueError, match="null_embedding"):
        resolve_null_embedding("none", "sd1", False)
