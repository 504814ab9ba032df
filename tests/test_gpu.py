"""CUDA paths, run by ``scripts/gpu_check.sh`` on a machine with a GPU (skipped elsewhere; never needed by CI).

On tiny-sd: CUDA fp32 equals CPU fp32 for every method, fp16 and bf16 stay finite, a batch equals single runs on
CUDA, the CUDA-event UNet timing adds up to the wall time of a UNet-only loop, and the editing walk keeps its source
row invariants in fp32 and fp16.
"""

from __future__ import annotations

import time

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from easyinv.inversion import invert, reconstruct
from easyinv.models.tiny import load_tiny
from easyinv.validation import CONFIG_DIR

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

METHODS = ("ddim", "easyinv", "renoise", "fixed_point")
PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def _method(name: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose("config", overrides=["experiment=none", "model=tiny-sd", f"method={name}"])
    return instantiate(cfg.method, _convert_="all")


def _model(cache, device: str, unet: str = "float32", resolution: int = 64):
    model = load_tiny("tiny-sd", cache_dir=cache, resolution=resolution, device=device,
                      precision={"unet": unet, "vae": "float32", "latent": "float32"})
    model.accelerate("none", False)  # the runner's CUDA set-up (TF32 off for fp32)
    return model


def _images(n: int, size: int = 64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return (0.6 * torch.randn(n, 3, size, size, generator=gen)).clamp(-1, 1)


def _round_trip(model, method, x: torch.Tensor, seeds: list[int]):
    grid = model.grid(method.num_steps)
    eps = model.denoiser([""] * len(seeds), 1.0)
    inv = invert(method, eps, model.encode(x.to(model.device), seeds), grid, seeds)
    z0 = reconstruct(model.denoiser([""] * len(seeds), 1.0), inv.z_T, grid)[-1]
    return inv.z_T.float().cpu(), z0.float().cpu(), inv.nfe


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("name", METHODS)
def test_cuda_fp32_equals_cpu_fp32(name, tiny_model_cache):
    method, x, seeds = _method(name), _images(2), [3, 4]
    cpu = _round_trip(_model(tiny_model_cache, "cpu"), method, x, seeds)
    cuda = _round_trip(_model(tiny_model_cache, "cuda"), method, x, seeds)
    assert _rel(cuda[0], cpu[0]) <= 1e-4 and _rel(cuda[1], cpu[1]) <= 1e-4
    assert cuda[2].tolist() == cpu[2].tolist()


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("name", METHODS)
def test_reduced_precision_stays_finite(name, precision, tiny_model_cache):
    z_t, z0, _ = _round_trip(_model(tiny_model_cache, "cuda", PRECISIONS[precision]), _method(name), _images(2),
                             [1, 2])
    assert torch.isfinite(z_t).all() and torch.isfinite(z0).all()


@pytest.mark.parametrize("name", METHODS)
def test_batch_equals_singles_on_cuda(name, tiny_model_cache):
    model, method, x, seeds = _model(tiny_model_cache, "cuda"), _method(name), _images(3), [7, 8, 9]
    batch = _round_trip(model, method, x, seeds)
    for b in range(3):
        one = _round_trip(model, method, x[b : b + 1], [seeds[b]])
        assert _rel(one[0], batch[0][b : b + 1]) <= 1e-4
        assert one[2].tolist() == batch[2][b : b + 1].tolist()


def test_cuda_event_timing_adds_up_to_wall_time(tiny_model_cache):
    model = _model(tiny_model_cache, "cuda", resolution=256)
    eps = model.denoiser([""] * 4, 1.0)
    z = torch.randn(4, 4, 32, 32, device="cuda")
    eps(z, 1)  # warm-up: kernels chosen, memory allocated
    eps.reset_counters()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for t in range(1, 1000, 20):
        eps(z, t)
    torch.cuda.synchronize()
    wall = time.perf_counter() - start
    assert eps.calls == 50
    assert eps.seconds == pytest.approx(wall, rel=0.10)


@pytest.mark.parametrize("unet", ["float32", "float16"])
def test_editing_invariants_on_cuda(tiny_model_cache, unet):
    """editing.md §6.5: on CUDA the controllers leave the source row alone (active vs passive) and DirectInversion's
    offsets pin it to the inversion at the first step: the offset and edit passes run the same kernels and batch."""
    from baselines.ddim import DDIM
    from easyinv.editing.p2p import P2PEditor
    from easyinv.editing.walk import EditUNet, edit

    model = _model(tiny_model_cache, "cuda", unet)
    grid = model.grid(10)
    source, target = ["a photo of the cat"] * 2, ["a photo of the dog"] * 2
    z0 = model.encode(_images(2).to("cuda"), [0, 1])
    trajectory = invert(DDIM(num_steps=10), model.denoiser(source, 1.0), z0, grid).trajectory
    runs = {}
    for active in (True, False):
        controller = P2PEditor(blend_map_size=4).controller(source, target, [("cat", "dog")] * 2,
                                                            model.prompts.tokenizers[0], grid.T)
        if not active:
            begin = controller.begin
            controller.begin = lambda layout, b=begin, c=controller: (b(layout), setattr(c, "active", False))
        runs[active] = edit(EditUNet(model, source, target, 7.5), controller, grid, trajectory, "direct_offsets",
                            keep_source_path=True)
    assert torch.equal(runs[True].z_source, runs[False].z_source)
    assert torch.isfinite(runs[True].z_target).all()
    torch.testing.assert_close(runs[True].source_path[0], trajectory[-2], rtol=0, atol=1e-6)
