"""Failure at scale: the first non-finite step, the fp32 retry, degenerate (flat) reconstructions, out-of-memory
batches run in halves, and a runner killed with SIGKILL at many moments that still ends with every row exactly once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import run_job

from easyinv.models.gaussian import GaussianDenoiser, GaussianModel
from easyinv.report import summarize, table1, write_report
from easyinv.run.job_parts import image_seed
from easyinv.run.reconstruction import is_degenerate, is_out_of_memory
from easyinv.run.records import read_records

GAUSS = ("model=gaussian", "model.error=0.05", "dataset.limit=3")
QUALITY = ["item_id", "status", "psnr", "ssim", "lpips", "latent_mse", "nfe", "nfe_invert", "nfe_reconstruct"]


def _rows(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("item_id")[QUALITY].reset_index(drop=True)


# --------------------------------------------------------------------------------------------------------------------
# Non-finite values: where, and the fp32 retry
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def nan_in_reduced_precision(monkeypatch):
    """The Gaussian ε returns NaN for the second row of a batch at one timestep, only when the network runs in
    reduced precision (as an fp16 overflow would). Returns the poisoned timestep."""
    poisoned = {"t": None}
    original = GaussianDenoiser.predict

    def predict(self, z, t, rows):
        eps, cost = original(self, z, t, rows)
        if self.model.net_dtype != torch.float32 and t == poisoned["t"]:
            eps = eps.clone()
            eps[rows == 1] = float("nan")
        return eps, cost

    monkeypatch.setattr(GaussianDenoiser, "predict", predict)
    return poisoned


def test_nonfinite_rows_record_their_first_step_and_leave_the_batch_alone(tmp_path, nan_in_reduced_precision):
    args = (*GAUSS, "method=ddim", "precision=fp16", "batch_size=3")
    clean = read_records(run_job(tmp_path, *args, name="clean")).sort_values("item_id")
    grid_t = json.loads((tmp_path / "runs" / "clean" / "run.json").read_text())["grid"]["timesteps"]
    nan_in_reduced_precision["t"] = grid_t[11]  # ε is NaN in inversion iteration 11: the latent after it, step 12
    df = read_records(run_job(tmp_path, *args, name="poisoned")).sort_values("item_id")
    bad = df[df.status == "nonfinite"]
    assert len(bad) == 1 and bad.first_failure.iloc[0] == "invert step 12"
    assert "z_T" in bad.reason.iloc[0]
    good = df[df.status == "ok"]
    assert _rows(good).equals(_rows(clean[clean.item_id.isin(good.item_id)]))  # the other rows did not notice
    assert good.first_failure.isna().all()


def test_fp32_fallback_retries_the_image_alone_and_keeps_its_first_failure(tmp_path, nan_in_reduced_precision):
    args = (*GAUSS, "method=ddim", "precision=fp16", "batch_size=3")
    nan_in_reduced_precision["t"] = 21  # the second timestep of the 50-step grid
    poisoned = read_records(run_job(tmp_path, *args, name="none")).sort_values("item_id")
    failed_id = poisoned[poisoned.status == "nonfinite"].item_id.iloc[0]

    df = read_records(run_job(tmp_path, *args, "precision.fallback=fp32", name="fp32")).sort_values("item_id")
    assert set(df.status) == {"ok"}
    retried = df[df.item_id == failed_id].iloc[0]
    assert retried.retried == "fp32" and retried.first_failure == "invert step 2" and retried.batch_size == 1
    assert df[df.item_id != failed_id].retried.isna().all()
    reference = read_records(run_job(tmp_path, *args[:-2], "precision=fp32", name="ref"))  # the same image in fp32
    assert retried.psnr == pytest.approx(reference.set_index("item_id").psnr[failed_id], rel=1e-6)

    summary = summarize(df)
    assert summary.n_retried.iloc[0] == 1 and summary.n_ok.iloc[0] == 3
    md = write_report([tmp_path / "runs" / "fp32"], tmp_path / "report", paper_dir=None, figures=False)
    assert "1 ok after fp32 retry" in md["table1_md"].read_text()

    # a run without the fallback that left a non-finite row computes that row (only) again when resumed with it
    again = run_job(tmp_path, *args, "precision.fallback=fp32", name="none")
    assert set(read_records(again).status) == {"ok"}
    assert read_records(again, dedupe=False).item_id.tolist().count(failed_id) == 2 and len(
        read_records(again, dedupe=False)) == 4


def test_an_image_that_fails_in_fp32_too_is_recorded_once_and_not_retried_forever(tmp_path, monkeypatch):
    original = GaussianDenoiser.predict

    def always_nan(self, z, t, rows):
        eps, cost = original(self, z, t, rows)
        return eps.clone().fill_(float("nan")) if t == 21 else eps, cost

    monkeypatch.setattr(GaussianDenoiser, "predict", always_nan)
    args = ("model=gaussian", "method=ddim", "dataset.limit=1", "precision=fp16", "precision.fallback=fp32")
    run_dir = run_job(tmp_path, *args)
    row = read_records(run_dir).iloc[0]
    assert row.status == "nonfinite" and row.retried == "fp32" and row.first_failure == "invert step 2"
    run_job(tmp_path, *args)  # resuming does not try it again
    assert len(read_records(run_dir, dedupe=False)) == 1


def test_fallback_is_validated_and_out_of_the_config_hash(tmp_path):
    from helpers import make_cfg

    from easyinv.run.reconstruction import Job
    from easyinv.validation import ConfigError

    with pytest.raises(ConfigError, match="precision.fallback"):
        Job(make_cfg(tmp_path, "precision.fallback=fp64"), tmp_path / "x")
    hashes = {Job(make_cfg(tmp_path, "precision=fp16", f"precision.fallback={f}"), tmp_path / "x").hash
              for f in ("none", "fp32")}
    assert len(hashes) == 1


# --------------------------------------------------------------------------------------------------------------------
# Degenerate reconstructions
# --------------------------------------------------------------------------------------------------------------------


def test_degenerate_flag_marks_flat_reconstructions_of_textured_images_only():
    rng = np.random.default_rng(0)
    textured = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    dark_textured = rng.integers(0, 40, (64, 64, 3), dtype=np.uint8)  # dark, std ≈ 11.5
    black = np.zeros((64, 64, 3), np.uint8)
    almost_black = black + rng.integers(0, 3, (64, 64, 3), dtype=np.uint8)  # std < 1
    white = np.full((64, 64, 3), 255, np.uint8)
    assert is_degenerate(black, textured) and is_degenerate(almost_black, dark_textured)
    assert not is_degenerate(dark_textured, dark_textured)  # dark but textured is a real reconstruction
    assert not is_degenerate(white, white)  # a flat reference reconstructed flat is right


def test_a_black_reconstruction_is_flagged_measured_and_counted(tmp_path, monkeypatch):
    original = GaussianModel.decode
    monkeypatch.setattr(GaussianModel, "decode", lambda self, z: torch.full_like(original(self, z), -1.0))
    df = read_records(run_job(tmp_path, "model=gaussian", "method=ddim", "dataset.limit=6", name="black"))
    photos = df[df.item_id.str.startswith("photos/")]
    assert (photos.flag == "degenerate").all() and (photos.status == "ok").all() and photos.psnr.notna().all()
    t1 = table1(df)
    assert t1.n_degenerate.iloc[0] == 6 and t1.n_ok.iloc[0] == 6


# --------------------------------------------------------------------------------------------------------------------
# Out of memory
# --------------------------------------------------------------------------------------------------------------------


def test_out_of_memory_batches_run_in_halves_and_a_lone_failure_is_one_error_row(tmp_path, monkeypatch):
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    args = ("model=gaussian", "method=ddim", "dataset.limit=8", "batch_size=4")
    clean = read_records(run_job(tmp_path, *args, name="clean"))

    original = GaussianModel.encode
    sizes: list[int] = []
    hopeless = image_seed(0, "photos/coffee.png")

    def encode(self, x, seeds=None):
        sizes.append(x.shape[0])
        if x.shape[0] > 2 or hopeless in (seeds or []):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")
        return original(self, x, seeds)

    monkeypatch.setattr(GaussianModel, "encode", encode)
    df = read_records(run_job(tmp_path, *args, name="oom")).set_index("item_id")
    assert sizes[:2] == [4, 2] and 1 in sizes  # 4 → 2 + 2 → the half holding coffee → 1 + 1
    assert df.loc["photos/coffee.png", "status"] == "error" and "out of memory" in df.loc["photos/coffee.png",
                                                                                           "reason"]
    ok = df[df.status == "ok"]
    assert len(ok) == 7 and set(ok.batch_size) <= {1, 2}
    ref = clean.set_index("item_id").loc[ok.index]
    assert ok.psnr.tolist() == pytest.approx(ref.psnr.tolist(), rel=1e-6)  # halving changes no number


# --------------------------------------------------------------------------------------------------------------------
# SIGKILL
# --------------------------------------------------------------------------------------------------------------------

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


KILL_ARGS = ("model=gaussian", "model.error=0.05", "method=renoise", "method.num_steps=20", "dataset.limit=8",
             "batch_size=2")


def _command(root: Path) -> list[str]:
    return [sys.executable, "-m", "easyinv", "experiment=none", *KILL_ARGS, "metrics.lpips.random_trunk=true",
            "device=cpu", f"paths.root={root}", f"hydra.run.dir={root}/job"]


def _lines(path: Path) -> tuple[int, bool]:
    """Complete lines in a records file, and whether it ends inside a line."""
    if not path.is_file():
        return 0, False
    data = path.read_bytes()
    return data.count(b"\n"), bool(data) and not data.endswith(b"\n")


@pytest.mark.slow  # end to end in subprocesses: CI runs it (make test-slow)
def test_sigkill_at_many_moments_loses_and_duplicates_nothing(tmp_path):
    expected = read_records(run_job(tmp_path / "ref", *KILL_ARGS))  # uninterrupted, in this process (one thread)
    assert len(expected) == 8

    root, rng = tmp_path / "killed", random.Random(1234)
    records = root / "job" / "records.jsonl"
    moments = []
    # while starting, after n rows (random n, random extra delay), and twice in the middle of writing a row
    plan = ["start", "rows", "mid-write", "rows", "mid-write"]
    for kind in plan:
        env = {**ENV, "EASYINV_FAULT_WRITE_PAUSE": "0.3" if kind == "mid-write" else "0"}
        proc = subprocess.Popen(_command(root), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started, target = time.monotonic(), min(_lines(records)[0] + rng.randint(1, 2), 7)
        delay = rng.uniform(0.5, 2.0) if kind == "start" else rng.uniform(0.0, 0.3)
        while proc.poll() is None and time.monotonic() - started < 120:
            lines, partial = _lines(records)
            if (kind == "start" and time.monotonic() - started > delay) or (kind == "mid-write" and partial):
                break
            if kind == "rows" and lines >= target:
                time.sleep(delay)
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)  # a no-op if it already finished
        proc.wait()
        moments.append((kind, _lines(records)))
        if proc.returncode != -signal.SIGKILL:  # it finished before the kill: nothing left to interrupt
            break
    assert sum(1 for k, (_, partial) in moments if k == "mid-write" and partial) >= 1, moments  # a torn line
    assert len(moments) >= 5, moments

    final = subprocess.run(_command(root), env=ENV, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    raw = read_records(root / "job", dedupe=False)
    assert raw.item_id.is_unique  # no row computed twice, no duplicate line
    assert _rows(raw).equals(_rows(expected))  # and none lost: the uninterrupted run, row for row
