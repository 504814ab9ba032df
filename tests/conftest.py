"""Shared pytest fixtures.

Model layer: the tiny SD-1.x / SD-XL checkpoints are built once per session into a temporary cache and loaded
through the same loader as real weights; ``reference_pipeline`` wraps a loaded model's components in diffusers' own
pipeline, the independent reference the model tests compare against. Everything runs offline.

App layer: ``easyinv_sweep`` runs one small multirun of the real app (a child process) per session; the sweep and
notebook tests read its records, report and PNGs.
"""

from __future__ import annotations

import os
import subprocess
import sys

# Any accidental hub call must fail fast instead of hanging; set before diffusers/transformers are imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# One intra-op thread unless OMP_NUM_THREADS says otherwise: on a shared 2-core machine two OpenMP threads that wait
# for each other made the tiny-model tests up to 100x slower (9 s vs 149 s for the same file); 8x8 latents gain
# nothing from a second thread.
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)

FP32 = {"unet": "float32", "vae": "float32", "latent": "float32"}


@pytest.fixture(scope="session")
def tiny_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache dir (the ``paths.cache`` of a run) holding ``tiny-models/tiny-sd`` and ``tiny-models/tiny-sdxl``."""
    from easyinv.models.tiny import TINY_MODELS, ensure_tiny_model

    cache = tmp_path_factory.mktemp("easyinv-cache")
    for name in TINY_MODELS:
        ensure_tiny_model(name, cache)
    return cache


def _load_tiny(which: str, cache: Path, **kwargs):
    from easyinv.models.tiny import load_tiny

    return load_tiny(which, cache_dir=cache, resolution=64, precision=FP32, device="cpu", **kwargs)


@pytest.fixture(scope="session")
def tiny_sd(tiny_model_cache: Path):
    """tiny-sd as a fp32 CPU ``StableDiffusionModel`` (shared: do not mutate it)."""
    return _load_tiny("tiny-sd", tiny_model_cache)


@pytest.fixture(scope="session")
def tiny_sdxl(tiny_model_cache: Path):
    """tiny-sdxl as a fp32 CPU ``StableDiffusionModel`` (shared: do not mutate it)."""
    return _load_tiny("tiny-sdxl", tiny_model_cache)


@pytest.fixture(scope="session")
def reference_pipeline():
    """``make(model)`` → diffusers' SD / SD-XL pipeline on the model's own modules with a DDIM scheduler built from
    the same config (no safety checker, no watermarker)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    def make(model):
        scheduler = DDIMScheduler.from_config(model.scheduler.config)
        encoders, tokenizers = model.prompts.text_encoders, model.prompts.tokenizers
        if model.family == "sd1":
            pipe = StableDiffusionPipeline(
                vae=model.vae, text_encoder=encoders[0], tokenizer=tokenizers[0], unet=model.unet,
                scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
            )
        else:
            pipe = StableDiffusionXLPipeline(
                vae=model.vae, text_encoder=encoders[0], text_encoder_2=encoders[1], tokenizer=tokenizers[0],
                tokenizer_2=tokenizers[1], unet=model.unet, scheduler=scheduler,
                force_zeros_for_empty_prompt=model.force_zeros_for_empty_prompt, add_watermarker=False,
            )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    return make



def _run_app(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "easyinv", *args], env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="session")
def run_easyinv():
    """``run_easyinv(*args)``: ``python -m easyinv ARGS`` in a child process, offline, one thread."""
    return _run_app


@pytest.fixture(scope="session")
def easyinv_sweep(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 2 × 2 multirun (η ∈ {0.5, 0.9} × k ∈ {1, 2}) of EasyInv on the Gaussian model, two images, PNGs saved, and
    its end-of-sweep report. ``{"args", "root", "sweep" (the sweep root), "report"}``; shared, so read only."""
    root = tmp_path_factory.mktemp("sweep")
    args = ["-m", "experiment=none", "model=gaussian", "dataset.limit=2", "method=easyinv", "method.eta=0.5,0.9",
            "method.k=1,2", "metrics.lpips.random_trunk=true", "device=cpu", "save_png=true", f"paths.root={root}",
            f"report_dir={root / 'report'}"]
    done = _run_app(*args)
    assert done.returncode == 0, done.stderr[-4000:]
    return {"args": args, "root": root, "sweep": root / "results" / "runs" / "adhoc", "report": root / "report"}
