"""The runner end to end: records, tables and figures from real configs; resume; bad items; failures; validation.

Jobs are built from the real Hydra configs with the compose API and run in-process (the app's own multirun and
callbacks are exercised in test_cli.py and test_sweeps.py).
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import make_cfg, run_job

import easyinv.run.job_parts as job_parts  # the batch walk and config building every job kind uses
from easyinv.report import write_report
from easyinv.run.job_parts import image_seed, method_label
from easyinv.run.reconstruction import Job
from easyinv.run.records import read_records
from easyinv.validation import ConfigError

METHODS = ("ddim", "renoise", "fixed_point", "easyinv")


@pytest.mark.parametrize("model", ["gaussian", pytest.param("tiny-sd", marks=pytest.mark.slow)])  # tiny-sd: ~30 s
def test_three_images_four_methods_end_to_end(model, tmp_path, tiny_model_cache):
    extra = [f"paths.cache={tiny_model_cache}"] if model != "gaussian" else []
    for method in METHODS:
        run_job(tmp_path, f"model={model}", f"method={method}", "dataset.limit=3", "save_png=true", *extra,
                name=f"method={method}")
    df = read_records([tmp_path / "runs"])
    assert len(df) == 12 and set(df.status) == {"ok"}
    assert df.groupby("method").size().to_dict() == dict.fromkeys(METHODS, 3)
    # NFE per image follows the method (docs/methods.md): DDIM/EasyInv 100, ReNoise 163, fixed-point T=20 x 6 + 20
    assert df.groupby("method").nfe.first().to_dict() == {"ddim": 100, "easyinv": 100, "renoise": 163,
                                                          "fixed_point": 140}
    assert (df.nfe == df.nfe_invert + df.nfe_reconstruct).all()
    assert (df[df.method == "ddim"].unet_calls == 100).all()  # no guidance: one row per call
    assert df[["psnr", "ssim", "lpips", "latent_mse", "t_total"]].notna().all().all()
    files = write_report([tmp_path / "runs"], tmp_path / "report", figures=True)
    table = files["table1_csv"].read_text().strip().splitlines()
    assert len(table) == 1 + 4  # header + one row per method
    for name in ("fig_qualitative_grid", "fig_metric_distributions"):
        assert name in files and files[name].stat().st_size > 0, sorted(files)
    assert len(list((tmp_path / "runs" / "method=ddim" / "recon").rglob("*.png"))) == 3
    manifest = json.loads((tmp_path / "runs" / "method=ddim" / "run.json").read_text())
    assert manifest["config_hash"] == df[df.method == "ddim"].config_hash.iloc[0]
    assert manifest["grid"]["timesteps"][:2] == [1, 21]


def test_resume_after_a_kill_recomputes_nothing_and_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    args = ("model=gaussian", "model.error=0.05", "method=easyinv", "dataset.limit=4")
    reference = read_records([run_job(tmp_path / "a", *args)])

    calls: list[str] = []
    original = Job._compute

    def compute(self, items, images, seeds):
        calls.extend(it.id for it in items)
        if len(calls) == 3:
            raise KeyboardInterrupt  # a kill in the middle of the third image
        return original(self, items, images, seeds)

    monkeypatch.setattr(Job, "_compute", compute)
    with pytest.raises(KeyboardInterrupt):
        run_job(tmp_path / "b", *args)
    first = calls[:2]
    assert len(read_records([tmp_path / "b"])) == 2  # finished rows are on disk
    calls.clear()
    run_job(tmp_path / "b", *args)
    assert not set(calls) & set(first)  # the finished images were not recomputed
    resumed = read_records([tmp_path / "b"])
    cols = ["item_id", "psnr", "ssim", "lpips", "latent_mse", "nfe", "status"]
    assert resumed.sort_values("item_id")[cols].reset_index(drop=True).equals(
        reference.sort_values("item_id")[cols].reset_index(drop=True))
    calls.clear()
    run_job(tmp_path / "b", *args)  # a third run has nothing to do
    assert calls == [] and len(read_records([tmp_path / "b"])) == 4


def test_bad_items_are_recorded_as_skipped_and_the_run_goes_on(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (80, 80), (200, 10, 10)).save(folder / "a.png")
    (folder / "b.jpg").write_bytes(b"not an image")
    (folder / "c.png").write_bytes(b"")
    Image.new("RGB", (80, 80), (10, 200, 10)).save(folder / "d.png")
    run_dir = run_job(tmp_path, "model=gaussian", "method=ddim", "dataset=folder", f"dataset.root={folder}")
    df = read_records([run_dir]).set_index("item_id")
    assert df.status.to_dict() == {"a.png": "ok", "b.jpg": "skipped", "c.png": "skipped", "d.png": "ok"}
    assert df.loc["c.png", "reason"] and df.loc["b.jpg", "reason"]


def test_nonfinite_rows_are_recorded_not_raised(tmp_path, monkeypatch):
    real_invert = job_parts.invert_with

    def nan_for_second_row(method, den, z0, grid, seeds, watch=None):
        out = real_invert(method, den, z0, grid, seeds, watch)
        out.z_T[1:2] = float("nan")
        return out

    monkeypatch.setattr(job_parts, "invert_with", nan_for_second_row)
    run_dir = run_job(tmp_path, "model=gaussian", "method=ddim", "dataset.limit=2", "batch_size=2")
    df = read_records([run_dir]).sort_values("item_id")
    assert sorted(df.status) == ["nonfinite", "ok"]
    assert "z_T" in df[df.status == "nonfinite"].reason.iloc[0]


def test_a_failing_batch_becomes_error_rows_and_is_retried_on_resume(tmp_path, monkeypatch):
    original = Job._compute

    def boom(self, items, images, seeds):
        if items[0].id.startswith("photos/astronaut"):
            raise RuntimeError("CUDA out of memory (simulated)")
        return original(self, items, images, seeds)

    monkeypatch.setattr(Job, "_compute", boom)
    run_dir = run_job(tmp_path, "model=gaussian", "method=ddim", "dataset.limit=2")
    df = read_records([run_dir])
    assert sorted(df.status) == ["error", "ok"] and "out of memory" in df[df.status == "error"].reason.iloc[0]
    monkeypatch.setattr(Job, "_compute", original)
    run_job(tmp_path, "model=gaussian", "method=ddim", "dataset.limit=2")
    assert sorted(read_records([run_dir]).status) == ["ok", "ok"]  # the error row was retried


def test_batch_of_three_equals_three_single_runs(tmp_path):
    args = ("model=gaussian", "model.error=0.05", "method=renoise", "dataset.limit=3")
    single = read_records([run_job(tmp_path, *args, "batch_size=1", name="single")]).sort_values("item_id")
    batched = read_records([run_job(tmp_path, *args, "batch_size=3", name="batched")]).sort_values("item_id")
    for col in ("psnr", "latent_mse", "nfe", "seed"):
        assert batched[col].tolist() == pytest.approx(single[col].tolist(), rel=1e-5), col
    assert batched.config_hash.iloc[0] == single.config_hash.iloc[0]  # batching does not change the config


@pytest.mark.parametrize(("override", "message"), [
    ("method.eta=1.5", "method.eta"),
    ("method.interval=[0.3,0.2]", "method.interval"),
    ("method.k=0", "method.k"),
    ("precision.unet=float8", "precision.unet"),
    ("batch_size=0", "batch_size"),
    ("method.interval=[0.3,0.31]", "selects no iteration"),
])
def test_invalid_configs_fail_before_any_model_loads(override, message, tmp_path, monkeypatch):
    loaded = []
    monkeypatch.setattr(job_parts, "build", _spy(job_parts.build, loaded))
    with pytest.raises(ConfigError, match=message):
        Job(make_cfg(tmp_path, "model=sd14", "paths.models=/nonexistent", "method=easyinv", override), tmp_path)
    assert not any("load" in str(node) for node in loaded)


def _spy(build, seen):
    def spy(node, **kwargs):
        seen.append(str(getattr(node, "_target_", "")) + (" load" if "name" in kwargs else ""))
        return build(node, **kwargs)
    return spy


def test_seeds_and_labels_are_functions_of_their_inputs():
    assert image_seed(0, "a") == image_seed(0, "a") != image_seed(1, "a")
    assert method_label("easyinv", ["method.eta=0.3", "model=sd14", "method.k=2"]) == "easyinv[eta=0.3,k=2]"
    assert method_label("renoise", ["+method/blend=easyinv"]) == "renoise[blend=easyinv]"
    assert method_label("ddim", ["dataset.limit=3"]) == "ddim"


def test_trajectory_stays_float32_when_the_unet_runs_in_bf16(tmp_path, tiny_model_cache):
    run_dir = run_job(tmp_path, "model=tiny-sd", "precision=bf16", "method=ddim", "dataset.limit=1",
                      f"paths.cache={tiny_model_cache}")
    df = read_records([run_dir])
    assert df.status.tolist() == ["ok"] and df.precision.tolist() == ["bf16"]
    assert torch.isfinite(torch.tensor(df.latent_mse.tolist())).all()


@pytest.mark.parametrize(("prompt", "nfe"), [("caption", 200), ("empty", 100)])
def test_guidance_costs_nfe_only_where_it_changes_the_result(prompt, nfe, tmp_path, tiny_model_cache):
    """SD-1.x at scale 7.5: a caption against "" costs 2 rows per call; "" against "" is a no-op and costs 1."""
    run_dir = run_job(tmp_path, "model=tiny-sd", "method=ddim", "dataset.limit=1", f"dataset.prompt={prompt}",
                      "guidance.invert=7.5", "guidance.reconstruct=7.5", f"paths.cache={tiny_model_cache}")
    df = read_records([run_dir])
    assert df.nfe.tolist() == [nfe] and df.unet_calls.tolist() == [100]
