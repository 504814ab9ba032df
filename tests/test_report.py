"""Tables from synthetic records: rows, hand-checked means and CIs, paper columns and differences, † marking, sweeps."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from skimage.metrics import peak_signal_noise_ratio

from easyinv.metrics import ImageMetrics
from easyinv.report import DEFAULT_PAPER_DIR, load_paper, main, mean_ci, table1, table2, write_report
from easyinv.report.sweep_tables import best_configs, sweep_table, swept_keys
from easyinv.run.records import Record, RecordWriter, read_records

METHODS = ("vae_only", "ddim", "renoise", "fixed_point", "easyinv")
PSNR = [28.0, 29.0, 30.0, 31.0, 32.0]  # per image, before the method/precision offset
T_975_4 = 2.776445105  # Student t, 97.5 % quantile, 4 degrees of freedom (printed tables)


def _rows(method: str, precision: str, offset: float, comparable: bool = True) -> list[Record]:
    rows = []
    for i, base in enumerate(PSNR):
        rows.append(Record(
            item_id=f"val/{i}", method=method, method_label=method, dataset="coco", model="sd14", precision=precision,
            config_hash=f"{method}-{precision}", psnr=base + offset, ssim=0.6 + 0.01 * i, lpips=0.30 + 0.01 * i,
            latent_mse=0.001 * (i + 1), nfe=100, t_invert=1.0, t_reconstruct=1.0, unet_seconds=1.5,
            t_total=100.0 if i == 0 else 2.0 + 0.5 * i, warmup=i == 0, lpips_comparable=comparable, device="cpu",
        ))
    return rows


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for precision, shift in (("fp16", 0.0), ("fp32", 0.5)):
        for k, method in enumerate(METHODS):
            with RecordWriter(root / method / precision / "records.jsonl") as writer:
                for record in _rows(method, precision, offset=shift + k, comparable=method != "renoise"):
                    writer.append(record)
                if method == "renoise":
                    writer.append(Record(item_id="val/5", method=method, method_label=method, dataset="coco",
                                         model="sd14", precision=precision, config_hash=f"{method}-{precision}",
                                         status="nonfinite", reason="NaN latent", device="cpu"))
    return root


@pytest.fixture(scope="module")
def records(run_dir) -> pd.DataFrame:
    return read_records(run_dir)


def test_mean_ci_by_hand():
    mean, half, n = mean_ci([28, 29, 30, 31, 32, float("nan")])
    assert (mean, n) == (30.0, 5)
    assert half == pytest.approx(T_975_4 * math.sqrt(2.5) / math.sqrt(5), rel=1e-8)
    assert math.isnan(mean_ci([1.0])[1]) and mean_ci([])[2] == 0


def test_table1_rows_means_and_paper_differences(records):
    t1 = table1(records, load_paper(DEFAULT_PAPER_DIR))
    # fp32 first (as the precision order says), each in the paper's method order, the VAE ceiling last
    assert list(t1["label"]) == ["ddim", "renoise", "fixed_point", "easyinv", "vae_only"] * 2
    assert list(t1["precision"]) == ["fp32"] * 5 + ["fp16"] * 5
    ddim = t1[(t1["label"] == "ddim") & (t1["precision"] == "fp16")].iloc[0]
    assert ddim["n_ok"] == 5 and ddim["psnr_mean"] == pytest.approx(31.0)  # offset 1 for ddim (index 1)
    assert ddim["psnr_ci95"] == pytest.approx(T_975_4 * math.sqrt(2.5 / 5), rel=1e-8)
    assert ddim["time_s_mean"] == pytest.approx(np.mean([2.5, 3.0, 3.5, 4.0]))  # warm-up image excluded
    assert ddim["time_s_n"] == 4
    assert ddim["ms_per_nfe"] == pytest.approx(15.0)  # 1000 * 1.5 s / 100 NFE
    assert ddim["non_unet_share"] == pytest.approx(0.25)  # 1 - 1.5 / (1 + 1)
    assert ddim["paper_psnr"] == 29.717 and ddim["diff_psnr"] == pytest.approx(31.0 - 29.717)
    assert ddim["diff_lpips"] == pytest.approx(0.32 - 0.328)
    renoise = t1[(t1["label"] == "renoise") & (t1["precision"] == "fp16")].iloc[0]
    assert renoise["n_nonfinite"] == 1 and renoise["n_ok"] == 5
    assert not renoise["lpips_comparable"] and math.isnan(renoise["diff_lpips"])
    assert renoise["diff_ssim"] == pytest.approx(0.62 - 0.641)
    ceiling = t1[t1["label"] == "vae_only"]
    assert ceiling["paper_psnr"].isna().all() and ceiling["diff_psnr"].isna().all()


def test_table2_pairs_precisions_with_the_paper(records):
    t2 = table2(records, load_paper(DEFAULT_PAPER_DIR))
    easyinv = t2[t2["label"] == "easyinv"].set_index("precision")
    assert list(easyinv.index) == ["fp32", "fp16"]
    assert easyinv.loc["fp32", "paper_psnr"] == 30.184 and easyinv.loc["fp16", "paper_psnr"] == 30.189
    assert easyinv.loc["fp32", "diff_time_s"] == pytest.approx(3.25 - 9)
    assert t2.loc[t2["label"] == "ddim", "paper_psnr"].isna().all()  # Table 2 of the paper is EasyInv only
    assert table2(records[records["precision"] == "fp16"]) is None


def test_write_report_files_and_markings(run_dir, tmp_path):
    out = write_report([run_dir], tmp_path / "report", figures=False)
    assert {"table1_md", "table1_tex", "table1_csv", "table2_md", "table2_tex", "table2_csv"} <= set(out)
    md = (tmp_path / "report" / "table1.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(lines) == 11  # header + 10 rows
    renoise_row = next(line for line in lines if line.startswith("| renoise ") and "| fp16 |" in line)
    assert "0.320 ± 0.020 †" in renoise_row and "1 nonfinite" in renoise_row
    ddim_row = next(line for line in lines if line.startswith("| ddim ") and "| fp16 |" in line)
    assert "31.000 ± 1.963" in ddim_row and "+1.283" in ddim_row and "29.717" in ddim_row
    assert "† LPIPS from a random" in md
    tex = (tmp_path / "report" / "table1.tex").read_text()
    assert r"\begin{tabular}" in tex and r"$^\dagger$" in tex and r"$\pm$" in tex and "fixed\\_point" in tex
    csv = pd.read_csv(tmp_path / "report" / "table1.csv")
    assert len(csv) == 10 and {"psnr_mean", "psnr_ci95", "paper_psnr", "diff_psnr", "lpips_comparable"} <= set(csv)
    again = write_report([run_dir], tmp_path / "again", figures=False)
    assert again["table1_md"].read_bytes() == out["table1_md"].read_bytes()  # deterministic


def test_report_uses_per_image_psnr_not_pooled(tmp_path):
    """Two images with very different errors: the report's PSNR is the mean of per-image PSNRs."""
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    rec = ref.copy()
    rec[0] = np.clip(ref[0].astype(int) + rng.integers(-2, 3, size=ref[0].shape), 0, 255)
    rec[1] = np.clip(ref[1].astype(int) + rng.integers(-60, 61, size=ref[1].shape), 0, 255)
    values = ImageMetrics(enabled=["psnr"]).measure(rec, ref)
    with RecordWriter(tmp_path / "records.jsonl") as writer:
        for i, v in enumerate(values):
            writer.append(Record(item_id=str(i), method="ddim", config_hash="h", **v))
    per_image = [peak_signal_noise_ratio(ref[i], rec[i], data_range=255) for i in range(2)]
    pooled = 10 * math.log10(255**2 / np.mean((rec.astype(float) - ref) ** 2))
    reported = table1(read_records(tmp_path)).iloc[0]["psnr_mean"]
    assert reported == pytest.approx(np.mean(per_image), abs=1e-4)
    assert abs(reported - pooled) > 5


def _sweep_records(tmp_path) -> pd.DataFrame:
    with RecordWriter(tmp_path / "records.jsonl") as writer:
        for eta, quality in ((0.3, 29.0), (0.5, 31.0), (0.7, 30.0)):
            for i in range(3):
                writer.append(Record(item_id=str(i), method="easyinv", method_label="easyinv", model="sd14",
                                     precision="fp16", config_hash=f"eta{eta}", psnr=quality + 0.1 * i,
                                     lpips=0.5 - eta / 2, extra={"method.eta": eta, "method.interval": "[2, 12]",
                                                                 "prompt": f"a photo {i}"}))
    return read_records(tmp_path)


def test_sweep_table_and_best_configs(tmp_path):
    df = _sweep_records(tmp_path)
    assert swept_keys(df) == ["method.eta"]  # constant keys and per-image ones (the prompt) are not swept
    sweep = sweep_table(df, ["method.eta"])
    assert list(sweep["method.eta"]) == [0.3, 0.5, 0.7]
    assert sweep["psnr_mean"].tolist() == pytest.approx([29.1, 31.1, 30.1])
    best = best_configs(sweep)
    assert best["psnr"]["config"] == {"method.eta": 0.5} and best["psnr"]["value"] == pytest.approx(31.1)
    assert best["lpips"]["config"] == {"method.eta": 0.7}
    json.dumps(best)  # plain Python values only
    with pytest.raises(KeyError, match="method.k"):
        sweep_table(df, ["method.k"])


def test_one_label_for_several_configs_is_split_by_the_swept_value(tmp_path):
    t1 = table1(_sweep_records(tmp_path))
    assert list(t1["label"]) == [f"easyinv (method.eta={eta})" for eta in (0.3, 0.5, 0.7)]
    out = write_report(tmp_path, tmp_path / "report", paper_dir=None, figures=False)
    assert "sweep_md" in out and json.loads(out["best_configs"].read_text())["psnr"]["config"]["method.eta"] == 0.5


def test_cli_writes_tables(run_dir, tmp_path, capsys):
    assert main([str(run_dir), "--out", str(tmp_path / "cli"), "--no-figures", "--paper", "none"]) == 0
    assert (tmp_path / "cli" / "table1.md").is_file() and "table1_md" in capsys.readouterr().out
    assert "Paper" not in (tmp_path / "cli" / "table1.md").read_text()


def test_identical_reconstruction_keeps_an_infinite_psnr(tmp_path):
    """PSNR of a pixel-identical image is +inf: it survives the record round trip and prints as ∞, not as missing."""
    with RecordWriter(tmp_path / "records.jsonl") as writer:
        for i, value in enumerate((30.0, math.inf)):
            writer.append(Record(item_id=f"x/{i}", method="vae_only", method_label="vae_only", dataset="d", model="m",
                                 precision="fp32", config_hash="h", psnr=value, ssim=1.0, lpips=0.0, nfe=0,
                                 device="cpu"))
    df = read_records([tmp_path])
    assert math.isinf(df.psnr.max())
    assert mean_ci(df.psnr)[0] == math.inf and math.isnan(mean_ci(df.psnr)[1])
    written = write_report([tmp_path], tmp_path / "out", paper_dir=None, figures=False)
    assert "| ∞ |" in written["table1_md"].read_text()


def test_paper_columns_only_for_the_papers_model(tmp_path):
    """A Gaussian-model run is not compared number by number with SD-1.4; the notes list the published values."""
    with RecordWriter(tmp_path / "records.jsonl") as writer:
        for i in range(3):
            writer.append(Record(item_id=f"x/{i}", method="ddim", method_label="ddim", dataset="samples",
                                 model="gaussian", precision="fp32", config_hash="h", psnr=30.0 + i, ssim=0.9,
                                 lpips=0.1, nfe=100, device="cpu"))
    table = table1(read_records([tmp_path]), load_paper(DEFAULT_PAPER_DIR))
    assert table["paper_psnr"].isna().all() and table["diff_psnr"].isna().all()
    text = write_report([tmp_path], tmp_path / "out", figures=False)["table1_md"].read_text()
    assert "Paper PSNR" not in text and "Δ PSNR" not in text
    assert "DDIM Inversion" in text and "29.717" in text  # the published numbers are still quoted in the notes
