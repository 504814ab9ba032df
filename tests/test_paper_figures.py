"""EasyInv's figures (Figs 1-5) from runs on the tiny models: stored trajectory latents round-trip, every figure and
figures.md are written, a non-finite reconstruction is a marked tile; and the demo's comparison with the committed
reference table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import run_job
from PIL import Image

from easyinv.metrics import to_uint8
from easyinv.report import compare_tables
from easyinv.report.paper_figures import write_paper_figures
from easyinv.run.files import latents_path, recon_png_path, step_png_path
from easyinv.validation import ConfigError

# three probes: gradient (textured: Fig. 5), noise, white (large white areas: Figs 3-4)
PROBES = ["dataset.include=[probes]", "dataset.offset=2", "dataset.limit=3", "method.num_steps=8"]


@pytest.fixture(scope="module")
def figure_runs(tmp_path_factory, tiny_model_cache):
    """DDIM and EasyInv on tiny-sd, DDIM on tiny-sdxl, T = 8, midpoint latents kept."""
    root = tmp_path_factory.mktemp("figures")
    cache = f"paths.cache={tiny_model_cache}"
    runs = [run_job(root, "model=tiny-sd", cache, f"method={m}", *PROBES, "save_latents=[0,mid,8]", name=f"sd-{m}")
            for m in ("ddim", "easyinv")]
    runs.append(run_job(root, "model=tiny-sdxl", cache, "method=ddim", *PROBES, "save_png=true", name="sdxl-ddim"))
    return root, runs


def test_stored_latents_round_trip(figure_runs, tiny_sd):
    _, (ddim, *_) = figure_runs
    item = "probes/noise.png"
    stored = torch.load(latents_path(ddim, "ddim", item), weights_only=True)
    assert stored["steps"] == [0, 4, 8] and stored["num_steps"] == 8
    assert stored["latents"].shape == (3, 4, 8, 8) and stored["latents"].dtype == torch.float32
    recon = np.array(Image.open(recon_png_path(ddim, "ddim", item)))
    decoded = to_uint8(tiny_sd.decode(stored["latents"][-1:])).permute(0, 2, 3, 1).numpy()[0]
    assert np.array_equal(decoded, recon)  # the stored step-T latent is the reconstruction's latent
    assert np.array_equal(np.array(Image.open(step_png_path(ddim, "ddim", item, 8))), recon)
    assert step_png_path(ddim, "ddim", item, 4).is_file() and step_png_path(ddim, "ddim", item, 0).is_file()


def test_paper_figures_and_a_marked_non_finite_tile(figure_runs, tmp_path):
    root, (ddim, easy, sdxl) = figure_runs
    records = easy / "records.jsonl"  # pretend EasyInv's white.png went non-finite: a marked tile, counted
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    for row in rows:
        if row["item_id"] == "probes/white.png":
            row.update(status="nonfinite", reason="non-finite values in z_T", first_failure="invert step 3")
            recon_png_path(easy, "easyinv", row["item_id"]).unlink()
    records.write_text("".join(json.dumps(r) + "\n" for r in rows))
    written = write_paper_figures([ddim, easy, sdxl], tmp_path / "figs")
    assert sorted(written) == ["fig1", "fig2", "fig3", "fig4", "fig5", "figures_md"]
    assert all(p.is_file() and p.stat().st_size > 0 for p in written.values())
    md = written["figures_md"].read_text()
    for paper in ("Fig. 1", "Fig. 2", "Fig. 3", "Fig. 4", "Fig. 5"):
        assert paper in md
    fig4 = md[md.index("## fig4"):md.index("## fig5")]
    assert "tiny-sd" in fig4 and "easyinv: 1 non-finite" in fig4 and "ddim: none black or non-finite" in fig4
    fig1 = md[md.index("## fig1"):md.index("## fig2")]
    assert "easyinv: worst image probes/white.png (nonfinite" in fig1  # a failure ranks first
    assert "tiny-sdxl" in md[md.index("## fig3"):md.index("## fig4")]
    assert "step 4 of 8" in md[md.index("## fig2"):md.index("## fig3")]


def test_save_latents_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="save_latents"):
        run_job(tmp_path, "method.num_steps=8", "save_latents=[9]")


def test_compare_tables_ignores_timing_and_last_decimals(tmp_path):
    base = pd.DataFrame({"dataset": ["samples"] * 2, "model": ["gaussian"] * 2, "label": ["ddim", "easyinv"],
                         "precision": ["fp32"] * 2, "n_ok": [13, 13], "nfe_mean": [100.0, 100.0],
                         "lpips_mean": [0.0001, 0.001], "ssim_mean": [0.9947, 0.954], "psnr_mean": [43.693935, 31.19],
                         "time_s_mean": [0.06, 0.07]})
    ref, new = tmp_path / "ref.csv", tmp_path / "new.csv"
    base.to_csv(ref, index=False)
    changed = base.assign(psnr_mean=[43.693880, 31.19], time_s_mean=[0.2, 0.3])  # 5th decimal and timing: equal
    changed.to_csv(new, index=False)
    assert compare_tables(new, ref) == []
    base.assign(psnr_mean=[43.70, 31.19], nfe_mean=[100.0, 98.0]).to_csv(new, index=False)
    diffs = compare_tables(new, ref)
    assert len(diffs) == 2 and "psnr_mean 43.700 (reference 43.694)" in diffs[0] and "nfe_mean" in diffs[1]
    base.iloc[:1].to_csv(new, index=False)
    assert compare_tables(new, ref) == ["samples / gaussian / easyinv / fp32: missing from the new table"]
