"""Paired statistics against independent computations: the Hodges–Lehmann shift by brute force, scipy's Wilcoxon p
and its inversion at the interval's ends, the interval's duality with the p-value and its coverage, Holm's correction
by hand, images missing on one side left out and counted, PSNR capped at the 8-bit ceiling, the CSV's precision and
the small-number cells, the Pairs cell per metric, Table 2's precisions, the sweep, and the CLI's one-line errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from skimage.metrics import peak_signal_noise_ratio

from easyinv.report import main, markdown_table, table1, table2, write_report
from easyinv.report.paired import (
    PairedSettings,
    holm,
    image_sides,
    paired_difference,
    paired_stats,
    psnr_ceiling,
    signed_rank,
)
from easyinv.report.tables import write_table
from easyinv.run.records import Record, RecordWriter, read_records

FAST = PairedSettings(bootstrap=2000)


def _records(psnr: dict[str, np.ndarray], precision: str = "fp32", skip: dict[str, set[int]] | None = None,
             nonfinite: dict[str, set[int]] | None = None, **fixed: float) -> list[dict]:
    rows = []
    for method, values in psnr.items():
        for i, value in enumerate(values):
            if i in (skip or {}).get(method, set()):
                continue
            failed = i in (nonfinite or {}).get(method, set())
            finite = value if math.isfinite(value) else 200.0
            metrics = {"psnr": float(value), "ssim": 0.5 + finite / 1000, "lpips": 0.5 - finite / 1000,
                       "latent_mse": 1 / finite, **fixed}
            rows.append(Record(
                item_id=f"val2017/{i:04d}.jpg", method=method, method_label=method, dataset="coco", model="sd14",
                precision=precision, config_hash=f"{method}-{precision}", device="cpu",
                status="nonfinite" if failed else "ok", reason="NaN latent" if failed else None,
                **{k: None if failed else v for k, v in metrics.items()}, nfe=100,
                t_total=1.0, t_invert=0.4, t_reconstruct=0.4, unet_seconds=0.5, warmup=i == 0,
                lpips_comparable=True).to_dict())
    return rows


def _shifted(seed: int, shift: float, n: int = 100, noise: float = 0.1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.normal(30.0, 3.0, n)  # images differ a lot; the pairs differ by shift + small noise
    return {"ddim": base, "easyinv": base + shift + rng.normal(0.0, noise, n)}


def _hodges_lehmann(d: np.ndarray) -> float:
    """By brute force: the median of every (dᵢ + dⱼ)/2, i ≤ j."""
    return float(np.median([(d[i] + d[j]) / 2 for i in range(d.size) for j in range(i, d.size)]))


def test_a_half_db_shift_is_found_with_the_right_estimate_interval_p_and_win_rate():
    values = _shifted(seed=1, shift=0.5)
    table = table1(pd.DataFrame(_records(values)), paired=FAST).set_index("label")
    row = table.loc["easyinv"]
    diff = values["easyinv"] - values["ddim"]
    # independent: the Walsh averages by hand, scipy's Wilcoxon directly (n = 100: normal, no ties, no zeros)
    assert row["pair_psnr_delta"] == pytest.approx(_hodges_lehmann(diff), abs=1e-12)
    assert row["pair_psnr_p"] == pytest.approx(stats.wilcoxon(diff).pvalue, rel=1e-9)
    # the interval is the inversion of the test: scipy's p of d − θ crosses 0.05 at both ends
    for end, inside in ((row["pair_psnr_lo"], 1), (row["pair_psnr_hi"], -1)):
        p_in = stats.wilcoxon(diff - (end + inside * 1e-9), method="asymptotic").pvalue
        p_out = stats.wilcoxon(diff - (end - inside * 1e-9), method="asymptotic").pvalue
        assert p_in >= 0.05 > p_out
    assert row["pair_psnr_lo"] < 0.5 < row["pair_psnr_hi"]
    assert row["pair_psnr_p"] < 1e-6 and row["pair_psnr_significant"] == 1
    assert row["pair_psnr_win"] == pytest.approx(1.0, abs=0.01) and row["pair_psnr_n"] == 100
    assert row["pair_lpips_win"] == pytest.approx(1.0, abs=0.01)  # lower is better: a lower LPIPS wins
    assert row["pair_baseline"] == "ddim" and math.isnan(table.loc["ddim", "pair_psnr_delta"])
    assert row["psnr_mean"] == pytest.approx(values["easyinv"].mean())  # the unpaired columns are unchanged
    # the mean difference and its BCa interval (CSV) against scipy's BCa bootstrap with another generator
    assert row["pair_psnr_mean"] == pytest.approx(diff.mean(), abs=1e-12)
    bca = stats.bootstrap((diff,), np.mean, n_resamples=4000, method="BCa", rng=np.random.default_rng(7))
    assert row["pair_psnr_mean_lo"] == pytest.approx(bca.confidence_interval.low, abs=0.005)
    assert row["pair_psnr_mean_hi"] == pytest.approx(bca.confidence_interval.high, abs=0.005)


def test_exact_interval_inverts_scipys_exact_test_at_n_12():
    d = np.random.default_rng(3).normal(0.4, 1.0, 12)
    result = signed_rank(d)
    assert result["p"] == pytest.approx(stats.wilcoxon(d, method="exact").pvalue, rel=1e-12)
    for end, inside in ((result["lo"], 1), (result["hi"], -1)):
        p_in = stats.wilcoxon(d - (end + inside * 1e-9), method="exact").pvalue
        p_out = stats.wilcoxon(d - (end - inside * 1e-9), method="exact").pvalue
        assert p_in >= 0.05 > p_out


def test_estimate_interval_and_star_agree_when_a_few_images_are_far_off():
    """Issue 27.9: 190 images at +0.3 dB and 10 at −15 dB. The mean (−0.44) says the method loses while the signed-rank
    test says it wins on the typical image; the cell now gives the typical image's shift, its interval and its test."""
    rng = np.random.default_rng(27)
    base = rng.normal(30.0, 3.0, 200)
    diff = np.r_[0.3 + rng.normal(0.0, 0.2, 190), -15.0 + rng.normal(0.0, 0.5, 10)]
    table = table1(pd.DataFrame(_records({"ddim": base, "easyinv": base + diff})), paired=FAST)
    row = table.set_index("label").loc["easyinv"]
    assert 0 < row["pair_psnr_lo"] <= row["pair_psnr_delta"] <= row["pair_psnr_hi"] < 0.4
    assert row["pair_psnr_mean"] < 0  # the mean is still in the CSV: the far-off images pull it below 0
    assert row["pair_psnr_p"] < 1e-15 and row["pair_psnr_significant"] == 1
    assert 0.85 < row["pair_psnr_win"] < 0.95
    cell = next(line for line in markdown_table(table).splitlines() if line.startswith("| easyinv |"))
    psnr = cell.rstrip(" |").split(" | ")[-1]
    assert psnr.startswith("+0.2") or psnr.startswith("+0.3")
    assert "]*" in psnr and f"(wins {100 * row['pair_psnr_win']:.0f} %)" in psnr


@pytest.mark.parametrize("seed", range(4))
def test_interval_excludes_zero_exactly_when_p_is_below_one_minus_level(seed):
    """The duality holds by construction, ties and zero differences included, for any level and n (1 to 80)."""
    rng = np.random.default_rng(seed)
    for _ in range(150):
        n = int(rng.integers(1, 81))
        d = np.round(rng.normal(rng.normal(0.0, 0.4), 1.0, n), int(rng.integers(0, 3)))  # 0-2 decimals: ties
        d[: int(rng.integers(0, n + 1)) if rng.random() < 0.3 else 0] = 0.0  # zero differences
        level = float(rng.choice([0.8, 0.9, 0.95, 0.99]))
        result = paired_stats(d, lower_is_better=False, settings=PairedSettings(bootstrap=50, level=level))
        assert (result["lo"] <= 0 <= result["hi"]) == (result["p"] >= 1 - level), (d.tolist(), level, result)
        assert result["lo"] <= result["delta"] <= result["hi"]


def test_interval_covers_at_the_demos_size():
    """Issue 27.11: at n = 13 the interval holds the true shift in ≥ 95 % of samples (exact signed-rank inversion;
    a percentile bootstrap of the mean covers ~90 % here)."""
    rng = np.random.default_rng(11)
    covered, repetitions = 0, 1000
    for _ in range(repetitions):
        d = 0.7 + rng.standard_t(3, 13)  # symmetric about 0.7, heavy tails
        result = paired_stats(d, lower_is_better=False, settings=PairedSettings(bootstrap=1000))
        covered += result["lo"] <= 0.7 <= result["hi"]
    assert covered >= 0.94 * repetitions


def test_no_effect_interval_covers_zero_and_p_above_005_in_nine_of_ten_repetitions():
    covered = large_p = 0
    repetitions = 40
    for seed in range(repetitions):
        values = _shifted(seed=100 + seed, shift=0.0, noise=0.5)
        result = paired_stats(values["easyinv"] - values["ddim"], lower_is_better=False, settings=FAST)
        covered += result["lo"] <= 0.0 <= result["hi"]
        large_p += result["p"] > 0.05
    assert covered >= 0.9 * repetitions and large_p >= 0.9 * repetitions


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 → ×4, ×3, ×2, ×1 = 0.02, 0.03, 0.06, 0.04 → running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = holm([math.nan, 0.01, 0.04])  # NaN does not count: m = 2
    assert math.isnan(adjusted[0]) and adjusted[1:] == pytest.approx([0.02, 0.04])
    assert holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_images_missing_on_either_side_are_left_out_and_counted():
    values = _shifted(seed=2, shift=0.5)
    df = pd.DataFrame(_records(values, skip={"easyinv": {3, 4}, "ddim": {7}}, nonfinite={"easyinv": {9}}))
    table = table1(df, paired=FAST)
    row = table.set_index("label").loc["easyinv"]
    kept = [i for i in range(100) if i not in (3, 4, 7, 9)]
    diff = values["easyinv"][kept] - values["ddim"][kept]
    assert row["pair_psnr_n"] == 96 and row["pair_psnr_left_out"] == 4
    assert row["pair_psnr_delta"] == pytest.approx(_hodges_lehmann(diff), abs=1e-12)
    assert "| 96 (4 left out) |" in markdown_table(table)
    a = pd.Series([1.0, 2.0, math.nan], index=["x", "y", "z"])
    b = pd.Series([0.5, 4.0], index=["y", "w"])
    diff, left_out = paired_difference(a, b)
    assert diff.tolist() == [1.5] and left_out == 2  # y paired; x (only a), w (only b) left out; z has no value


def test_pairs_cell_gives_one_metrics_counts_or_each_metrics():
    """Issue 27.13: one image without an LPIPS is one metric's loss, not `12 (1 left out)` beside 13 PSNR pairs."""
    values = _shifted(seed=6, shift=0.5, n=13)
    rows = _records(values)
    for r in rows:
        if r["method"] == "easyinv" and r["item_id"].endswith("0004.jpg"):
            r["lpips"] = None
    table = table1(pd.DataFrame(rows), paired=FAST)
    row = table.set_index("label").loc["easyinv"]
    assert (row["pair_lpips_n"], row["pair_lpips_left_out"], row["pair_psnr_n"]) == (12, 1, 13)
    assert "| LPIPS 12 (1 left out); SSIM, PSNR 13 |" in markdown_table(table)


def test_psnr_is_capped_at_the_8_bit_ceiling_of_its_image():
    """Issue 27.10: an exact reconstruction (PSNR ∞) counts as one grey level off at one pixel channel, so the Δ,
    its interval and its test are finite and share one set of differences."""
    for side in (64, 512):  # independently: skimage's PSNR of an 8-bit image one grey level off at one channel
        image = np.random.default_rng(side).integers(1, 255, (side, side, 3))
        off = image.copy()
        off[side // 2, side // 3, 1] += 1
        expected = peak_signal_noise_ratio(image / 255, off / 255, data_range=1.0)
        assert psnr_ceiling(side) == pytest.approx(expected, rel=1e-9)
    assert round(psnr_ceiling(512), 2) == 107.09 and round(psnr_ceiling(64), 2) == 89.03
    base = np.linspace(28.0, 34.0, 12)
    method = np.r_[[math.inf] * 4, base[4:] - 5.0]  # exact on 4 images, 5 dB worse on the other 8
    table = table1(pd.DataFrame(_records({"ddim": base, "fixed_point": method})), paired=FAST)
    row = table.set_index("label").loc["fixed_point"]
    ceiling = psnr_ceiling(1024)  # the records say no image size: the largest configured model's
    diff = np.r_[ceiling - base[:4], [-5.0] * 8]
    for stat in ("delta", "lo", "hi", "p", "mean"):
        assert math.isfinite(row[f"pair_psnr_{stat}"])
    assert row["pair_psnr_delta"] == pytest.approx(_hodges_lehmann(diff))
    assert row["pair_psnr_mean"] == pytest.approx(diff.mean())
    assert row["pair_psnr_win"] == pytest.approx(4 / 12)
    cell = next(line for line in markdown_table(table).splitlines() if line.startswith("| fixed_point |"))
    assert "∞" not in cell.split(" | ")[-1] and "(wins 33 %)" in cell
    # +∞ and −∞ on either side (n = 13): a number, not —
    both = {"ddim": np.r_[[math.inf] * 3, np.linspace(30, 32, 10)],
            "easyinv": np.r_[np.linspace(30, 32, 3), [math.inf] * 10]}
    row = table1(pd.DataFrame(_records(both)), paired=FAST).set_index("label").loc["easyinv"]
    assert row["pair_psnr_n"] == 13 and math.isfinite(row["pair_psnr_delta"]) and row["pair_psnr_delta"] > 0


def test_image_size_comes_from_the_runs_manifest(tmp_path):
    for method, values in (("ddim", [30.0, 31.0, 32.0]), ("vae_only", [math.inf] * 3)):
        with RecordWriter(tmp_path / method / "records.jsonl") as writer:
            for i, value in enumerate(values):
                writer.append(Record(item_id=f"x/{i}", method=method, method_label=method, dataset="d",
                                     model="gaussian", precision="fp32", config_hash=method, psnr=value, ssim=1.0,
                                     lpips=0.0, nfe=0, device="cpu"))
        (tmp_path / method / "run.json").write_text(json.dumps({"model": {"name": "gaussian", "resolution": 64}}))
    df = read_records([tmp_path])
    assert (image_sides(df) == 64).all()
    assert (image_sides(df.drop(columns="run_dir")) == 1024).all()  # nothing recorded: the documented default
    row = table1(df, paired=FAST).set_index("label").loc["vae_only"]
    assert row["pair_psnr_delta"] == pytest.approx(psnr_ceiling(64) - 31.0)
    text = write_report([tmp_path], tmp_path / "out", paper_dir=None, figures=False)["table1_md"].read_text()
    assert "89.03 dB at 64×64" in text


def test_csv_has_full_precision_and_small_differences_print_in_significant_digits(tmp_path):
    """Issue 27.12: p = 1e-80 and a Δ of 1e-7 survive the CSV; a small Δ prints its digits, not -0.000."""
    rng = np.random.default_rng(12)
    base = rng.normal(30.0, 3.0, 400)
    rows = _records({"ddim": base, "easyinv": base + 0.5 + rng.normal(0, 0.01, 400)})
    for r in rows:  # LPIPS and latent MSE: a tiny, consistent improvement
        tiny, image = (1e-5 if r["method"] == "easyinv" else 0.0), int(r["item_id"][8:12])
        r["lpips"] = 0.2 - tiny + 1e-7 * (image % 7)
        r["latent_mse"] = 0.01 - tiny / 100 + 1e-9 * (image % 5)
    table = table1(pd.DataFrame(rows), paired=FAST)
    paths = write_table(table, tmp_path, "table1")
    csv = pd.read_csv(paths["csv"]).set_index("label")
    row = table.set_index("label").loc["easyinv"]
    assert 0 < row["pair_psnr_p"] < 1e-60 and csv.loc["easyinv", "pair_psnr_p"] == row["pair_psnr_p"]
    assert csv.loc["easyinv", "pair_latent_mse_delta"] == row["pair_latent_mse_delta"] == pytest.approx(-1e-7)
    assert csv.loc["easyinv", "psnr_mean"] == row["psnr_mean"]  # every number, not 6 decimals
    cell = next(line for line in paths["md"].read_text().splitlines() if line.startswith("| easyinv |"))
    lpips = cell.split(" | ")[-3]
    assert lpips.startswith("-1e-05 [-1") and "e-05]*" in lpips and "0.000" not in lpips
    assert r"(wins 100 \%)" in paths["tex"].read_text()


def test_baseline_none_adds_no_columns_and_table2_pairs_precisions():
    values = _shifted(seed=3, shift=0.0)
    df = pd.DataFrame(_records(values) + _records({k: v - 0.2 for k, v in values.items()}, precision="fp16"))
    assert not any(c.startswith("pair_") for c in table1(df, paired=PairedSettings(baseline=None)).columns)
    assert not any(c.startswith("pair_") for c in table1(df).columns)  # nothing asked: the old table
    t2 = table2(df, paired=FAST).set_index(["label", "precision"])
    assert t2.loc[("easyinv", "fp16"), "pair_psnr_delta"] == pytest.approx(-0.2)
    assert t2.loc[("easyinv", "fp16"), "pair_baseline"] == "fp32"
    assert math.isnan(t2.loc[("easyinv", "fp32"), "pair_psnr_delta"])
    assert "Δ PSNR vs fp32" in markdown_table(t2.reset_index(), "table2")


def test_a_missing_identity_value_does_not_compare_the_baseline_with_itself():
    values = _shifted(seed=4, shift=0.5)
    df = pd.DataFrame(_records(values)).assign(device=None)  # an old record without a device
    table = table1(df, paired=FAST).set_index("label")
    assert math.isnan(table.loc["ddim", "pair_psnr_delta"]) and pd.isna(table.loc["ddim", "pair_baseline"])
    diff = values["easyinv"] - values["ddim"]
    assert table.loc["easyinv", "pair_psnr_delta"] == pytest.approx(_hodges_lehmann(diff))


def test_sweep_rows_are_paired_with_the_baseline_configuration():
    from easyinv.report.sweep_tables import sweep_markdown, sweep_table

    rng = np.random.default_rng(5)
    base = rng.normal(30.0, 3.0, 50)
    rows = _records({"ddim": base})
    for eta, shift in ((0.3, 0.5), (0.5, 1.0)):
        swept = _records({"easyinv": base + shift})
        rows += [{**r, "config_hash": f"easyinv-{eta}", "method.eta": eta} for r in swept]
    table = sweep_table(pd.DataFrame(rows), ["method.eta"], paired=FAST)
    by_eta = table[table["method"] == "easyinv"].set_index("method.eta")
    assert by_eta.loc[0.3, "pair_psnr_delta"] == pytest.approx(0.5)
    assert by_eta.loc[0.5, "pair_psnr_delta"] == pytest.approx(1.0)
    assert (by_eta["pair_baseline"] == "ddim").all() and (by_eta["pair_psnr_n"] == 50).all()
    assert "Δ PSNR vs ddim" in sweep_markdown(table)


@pytest.mark.parametrize(("args", "says"), [
    (["--baseline", "ddiim"], "report.baseline 'ddiim' names nothing in the records (there: ddim, easyinv)"),
    (["--bootstrap", "0"], "report.bootstrap (--bootstrap) must be a whole number of resamples ≥ 1, got 0"),
    (["--bootstrap", "-5"], "report.bootstrap (--bootstrap) must be a whole number of resamples ≥ 1, got -5"),
    (["--alpha", "2"], "report.alpha (--alpha) must be a number strictly between 0 and 1, got 2.0"),
])
def test_cli_refuses_bad_paired_options_in_one_line(tmp_path, args, says):
    with RecordWriter(tmp_path / "run" / "records.jsonl") as writer:
        for r in _records(_shifted(seed=8, shift=0.5, n=5)):
            writer.append(Record(**{k: v for k, v in r.items() if k in Record.__dataclass_fields__}))
    with pytest.raises(SystemExit) as raised:
        main([str(tmp_path / "run"), "--out", str(tmp_path / "out"), "--no-figures", "--paper", "none", *args])
    message = str(raised.value)
    assert message.startswith(f"easyinv-report: {says}") and "\n" not in message


@pytest.mark.parametrize(("report", "says"), [
    ({"bootstrap": 0}, "report.bootstrap (--bootstrap) must be a whole number of resamples ≥ 1, got 0"),
    ({"alpha": 2}, "report.alpha (--alpha) must be a number strictly between 0 and 1, got 2"),
])
def test_end_of_run_report_refuses_bad_paired_keys_in_one_line(tmp_path, report, says):
    from omegaconf import OmegaConf

    from easyinv.callbacks import ReportCallback

    config = OmegaConf.create({"report_dir": str(tmp_path / "out"), "report": report})
    with pytest.raises(SystemExit) as raised:
        ReportCallback()._report(tmp_path, config)
    assert str(raised.value) == f"easyinv-bench: {says}"
