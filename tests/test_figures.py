"""Figures from tiny synthetic runs: file names shared with the runner, every figure written, missing inputs skipped."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from easyinv.report import write_report
from easyinv.report.figures import qualitative_grid, write_figures
from easyinv.run.files import recon_png_path, ref_png_path, safe_name, save_png
from easyinv.run.records import Record, RecordWriter, read_records

ITEMS = ("val2017/000000000139.jpg", "val2017/000000000285.jpg", "flat white")
LABELS = ("ddim", "easyinv")


def test_safe_name_is_a_plain_file_name_and_injective():
    assert safe_name("000000000139") == "000000000139"  # already safe: unchanged
    names = [safe_name(i) for i in ("a/b", "a_b", "a b", "../a/b", "a\\b")]
    assert len(set(names)) == len(names)
    assert all("/" not in n and "\\" not in n and not n.startswith(".") for n in names)
    assert safe_name("a/b") == safe_name("a/b")
    assert ref_png_path("run", "a/b").parent.name == "ref"
    assert recon_png_path("run", "renoise+easyinv", "a/b").parent.name == safe_name("renoise+easyinv")


def _write_run(run_dir, save_pngs: bool) -> None:
    rng = np.random.default_rng(0)
    with RecordWriter(run_dir / "records.jsonl") as writer:
        for k, label in enumerate(LABELS):
            for i, item in enumerate(ITEMS):
                ref = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                rec = np.clip(ref.astype(int) + rng.integers(-20, 21, ref.shape), 0, 255).astype(np.uint8)
                failed = label == "easyinv" and i == 2
                if save_pngs:
                    save_png(ref, ref_png_path(run_dir, item))
                    if not failed:
                        save_png(rec, recon_png_path(run_dir, label, item))
                writer.append(Record(
                    item_id=item, method=label, method_label=label, config_hash=label,
                    status="nonfinite" if failed else "ok", reason="NaN latent after invert" if failed else None,
                    psnr=None if failed else 25.0 + k + i, ssim=None if failed else 0.7, lpips=None if failed else 0.2,
                    nfe=100, t_total=1.0 + k, t_invert=0.4, t_reconstruct=0.4, unet_seconds=0.6,
                ))


def _is_png(path) -> bool:
    with Image.open(path) as image:
        return image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100


def test_write_figures_makes_every_figure(tmp_path):
    run = tmp_path / "run"
    _write_run(run, save_pngs=True)
    paths = write_figures(read_records(run), [run], tmp_path / "figures")
    names = sorted(p.name for p in paths)
    assert names == ["failure_gallery.png", "metric_distributions.png", "qualitative_grid.png", "quality_vs_cost.png"]
    assert all(_is_png(p) for p in paths)


def test_figures_without_pngs_skip_only_the_image_grid(tmp_path, caplog):
    run = tmp_path / "run"
    _write_run(run, save_pngs=False)
    df = read_records(run)
    with caplog.at_level(logging.INFO, logger="easyinv.report.figures"):
        assert qualitative_grid(df, [run], tmp_path / "grid.png") is None
    assert "save_png=true" in caplog.text and not (tmp_path / "grid.png").exists()
    names = sorted(p.name for p in write_figures(df, [run], tmp_path / "figures"))
    assert names == ["failure_gallery.png", "metric_distributions.png", "quality_vs_cost.png"]


@pytest.mark.parametrize("item", ["a/b c", "x"])
def test_save_png_round_trips_pixels(tmp_path, item):
    image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    path = save_png(image, ref_png_path(tmp_path, item))
    assert np.array_equal(np.asarray(Image.open(path)), image)


def test_write_report_adds_the_figures(tmp_path):
    run = tmp_path / "run"
    _write_run(run, save_pngs=True)
    out = write_report([run], tmp_path / "report", paper_dir=None)
    assert out["fig_qualitative_grid"] == tmp_path / "report" / "figures" / "qualitative_grid.png"
    assert {"table1_md", "fig_metric_distributions", "fig_failure_gallery"} <= set(out) and "table2_md" not in out


def test_grid_reads_one_run_dir_per_method_with_flat_recon_folders(tmp_path):
    """The runner may keep one configuration per run dir and save ``recon/<item>.png`` without the label level."""
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    dirs = []
    for label in LABELS:
        run = tmp_path / label
        save_png(ref, ref_png_path(run, ITEMS[0]))
        save_png(255 - ref, run / "recon" / f"{safe_name(ITEMS[0])}.png")
        with RecordWriter(run / "records.jsonl") as writer:
            writer.append(Record(item_id=ITEMS[0], method=label, method_label=label, config_hash=label, psnr=5.0))
        dirs.append(run)
    assert qualitative_grid(read_records(dirs), dirs, tmp_path / "grid.png") == tmp_path / "grid.png"


def test_report_cli_chooses_the_grid_images(tmp_path):
    from easyinv.report import main

    run = tmp_path / "run"
    _write_run(run, save_pngs=True)
    main([str(run), "--out", str(tmp_path / "one"), "--items", ITEMS[1], "--paper", "none"])
    main([str(run), "--out", str(tmp_path / "all"), "--paper", "none"])
    with Image.open(tmp_path / "one" / "figures" / "qualitative_grid.png") as one, \
            Image.open(tmp_path / "all" / "figures" / "qualitative_grid.png") as every:
        assert one.size[1] < every.size[1]  # one chosen image: one row pair instead of several
