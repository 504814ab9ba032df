"""Loading: missing weights give one clear error (not a hub traceback); tiny folders load like real checkpoints."""

from __future__ import annotations

import shutil

import pytest

from easyinv.models.loading import ModelNotFoundError, load_components, resolve_source
from easyinv.models.stable_diffusion import StableDiffusionModel


def test_missing_folder_names_path_and_remedy(tmp_path):
    missing = tmp_path / "models" / "stable-diffusion-v1-4"
    with pytest.raises(ModelNotFoundError) as err:
        StableDiffusionModel.from_pretrained(str(missing), "sd1", name="sd14", device="cpu")
    message = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert str(missing) in message
    assert "huggingface-cli download CompVis/stable-diffusion-v1-4" in message
    assert "paths.models" in message and "EASYINV_MODELS" in message
    assert err.value.__cause__ is None and "\n" not in message


def test_incomplete_folder_names_missing_parts(tiny_model_cache, tmp_path):
    broken = tmp_path / "tiny-sdxl"
    shutil.copytree(tiny_model_cache / "tiny-models" / "tiny-sdxl", broken)
    shutil.rmtree(broken / "text_encoder_2")
    with pytest.raises(ModelNotFoundError, match="text_encoder_2"):
        resolve_source(broken, "sdxl")


def test_uncached_hub_id_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_id = "easyinv-bench-tests/not-a-model"  # in no cache anywhere
    with pytest.raises(ModelNotFoundError) as err:
        load_components(hub_id, "sd1")
    assert hub_id in str(err.value) and "HF_HUB_OFFLINE" in str(err.value)
    assert "huggingface-cli download" in str(err.value)
    assert err.value.__cause__ is None


def test_unknown_family_is_refused(tiny_model_cache):
    with pytest.raises(ValueError, match="model.family"):
        resolve_source(tiny_model_cache / "tiny-models" / "tiny-sd", "sd2")


def test_describe_records_what_was_loaded(tiny_sd, tiny_sdxl):
    sd, xl = tiny_sd.describe(), tiny_sdxl.describe()
    assert sd["family"] == "sd1" and xl["family"] == "sdxl" and sd["resolution"] == 64
    assert sd["scheduler"]["class"] == "DDIMScheduler" and sd["scheduler"]["clip_sample"] is False
    assert sd["null_embedding"] == "encode_empty" and xl["null_embedding"] == "zeros"
    assert sd["vae_scaling_factor"] == 0.18215 and xl["vae_scaling_factor"] == 0.13025
    assert sd["dtypes"] == {"unet": "torch.float32", "vae": "torch.float32", "latent": "torch.float32"}
    assert sd["source"].endswith("tiny-sd")
