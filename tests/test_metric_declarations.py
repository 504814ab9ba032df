"""A metric is declared once (easyinv.metrics.Metric): the built-in facts are pinned, and a metric declared at run time
(L1: one function, one declaration) is computed by ImageMetrics and reaches the record reader, Table 1, its CSV,
report.html and a figure; records written before it existed still report, with an empty column."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

import easyinv.metrics as metric_module
from easyinv.metrics import EDIT_METRICS, ImageMetrics, Metric, declare, declared
from easyinv.report import write_report
from easyinv.report.columns import TIME, metrics, paired_metrics, shown_pairs, table1_metrics
from easyinv.report.tables import csv_columns, table1
from easyinv.run.records import RecordWriter, read_records

METHODS = ("ddim", "easyinv")
N = 7


def l1(rec, ref):
    """Mean absolute error per image, (B,): the metric a contributor adds."""
    return (rec - ref).abs().flatten(1).mean(dim=1)


L1 = Metric("l1", "L1", higher_is_better=False, decimals=4, fn=l1, table1=True, plot_lower_bound=0.0)


@pytest.fixture
def with_l1(monkeypatch):
    """L1 declared for one test (monkeypatch takes it out again)."""
    monkeypatch.setitem(metric_module.METRICS, "l1", L1)
    return L1


def _images(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 256, size=(N, 16, 16, 3), dtype=np.uint8)
    noise = rng.integers(-8 * (seed + 1), 8 * (seed + 1) + 1, size=ref.shape)
    return np.clip(ref.astype(int) + noise, 0, 255).astype(np.uint8), ref


def _write_run(root, method: str, scores: list[dict[str, float]]) -> None:
    """Records as the job writes them: plain dicts with one key per measured metric."""
    with RecordWriter(root / method / "records.jsonl") as writer:
        for i, values in enumerate(scores):
            writer.append({"item_id": f"x/{i}", "method": method, "method_label": method, "status": "ok",
                           "dataset": "d", "model": "m", "precision": "fp32", "config_hash": method, "device": "cpu",
                           "nfe": 10, "t_total": 1.0 + i, "latent_mse": 0.01 * (i + 1), **values})


def test_the_built_in_declarations_are_the_tables_facts():
    names = [m.name for m in declared()]
    assert names == ["lpips", "ssim", "psnr", "latent_mse"]  # the order of every table's and CSV's columns
    assert [m.heading for m in declared()] == ["LPIPS ↓", "SSIM ↑", "PSNR ↑", "latent MSE ↓"]
    assert [m.title for m in declared()] == ["LPIPS ↓", "SSIM ↑", "PSNR (dB) ↑", "latent MSE ↓"]
    assert [m.decimals for m in declared()] == [3, 3, 3, 5]
    assert [m.name for m in table1_metrics()] == ["lpips", "ssim", "psnr"]
    # the paired family, written down: Holm runs per metric across the rows compared with one baseline
    assert [m.name for m in paired_metrics()] == ["lpips", "ssim", "psnr", "latent_mse"]
    assert [m.name for m in shown_pairs()] == ["lpips", "ssim", "psnr"]
    assert Metric("x", "X", higher_is_better=True, decimals=1).paired is False  # joining is a declared choice
    assert (TIME.heading, TIME.decimals, TIME.lower_is_better) == ("Time/img (s)", 2, True)
    assert [m.heading for m in EDIT_METRICS] == [
        "Structure ×10³ ↓", "BG PSNR ↑", "BG LPIPS ×10³ ↓", "BG MSE ×10⁴ ↓", "BG SSIM ×10² ↑", "CLIP whole ↑",
        "CLIP edited ↑", "CLIP source ↑"]
    assert csv_columns() == (  # table1.csv's columns as they were written before the declarations
        "dataset", "model", "method", "method_label", "label", "precision", "device", "config_hash", "n_images",
        "n_ok", "n_skipped", "n_nonfinite", "n_error", "n_degenerate", "n_retried",
        *[f"{m}_{s}" for m in names for s in ("mean", "ci95", "n")],
        "lpips_comparable", "time_s_mean", "time_s_ci95", "time_s_n", "nfe_mean", "ms_per_nfe", "non_unet_share",
        *[f"{k}_{m}" for k in ("paper", "diff") for m in ("lpips", "ssim", "psnr", "time_s")],
        "pair_baseline",
        *[f"pair_{m}_{s}" for m in names for s in ("delta", "lo", "hi", "p", "p_holm", "win", "n", "left_out",
                                                   "significant", "mean", "mean_lo", "mean_hi")],
    )


def test_the_edit_metrics_keys_are_what_edit_metrics_compute():
    from easyinv.editing.metrics import PNP_KEYS

    assert {m.name for m in EDIT_METRICS} <= set(PNP_KEYS)


def test_a_name_is_declared_once():
    with pytest.raises(ValueError, match="already declared"):
        declare(Metric("psnr", "PSNR", higher_is_better=False, decimals=1))
    with pytest.raises(ValueError, match="record key"):
        Metric("L 1", "L1", higher_is_better=False, decimals=4)


def test_importing_the_declarations_loads_no_torch():
    """The report layer reads the declarations; reading them loads neither torch nor torchmetrics."""
    import subprocess
    import sys

    code = "import sys, easyinv.metrics; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def test_a_metric_declared_at_run_time_reaches_every_output(tmp_path, with_l1, monkeypatch):
    assert metrics()[-1] is L1 and "l1" in [m.name for m in table1_metrics()]
    measured = {}
    for k, method in enumerate(METHODS):
        rec, ref = _images(k)
        scores = ImageMetrics(enabled=["psnr", "ssim", "l1"]).measure(rec, ref)
        expected = np.abs(rec.astype(float) - ref.astype(float)).reshape(N, -1).mean(axis=1) / 255
        np.testing.assert_allclose([s["l1"] for s in scores], expected, rtol=1e-5)
        measured[method] = expected
        _write_run(tmp_path / "runs", method, scores)
    assert ImageMetrics(enabled=["l1"]).describe()["enabled"] == ["l1"]

    records = read_records(tmp_path / "runs")
    assert records["l1"].dtype == "float64" and records["l1"].notna().all()
    titles: list[str] = []
    bounds: dict[str, float] = {}
    from easyinv.report import figures

    original = figures.save_figure

    def spy(fig, path):
        for ax in fig.axes:
            titles.append(ax.get_title())
            if ax.get_title() == "L1 ↓":
                bounds["bottom"] = ax.get_ylim()[0]
        return original(fig, path)

    monkeypatch.setattr(figures, "save_figure", spy)
    out = tmp_path / "report"
    written = write_report(tmp_path / "runs", out, paper_dir=None, html=True)

    md = (out / "table1.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Method"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[columns.index("PSNR ↑") + 1] == "L1 ↓" and "Time/img (s)" in columns  # before time
    assert "L1" not in " ".join(c for c in columns if c.startswith("Δ"))  # not paired: no Δ column
    csv = pd.read_csv(written["table1_csv"]).set_index("method")
    for method in METHODS:
        assert csv.loc[method, "l1_mean"] == pytest.approx(measured[method].mean(), rel=1e-6)
        assert csv.loc[method, "l1_n"] == N
    assert "pair_l1_delta" not in csv.columns
    assert f"{measured['easyinv'].mean():.4f}" in md  # the declared decimals

    html = (out / "report.html").read_text()
    data = json.loads(re.search(r'<script type="application/json" class="view-data">(.*?)</script>', html, re.S)[1])
    keys = [m["key"] for m in data["metrics"]]
    assert "l1" in keys and data["metrics"][keys.index("l1")]["name"] == "L1 ↓"
    assert data["metrics"][keys.index("l1")]["lower"] is True

    assert "L1 ↓" in titles and bounds["bottom"] == 0.0  # the box plot, with the declared lower bound


def test_joining_the_paired_family_leaves_the_others_p_values_alone(tmp_path, monkeypatch):
    for k, method in enumerate(METHODS):
        _write_run(tmp_path, method, [{"psnr": 30.0 + k + 0.1 * i * i, "ssim": 0.9 - 0.01 * k * i,
                                       "lpips": 0.1 + 0.002 * k * i * i, "l1": 0.01 * (k + i)} for i in range(N)])
    from easyinv.report.paired import PairedSettings

    settings = PairedSettings(baseline="ddim", bootstrap=200)
    before = table1(read_records(tmp_path), paired=settings)
    monkeypatch.setitem(metric_module.METRICS, "l1",
                        Metric("l1", "L1", higher_is_better=False, decimals=4, fn=l1, table1=True, paired=True))
    after = table1(read_records(tmp_path), paired=settings)
    stats = [c for c in before.columns if c.startswith("pair_")]
    pd.testing.assert_frame_equal(before[stats], after[stats])
    assert after["pair_l1_win"].dropna().tolist() == [0.0]  # easyinv's L1 is higher on every image


def test_records_written_before_a_metric_still_report(tmp_path, with_l1):
    _write_run(tmp_path / "old", "ddim", [{"psnr": 30.0 + i} for i in range(N)])  # no l1 key at all
    records = read_records(tmp_path / "old")
    assert "l1" in records.columns and records["l1"].isna().all() and records["l1"].dtype == "float64"
    written = write_report(tmp_path / "old", tmp_path / "report", paper_dir=None, html=True)
    md = written["table1_md"].read_text()
    row = next(line for line in md.splitlines() if line.startswith("| ddim"))
    header = next(line for line in md.splitlines() if line.startswith("| Method"))
    cells = dict(zip([c.strip() for c in header.strip("|").split("|")], [c.strip() for c in row.strip("|").split("|")],
                     strict=True))
    assert cells["L1 ↓"] == "—" and cells["PSNR ↑"].startswith("33.000")
    assert pd.isna(pd.read_csv(written["table1_csv"])["l1_mean"].iloc[0])
