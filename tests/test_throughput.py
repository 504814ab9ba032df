"""Batched throughput without changing a number: batch = singles through the runner at B ∈ {1, 3, 8} with mixed
prompts and early-stopping rows, the prefetching loader and the background writer, the GPU fast-path keys on the CPU,
and the benchmark's arithmetic on synthetic records (timing itself is never asserted)."""

from __future__ import annotations

import json
import math
import shutil
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import make_cfg, run_job

from easyinv.bench import NO_REG, device_slug, markdown, project, regularisation_share, summarize_bench
from easyinv.data.samples import SAMPLES_DIR
from easyinv.run.pipelining import BackgroundWriter, prefetch
from easyinv.run.reconstruction import Job
from easyinv.run.records import read_records
from easyinv.validation import ConfigError

# --------------------------------------------------------------------------------------------------------------------
# Batch = singles
# --------------------------------------------------------------------------------------------------------------------

# method overrides and the relative tolerance on latent MSE. On the random tiny UNet the walks amplify rounding:
# scaling one input by (1 + 1e-7) moves DDIM's z_T by 1e-5 but ReNoise's at w = 3 by 2e-3 (measured), which the
# reconstruction amplifies again; batched and single runs differ by the same amount, so the tolerance follows it.
METHOD_ARGS = {
    "ddim": (["method=ddim", "method.num_steps=5"], 2e-3),
    "easyinv": (["method=easyinv", "method.num_steps=5", "method.interval=[0.0,0.5]"], 2e-3),
    "renoise": (["method=renoise", "method.num_steps=5"], 5e-2),
}


@pytest.fixture(scope="module")
def mixed_prompt_folder(tmp_path_factory):
    """8 images; every other one has a caption sidecar, so a batch mixes CFG rows (cost 2) and plain rows (cost 1)."""
    root = tmp_path_factory.mktemp("mixed")
    photos = sorted((SAMPLES_DIR / "photos").glob("*.png")) + sorted((SAMPLES_DIR / "probes").glob("*.png"))
    for n, src in enumerate(photos[:8]):
        shutil.copyfile(src, root / f"{n}_{src.name}")
        if n % 2 == 0:
            (root / f"{n}_{src.stem}.txt").write_text(src.with_suffix(".txt").read_text())
    return root


def _by_batch(tmp_path, *args: str) -> dict[int, pd.DataFrame]:
    return {b: read_records(run_job(tmp_path, *args, f"batch_size={b}", name=f"b{b}")).sort_values("item_id")
            for b in (1, 3, 8)}


@pytest.mark.parametrize("method", sorted(METHOD_ARGS))
def test_batches_with_mixed_prompts_give_the_numbers_of_single_runs(method, mixed_prompt_folder, tmp_path,
                                                                     tiny_model_cache):
    """tiny-sd, guidance 3 on captioned rows only. The UNet's batched convolutions round differently from single
    ones (≈1e-7), so latents agree to float rounding, not bit for bit; a row mix-up would be off by O(1)."""
    overrides, rel = METHOD_ARGS[method]
    runs = _by_batch(tmp_path, "model=tiny-sd", f"paths.cache={tiny_model_cache}", "dataset=folder",
                     f"dataset.root={mixed_prompt_folder}", "dataset.prompt=caption", "guidance.invert=3.0",
                     "guidance.reconstruct=3.0", *overrides)
    one = runs[1]
    assert set(one.status) == {"ok"} and len(one) == 8
    assert one.nfe.nunique() == 2  # captioned rows pay CFG, the others do not
    shifted = one.latent_mse.tolist()[1:] + one.latent_mse.tolist()[:1]
    assert shifted != pytest.approx(one.latent_mse.tolist(), rel=rel)  # rows differ: a mix-up would show
    for b in (3, 8):
        other = runs[b]
        assert other.nfe.tolist() == one.nfe.tolist(), b
        assert other.batch_size.tolist() == [min(b, 8 - n // b * b) for n in range(8)]  # the batch each really ran in
        assert other.latent_mse.tolist() == pytest.approx(one.latent_mse.tolist(), rel=rel), b
        assert other.psnr.tolist() == pytest.approx(one.psnr.tolist(), rel=rel / 2), b


def test_batches_with_early_stopping_rows_give_the_numbers_of_single_runs(tmp_path):
    """Fixed-point with a tolerance on the Gaussian model (a contraction, so exact to float rounding): rows stop
    at different iterations inside one batch, and the last batch of 13 images is partial."""
    runs = _by_batch(tmp_path, "model=gaussian", "model.error=0.05", "method=fixed_point",
                     "method.acceleration=anderson", "method.tol=0.003")
    one = runs[1]
    assert len(one) == 13 and one.nfe.min() < one.nfe.max()  # some rows stopped early
    for b in (3, 8):
        assert runs[b].nfe.tolist() == one.nfe.tolist(), b
        for col in ("latent_mse", "psnr", "ssim"):
            assert runs[b][col].tolist() == pytest.approx(one[col].tolist(), rel=1e-5), (b, col)


# --------------------------------------------------------------------------------------------------------------------
# Prefetch and background writing
# --------------------------------------------------------------------------------------------------------------------


def test_prefetch_keeps_order_overlaps_and_raises_at_the_failing_batch():
    started: list[int] = []

    def load(n: int) -> int:
        started.append(n)
        time.sleep(0.02 * (3 - n % 3))  # later batches finish first if order were not kept
        if n == 4:
            raise ValueError("bad batch 4")
        return n * 10

    got = []
    with pytest.raises(ValueError, match="bad batch 4"):
        for value in prefetch(load, range(6)):
            got.append(value)
            if value == 0:
                time.sleep(0.05)
                assert started[:2] == [0, 1]  # batch 1 was loading while batch 0 was consumed
    assert got == [0, 10, 20, 30]
    assert list(prefetch(lambda n: n, range(5), depth=0)) == list(range(5))


def test_background_writer_keeps_order_raises_and_drains_on_error():
    done: list[int] = []
    lock = threading.Lock()

    def job(n: int) -> None:
        time.sleep(0.01 * (n % 2))
        with lock:
            done.append(n)

    with BackgroundWriter(max_pending=2) as writer:
        for n in range(6):
            writer.submit(job, n)
    assert done == list(range(6))

    def fail() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"), BackgroundWriter() as writer:
        writer.submit(fail)
        writer.drain()

    done.clear()
    with pytest.raises(KeyboardInterrupt), BackgroundWriter() as writer:
        writer.submit(job, 1)
        raise KeyboardInterrupt
    assert done == [1]  # what was submitted before the interrupt was still written


def test_the_runner_loads_in_dataset_order_and_records_skips(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    photos = sorted((SAMPLES_DIR / "photos").glob("*.png"))[:5]
    for n, src in enumerate(photos):
        shutil.copyfile(src, folder / f"{n}.png")
    (folder / "2.png").write_bytes(b"not an image")
    run_dir = run_job(tmp_path, "model=gaussian", "method=ddim", "dataset=folder", f"dataset.root={folder}",
                      "batch_size=2", "save_png=true")
    lines = [json.loads(x) for x in (run_dir / "records.jsonl").read_text().splitlines()]
    assert [r["item_id"] for r in lines] == ["0.png", "1.png", "2.png", "3.png", "4.png"]
    assert [r["status"] for r in lines] == ["ok", "ok", "skipped", "ok", "ok"]
    assert len(list((run_dir / "recon").rglob("*.png"))) == 4  # written before their records, off the main thread


# --------------------------------------------------------------------------------------------------------------------
# GPU fast paths on the CPU
# --------------------------------------------------------------------------------------------------------------------


def test_compile_and_channels_last_validate_and_run_on_cpu(tmp_path, tiny_model_cache, monkeypatch):
    args = ("model=tiny-sd", f"paths.cache={tiny_model_cache}", "method=ddim", "method.num_steps=4", "dataset.limit=2")
    plain = read_records(run_job(tmp_path, *args, name="plain"))
    fast_dir = run_job(tmp_path, *args, "model.compile=max-autotune", "model.channels_last=true", name="fast")
    manifest = json.loads((fast_dir / "run.json").read_text())
    assert manifest["fast_paths"]["compile"] == "none" and "not applied on cpu" in manifest["fast_paths"]["note"]
    assert "processors" in manifest["model"]["attention"]
    fast = read_records(fast_dir)
    assert fast.config_hash.iloc[0] == plain.config_hash.iloc[0]  # how fast, not what: same rows
    assert fast.psnr.tolist() == plain.psnr.tolist()
    with pytest.raises(ConfigError, match="model.compile"):
        Job(make_cfg(tmp_path, *args, "model.compile=fastest"), tmp_path / "x")
    with pytest.raises(ConfigError, match="model.channels_last"):
        Job(make_cfg(tmp_path, *args, "model.channels_last=maybe"), tmp_path / "x")

    # where compile applies (CUDA), its first calls are paid before the first image and recorded apart
    from easyinv.models.stable_diffusion import StableDiffusionModel

    monkeypatch.setattr(StableDiffusionModel, "accelerate", lambda self, compile, channels_last: {
        "compile": compile, "channels_last": channels_last})
    warm: list[int] = []
    original = Job._warm_up
    monkeypatch.setattr(Job, "_warm_up", lambda self, prompts: warm.append(len(prompts)) or original(self, prompts))
    again = run_job(tmp_path, *args, "model.compile=default", "batch_size=2", name="warm")
    assert warm == [2]
    assert json.loads((again / "run.json").read_text())["fast_paths"]["compile_seconds"] > 0
    assert not read_records(again).t_total.isna().any()


# --------------------------------------------------------------------------------------------------------------------
# Benchmark arithmetic
# --------------------------------------------------------------------------------------------------------------------


def _synthetic(label: str, precision: str, batch: int, n: int, t_total: float, walk: float, unet: float, nfe: int,
               warm: bool = False) -> list[dict]:
    return [{"bench_label": label, "precision": precision, "bench_batch": batch, "status": "ok", "warmup": warm,
             "t_total": t_total, "t_invert": walk / 2, "t_reconstruct": walk / 2, "unet_seconds": unet, "nfe": nfe,
             "t_encode": 0.05, "t_decode": 0.05, "t_metrics": 0.1, "peak_mem_mib": 100.0 * batch} for _ in range(n)]


def test_bench_summary_and_projection_arithmetic():
    rows = []
    for method, nfe in (("vae_only", 0), ("ddim", 100), ("renoise", 163), ("fixed_point", 140), ("easyinv", 100)):
        rows += _synthetic(method, "fp16", 1, 4, t_total=2.0, walk=1.0 if nfe else 0.0, unet=0.9 if nfe else 0.0,
                           nfe=nfe)
        rows += _synthetic(method, "fp16", 4, 8, t_total=1.0, walk=0.5 if nfe else 0.0, unet=0.48 if nfe else 0.0,
                           nfe=nfe)
        rows += _synthetic(method, "fp16", 4, 4, t_total=99.0, walk=99, unet=1, nfe=nfe, warm=True)  # ignored
    rows += _synthetic(NO_REG, "fp16", 4, 8, t_total=0.9, walk=0.45, unet=0.44, nfe=150)
    rows += _synthetic("easyinv", "fp32", 4, 8, t_total=4.0, walk=3.0, unet=2.9, nfe=100)
    summary = summarize_bench(pd.DataFrame(rows))

    ddim1 = summary[(summary.method == "ddim") & (summary.batch == 1)].iloc[0]
    assert ddim1.images == 4 and ddim1.images_per_s == pytest.approx(0.5)
    assert ddim1.unet_rows_per_s == pytest.approx(400 / 3.6) and ddim1.ms_per_nfe == pytest.approx(9.0)
    assert ddim1.loop_overhead == pytest.approx(0.1) and ddim1.vae_share == pytest.approx(0.05)
    assert ddim1.metrics_share == pytest.approx(0.05) and ddim1.peak_mem_mib == 100
    ddim4 = summary[(summary.method == "ddim") & (summary.batch == 4)].iloc[0]
    assert ddim4.images_per_s == pytest.approx(1.0) and ddim4.loop_overhead == pytest.approx(0.04)
    assert math.isnan(summary[summary.method == "vae_only"].iloc[0].ms_per_nfe)

    proj = project(summary, "fp16")
    assert proj["table1_s"] == pytest.approx(5 * 2298 / 1.0)  # every row at B = 4, 1 image/s
    assert proj["table1_batches"]["renoise (fp16)"] == 4 and not proj["table1_missing"]
    assert proj["table2_s"] == pytest.approx(2298 / 1.0 + 2298 / 0.25)
    assert math.isnan(project(summary[summary.method != "fixed_point"], "fp16")["table1_s"])
    assert project(summary[summary.method != "fixed_point"], "fp16")["table1_missing"] == ["fixed_point (fp16)"]

    reg = regularisation_share(summary)
    renoise4 = summary[(summary.method == "renoise") & (summary.batch == 4)].iloc[0]
    assert reg.iloc[0].regularisation_share == pytest.approx(((0.5 - 0.48) - (0.45 - 0.44)) / renoise4.walk_s_per_image)

    facts = {"device": "cuda:0", "device_name": "NVIDIA H100 80GB HBM3", "model": "sd14-random", "resolution": 512,
             "precision": "fp16", "dtype_unet": "float16", "compile": "max-autotune", "channels_last": False,
             "torch": "2", "diffusers": "0", "git_sha": "abc", "threads": 1, "date": "today"}
    assert device_slug(facts) == "cuda-nvidia-h100-80gb-hbm3-sd14-random-512px-fp16-compile-max-autotune"
    page = markdown(summary, facts)
    assert "Table 1 protocol (5 rows: vae_only, ddim, renoise, fixed_point, easyinv): **3.19 h**" in page
    assert "×2.00 at B = 4" in page


def test_sd3_random_has_sd3_mediums_shapes():
    """Built on the meta device (no memory): SD3-medium's transformer (~2.03 B), VAE and CLIP-L / CLIP-G sizes."""
    from easyinv.models.full_size import build_sd3_pipeline

    pipe = build_sd3_pipeline(0, device="meta")
    count = {part: sum(p.numel() for p in getattr(pipe, part).parameters())
             for part in ("transformer", "vae", "text_encoder", "text_encoder_2")}
    assert 2.0e9 < count["transformer"] < 2.1e9 and 80e6 < count["vae"] < 90e6
    assert 120e6 < count["text_encoder"] < 130e6 and 690e6 < count["text_encoder_2"] < 700e6
    assert pipe.text_encoder_3 is None and pipe.vae.config.shift_factor == 0.0609


def test_gpu_check_script_dry_run_and_refusal_without_a_gpu():
    import subprocess

    import torch

    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"
    dry = subprocess.run(["bash", str(script), "--dry-run"], capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    commands = [line for line in dry.stdout.splitlines() if line.startswith("+ ")]
    assert len(commands) == 4 and "-m gpu tests/test_gpu.py" in commands[0]
    assert all("model=sd14-random precision=fp16 device=cuda --batch-sizes 1 8" in c for c in commands[1:3])
    assert "model.compile=" in commands[2]
    assert "model=sd3-random precision=bf16 device=cuda" in commands[3]
    if not torch.cuda.is_available():
        real = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120)
        assert real.returncode == 2 and real.stderr.strip().splitlines() == [
            "gpu_check: no CUDA device visible to torch; nothing to check"]
