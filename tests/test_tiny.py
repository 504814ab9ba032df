"""Tiny offline checkpoints: real diffusers folders, seeded, built once; and the full-size SD-1.4 shapes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from easyinv.models.tiny import byte_alphabet, ensure_tiny_model, load_tiny


def _unet_weights(folder):
    return load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")


def test_folders_load_as_diffusers_pipelines(tiny_model_cache):
    from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

    for name, pipe_cls, scheduler in [("tiny-sd", StableDiffusionPipeline, "PNDMScheduler"),
                                      ("tiny-sdxl", StableDiffusionXLPipeline, "EulerDiscreteScheduler")]:
        pipe = DiffusionPipeline.from_pretrained(tiny_model_cache / "tiny-models" / name, local_files_only=True)
        assert type(pipe) is pipe_cls and type(pipe.scheduler).__name__ == scheduler  # as the real checkpoints ship
    assert pipe.config.force_zeros_for_empty_prompt is True


def test_ensure_reuses_then_rebuilds_stale(tmp_path):
    first = ensure_tiny_model("tiny-sd", tmp_path)
    weights = first / "unet" / "diffusion_pytorch_model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert ensure_tiny_model("tiny-sd", tmp_path) == first and weights.stat().st_mtime_ns == stamp  # reused
    before = _unet_weights(first)
    (first / ".easyinv-tiny-complete").write_text(json.dumps({"format": -1, "seed": 0}))  # an older recipe
    again = ensure_tiny_model("tiny-sd", tmp_path)
    after = _unet_weights(again)
    assert again == first and before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # same seed, same weights
    assert not [p for p in tmp_path.joinpath("tiny-models").iterdir() if p.name.startswith(".")]  # no temp left


def test_seed_changes_weights(tmp_path):
    a = _unet_weights(ensure_tiny_model("tiny-sd", tmp_path / "a", seed=0))
    b = _unet_weights(ensure_tiny_model("tiny-sd", tmp_path / "b", seed=1))
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_load_tiny_checks_family(tiny_model_cache):
    with pytest.raises(ValueError, match="model.family"):
        load_tiny("tiny-sd", cache_dir=tiny_model_cache, family="sdxl")


def test_byte_alphabet():
    chars = byte_alphabet()
    assert len(set(chars)) == 256 and chars[0] == "!" and chars[64] == "a"
    assert not any(c.isspace() for c in chars)


def test_sd14_random_has_sd14_shapes():
    """Parameter counts of CompVis/stable-diffusion-v1-4 (built on the meta device: no memory, no time)."""
    from easyinv.models.full_size import build_sd14_components

    parts = build_sd14_components(device="meta")
    count = [sum(p.numel() for p in m.parameters()) for m in (parts.unet, parts.vae, parts.text_encoders[0])]
    assert count == [859_520_964, 83_653_863, 123_060_480]
    assert parts.scheduler_config["_class_name"] == "PNDMScheduler"
